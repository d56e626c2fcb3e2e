"""Each schedule at its key points: warmup, phase boundaries, end values, and clear config errors."""

from __future__ import annotations

import math

import pytest

from continua.recipe import RecipeError, recipe_from_dict
from train.config import ScheduleConfig
from train.schedules import boundary_table, build_schedule, phases, plot_schedule

PEAK = 1e-3
approx = pytest.approx


def test_cosine_warmup_and_ibrahim_formula():
    lr = build_schedule(ScheduleConfig(name="cosine", warmup=0.1, min_lr_ratio=0.1), PEAK, 100)
    # warmup of 10 steps: steps 0..9 at PEAK*(s+1)/11, the peak reached at step 10 (as in HF, minus its LR-0 step)
    assert lr(0) == approx(PEAK / 11) and lr(4) == approx(PEAK * 5 / 11) and lr(9) == approx(PEAK * 10 / 11)
    assert lr(10) == approx(PEAK)
    eta_min = 0.1 * PEAK
    for t in (10, 30, 55, 99):  # eta_min + (eta_max - eta_min)/2 * (1 + cos(pi (t - t_warm) / (t_end - t_warm)))
        assert lr(t) == approx(eta_min + (PEAK - eta_min) / 2 * (1 + math.cos(math.pi * (t - 10) / 90)))
    assert lr(55) == approx((PEAK + eta_min) / 2) and lr(100) == approx(eta_min)
    steps = build_schedule(ScheduleConfig(name="cosine", warmup=5), PEAK, 100)  # >= 1: a number of steps
    assert steps(5) == approx(PEAK) and steps(4) == approx(PEAK * 5 / 6) and steps(3) == approx(PEAK * 4 / 6)
    no_warm = build_schedule(ScheduleConfig(name="cosine", warmup=0), PEAK, 100)
    assert no_warm(0) == approx(PEAK)


def test_fractional_warmups_stay_distinct_on_short_runs():
    """Gupta et al.'s 0.5/1/2% sweep on a 130-step run: 0.65, 1.3 and 2.6 steps, three different curves."""
    curves = {w: build_schedule(ScheduleConfig(name="cosine", warmup=w), PEAK, 130) for w in (0.0, 0.005, 0.01, 0.02)}
    assert curves[0.0](0) == approx(PEAK)
    assert curves[0.005](0) == approx(PEAK / 1.65) and curves[0.005](1) == approx(PEAK, rel=1e-3)
    assert curves[0.01](0) == approx(PEAK / 2.3) and curves[0.01](1) == approx(PEAK * 2 / 2.3)
    assert curves[0.02](0) == approx(PEAK / 3.6) and curves[0.02](2) == approx(PEAK * 3 / 3.6)
    assert curves[0.0](0) > curves[0.005](0) > curves[0.01](0) > curves[0.02](0)
    # after a fractional warmup the cosine starts at the real warmup end: lr(W) would be the peak
    assert curves[0.02](3) == approx(0.1 * PEAK + 0.9 * PEAK * 0.5 * (1 + math.cos(math.pi * 0.4 / 127.4)))
    cfg = ScheduleConfig(name="cosine", warmup=0.02)
    assert phases(cfg, 130) == [("warmup", 0), ("cosine decay", 3), ("end", 130)]
    assert phases(ScheduleConfig(name="cosine", warmup=0.0), 130) == [("cosine decay", 0), ("end", 130)]


def test_constant():
    lr = build_schedule(ScheduleConfig(name="constant", warmup=4), PEAK, 50)
    assert [lr(s) for s in range(5)] == approx([PEAK * k / 5 for k in (1, 2, 3, 4, 5)])
    assert lr(10) == lr(49) == lr(500) == PEAK
    assert build_schedule(ScheduleConfig(name="constant", warmup=0), PEAK, 50)(0) == PEAK


@pytest.mark.parametrize("shape, mid", [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))])
def test_wsd(shape, mid):
    cfg = ScheduleConfig(name="wsd", warmup=10, decay_fraction=0.2, decay_shape=shape, min_lr_ratio=0.0)
    lr = build_schedule(cfg, PEAK, 100)
    assert lr(9) < PEAK and lr(10) == lr(50) == lr(79) == approx(PEAK)  # stable until the last 20 steps
    assert lr(80) == approx(PEAK) and lr(90) == approx(mid * PEAK) and lr(100) == approx(0.0)
    assert lr(81) < PEAK
    assert [p for p in phases(cfg, 100)] == [("warmup", 0), ("stable", 10), (f"{shape} decay", 80), ("end", 100)]


def test_infinite_cosine_cooldown_constant_and_anneal():
    cfg = ScheduleConfig(name="infinite", warmup=10, cooldown_fraction=0.4, eta_const_ratio=0.5,
                         anneal_fraction=0.2, min_lr_ratio=0.05)
    lr = build_schedule(cfg, PEAK, 100)
    const, eta_min = 0.5 * PEAK, 0.05 * PEAK
    assert lr(9) == approx(PEAK * 10 / 11) and lr(10) == approx(PEAK)
    assert lr(30) == approx((PEAK + const) / 2)  # half way through the cosine cooldown (steps 10..50)
    assert lr(50) == lr(65) == lr(79) == approx(const)
    for m in (0, 5, 10, 20):  # eta_const * (eta_min / eta_const) ** (m / M), only over the last 20 steps
        assert lr(80 + m) == approx(const * (eta_min / const) ** (m / 20))
    assert lr(100) == approx(eta_min)
    assert phases(cfg, 100) == [("warmup", 0), ("cosine cooldown", 10), ("constant", 50),
                                ("exponential anneal", 80), ("end", 100)]


def test_infinite_inv_sqrt_and_no_anneal():
    a = 10.0
    cfg = ScheduleConfig(name="infinite", warmup=0, cooldown_fraction=0.5, eta_const_ratio=0.4,
                         cooldown_shape="inv-sqrt", cooldown_alpha=a, anneal_fraction=0.0)
    lr = build_schedule(cfg, PEAK, 100)
    const = 0.4 * PEAK
    f = lambda x: 1 / math.sqrt(1 + a * x) - 1  # noqa: E731
    assert lr(0) == approx(PEAK)
    for n in (10, 25, 40):  # eta = eta_max + (eta_const - eta_max) * f(n / T_cd) / f(1)
        assert lr(n) == approx(PEAK + (const - PEAK) * f(n / 50) / f(1))
    assert lr(50) == lr(99) == lr(10_000) == approx(const)  # constant for as long as data comes
    assert lr(5) < PEAK and lr(25) > const


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_parmar(shape):
    cfg = ScheduleConfig(name="parmar", decay_shape=shape, start_lr=2e-4, warmup=0.1)  # warmup is not used
    lr = build_schedule(cfg, PEAK, 100)
    assert lr(0) == approx(2e-4) and lr(100) == approx(2e-6) and lr(50) == approx((2e-4 + 2e-6) / 2)
    assert lr(1) < lr(0)
    assert build_schedule(ScheduleConfig(name="parmar"), PEAK, 10)(0) == approx(PEAK)  # start_lr 0: optim lr
    assert phases(cfg, 100)[0] == (f"{shape} decay to 1/100", 0)


def test_phase_overflow_and_bad_knobs():
    with pytest.raises(ValueError, match="more than the 10 total steps"):
        build_schedule(ScheduleConfig(name="cosine", warmup=20), PEAK, 10)
    with pytest.raises(ValueError, match="total_steps >= 1"):
        build_schedule(ScheduleConfig(), PEAK, 0)
    for bad, msg in [({"decay_fraction": 0.0}, "decay_fraction"),
                     ({"name": "infinite", "cooldown_fraction": 0.8, "anneal_fraction": 0.3}, "cooldown_fraction +"),
                     ({"name": "infinite", "anneal_fraction": 0.1, "min_lr_ratio": 0.0}, "min_lr_ratio > 0"),
                     ({"name": "infinite", "anneal_fraction": 0.1, "min_lr_ratio": 0.9}, "<= eta_const_ratio"),
                     ({"eta_const_ratio": 1.5}, "eta_const_ratio"), ({"start_lr": -1.0}, "start_lr")]:
        with pytest.raises(ValueError, match=msg):
            ScheduleConfig(**bad).validate()
    with pytest.raises(RecipeError, match=r"\[schedule\] decay_fraction"):
        recipe_from_dict({"schedule": {"name": "wsd", "decay_fraction": 2.0}}, where="r.toml")
    with pytest.raises(RecipeError, match="schedule.name"):
        recipe_from_dict({"schedule": {"name": "step"}}, where="r.toml")


def test_boundary_table_and_plot(tmp_path):
    cfg = ScheduleConfig(name="wsd", warmup=10, decay_fraction=0.1, min_lr_ratio=0.1)
    rows = boundary_table(cfg, PEAK, 100)
    assert [r[:2] for r in rows] == [("warmup", 0), ("stable", 10), ("linear decay", 90), ("last step", 99),
                                     ("end", 100)]
    assert rows[1][2] == approx(PEAK) and rows[-1][2] == approx(0.1 * PEAK)
    png = plot_schedule(cfg, PEAK, 100, tmp_path / "lr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_command(tmp_path, capsys):
    import argparse

    from train.commands import add_eval_commands

    recipe = tmp_path / "r.toml"
    recipe.write_text('[optim]\nlr = 0.001\n[schedule]\nname = "cosine"\nwarmup = 10\n[train]\nsteps = 100\n')
    parser = argparse.ArgumentParser(prog="train")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["schedule", str(recipe), "--set", "schedule.name=wsd", "--out", str(tmp_path / "x.png")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "stable" in out and "linear decay" in out and (tmp_path / "x.png").stat().st_size > 1000
    args = parser.parse_args(["schedule", str(recipe), "--set", "train.steps=0", "--out", str(tmp_path / "y.png")])
    with pytest.raises(ValueError, match="manifest.json does not exist yet"):
        args.func(args)
    args = parser.parse_args(["schedule", str(recipe), "--steps", "40", "--out", str(tmp_path / "y.png")])
    assert args.func(args) == 0 and "step        40" in capsys.readouterr().out

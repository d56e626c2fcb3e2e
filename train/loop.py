"""The training loop: setup, then for each step: batch, forward/backward, clip, step, schedule, log,
maybe evaluate, maybe checkpoint. The mechanics live in train.{model,parallel,data,checkpoint,metrics}.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from continua.io import write_text
from continua.layout import shards_dir, train_dir
from continua.recipe import Recipe
from mix.manifest import Manifest
from train import checkpoint as ckpt
from continua.stages import is_staged, stage_blends
from train.data import DeviceBatches, Sampler, open_blends, open_shards, planned_steps
from train.evaluate import eval_steps, evaluate_losses, validation_sets
from train.metrics import MetricsLog, Progress, TensorBoard, WeightChange, peak_flops
from train.model import build_model, export_dtype, export_pretrained, flops_per_token
from train.parallel import (Dist, check_shared_folder, decoder_layers, init_distributed, prepare_model, shutdown,
                            training_started)
from train.stagerun import (BRANCHES, STAGES_FILE, branch_dir, branch_done, check_timeline, ckpt_home, continues, ends_branch,
                            keeps_trunk_end, reload_trunk, resume_point, rows_kept, where, write_branch_done)
from train.timeline import Segment, blend_shards, build_timeline
from train.stepstats import NonFiniteLoss, StepWindow, skip_non_finite  # noqa: F401 - NonFiniteLoss: train.cli
from train.weights import load_weights


def run(recipe: Recipe, resume: bool = True, stop_at: int | None = None) -> dict:
    """Train as the recipe says (in this process, as one rank of torchrun or alone); returns a summary."""
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    d = init_distributed(recipe.train.device, recipe.parallel)
    try:
        return train(recipe, d, resume=resume, stop_at=stop_at)
    finally:
        shutdown()


def train(recipe: Recipe, d: Dist, resume: bool = True, stop_at: int | None = None) -> dict:
    tc, pc, run_dir = recipe.train, recipe.parallel, train_dir(recipe)
    check_shared_folder(run_dir, d)  # before anything is written there
    blends = {b.label: blend_shards(b) for stage in stage_blends(recipe) for b in stage}
    resuming = resume and ckpt.latest_checkpoint(run_dir) is not None
    if is_staged(recipe):
        manifests = open_blends(blends, run_dir, resuming, d.is_main)
    else:
        manifests = {"main": open_shards(blends["main"], run_dir, resuming, d.is_main)}
    by_path = {blends[label]: m for label, m in manifests.items()}
    manifest, shards = manifests[next(iter(manifests))], blends[next(iter(blends))]  # tokenizer, benchmarks
    timeline = build_timeline(recipe, lambda path: planned_steps(by_path[path], tc.batch_size, tc.seq_len))
    if not timeline.staged:
        recipe.train.steps = timeline.trunk_steps  # the resolved recipe records what ran
    micro = tc.micro_batch_size or tc.batch_size // d.world
    if (tc.batch_size // d.world) % micro:
        raise ValueError(f"[train] batch_size / processes = {tc.batch_size // d.world} is not a multiple of "
                         f"micro_batch_size {micro}")
    bf16 = tc.dtype == "bfloat16" or (tc.dtype == "auto" and d.device.type == "cuda")
    say = _sayer(d)

    # model, optimizer, data
    say(f"loading the base model {recipe.model.path}" if recipe.model.path is not None else
        f"building a fresh Llama ({recipe.model.num_layers} layers, hidden size {recipe.model.hidden_size})")
    with d.timeout(pc.work_timeout_s):  # rank 0 may de-quantize a GGUF while the others wait
        model, base_weights = build_model(recipe.model, manifest.tokenizer, recipe.run.seed, run_dir, say)
    flops_tok = flops_per_token(model, tc.seq_len)
    # `net` computes (the model and its chunked loss, FSDP's root); `model` is what is loaded, saved and exported
    net = prepare_model(model, d, bf16, activation_checkpointing=tc.activation_checkpointing, compile=tc.compile,
                        parallel=pc)
    if base_weights is not None:  # meta-built and sharded: each rank reads only its slices
        say(f"reading the weights into {d.world} process{'es' if d.world > 1 else ''} on {d.device.type}")
        with d.timeout(pc.work_timeout_s):  # rank 0 reads or broadcasts whole tensors
            load_weights(model, *base_weights, allow_pickle=recipe.model.allow_pickle)
        base_weights = None  # a fresh model's full initial weights on rank 0: freed
    weights = WeightChange(decoder_layers(model))
    o = recipe.optim
    optimizer = torch.optim.AdamW(_decay_groups(model, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                  **_fast_adamw(d.device))

    def sampler_for(seg: Segment) -> Sampler:  # each stage's blend draws its own seeded order
        seed = recipe.run.seed + (1_000_003 * (1 + 64 * seg.stage + seg.blend) if timeline.staged else 0)
        return Sampler(seg.shards, by_path[seg.shards], tc.seq_len, tc.batch_size, seed, d.rank, d.world)

    # resume (a branch in progress first, else the trunk), or start fresh (optionally with an earlier run's moments)
    if not resume and d.is_main:
        ckpt.remove_checkpoints(run_dir)  # a fresh start must never resume from the old run's later steps
        shutil.rmtree(run_dir / "export", ignore_errors=True)
    check_timeline(run_dir, timeline, resuming, d.is_main)
    resumed = resume_point(run_dir, timeline, model, optimizer, d, say) if resume else None
    at_segment, start, elapsed0, sampler_state = 0, 0, 0.0, None
    if resumed is not None:
        latest, state = resumed
        at_segment, start = int(state.get("segment", 0)), int(state["step"])
        elapsed0, sampler_state = float(state.get("elapsed_s", 0.0)), state["sampler"]
        say(f"resumed from {latest} ({where(timeline, at_segment, start)})")
    elif tc.optimizer_from is not None:
        ckpt.load_optimizer_only(tc.optimizer_from, model, optimizer, d)
        say(f"optimizer state restored from {tc.optimizer_from}")
    if resumed is None and d.is_main:  # a fresh start: branches of an earlier run are not this run's
        shutil.rmtree(run_dir / BRANCHES, ignore_errors=True)
    d.barrier()
    todo = [g for g in timeline.segments if g.index >= at_segment and not (g.branch and branch_done(run_dir, g.stage_name))
            and not (g.index == at_segment and start >= g.last and not ends_branch(timeline, g, g.last))]
    # (a branch stopped at its last step but not exported stays: its export is what is left to do)
    if not todo:
        say(f"{run_dir}: already trained {timeline.trunk_steps} steps (--no-resume starts over)")
        missing = torch.tensor([float(not (run_dir / "export").is_dir())], device=d.device)
        with d.timeout(pc.work_timeout_s):
            finish(model, run_dir, manifest, shards, d, say, export=d.all_reduce_sum(missing).item() > 0,  # all agree
                   dtype=export_dtype(recipe.model, model))
        done = sampler_for(timeline.segments[at_segment])
        if sampler_state is not None:
            done.load_state_dict(sampler_state)
        return {"status": "finished", "step": start, "steps": timeline.trunk_steps, "run_dir": str(run_dir),
                "tokens_by_source": done.tokens_by_source(), "consumed": done.state_dict()["consumed"]}

    # evaluation sets (every blend's, so each earlier domain stays measured), logs
    windows: dict = {}
    for path, m in by_path.items():
        for name, w in validation_sets(path, m, tc.seq_len, recipe.eval.max_batches * recipe.eval.batch_size).items():
            windows.setdefault(name, w)
    evals = timeline.trunk_evals(lambda n: eval_steps(recipe.eval, n))
    mcq = _benchmarks(recipe, manifest)
    if d.is_main:
        write_text(run_dir / "recipe.toml", recipe.to_toml())
        write_text(run_dir / "config.json", model.config.to_json_string())  # checkpoints/step_N as a [model] path
    log = MetricsLog(run_dir / "metrics.jsonl", d.is_main,
                     keep=rows_kept(timeline, {g.index for g in todo}, at_segment, start) if resumed is not None else None)
    board = TensorBoard(run_dir / "tensorboard", tc.tensorboard and d.is_main, say)
    peaks = peak_flops(d.device, tc.peak_flops, say)  # {} on CPU unless configured: no MFU
    tokens_per_step = tc.batch_size * tc.seq_len

    def tag(row: dict, seg: Segment) -> dict:  # staged runs: each row names its stage; a branch's its own kind
        if timeline.staged:
            row["stage"] = seg.stage_name
            if seg.branch:
                row.update(kind=f"branch_{row['kind']}", branch=seg.stage_name)
        return row

    def evaluate(step: int, seg: Segment) -> dict:
        progress.eval_start(step, _eval_contents(windows, mcq))
        predictions: dict[str, list[dict]] = {}
        with eager(tc.compile):
            metrics = {f"loss/{k}": v for k, v in evaluate_losses(
                net, windows, recipe.eval.batch_size, d.device, d=d,
                on_batch=lambda name, i, n: progress.eval_status(f"loss/{name} {i}/{n} batches")).items()}
            metrics.update(_score_benchmarks(net, mcq, recipe.eval.batch_size, d, progress.eval_status, predictions))
        if d.is_main:
            _write_predictions(run_dir / "predictions" / (f"branch-{seg.stage_name}" if seg.branch else ""), step,
                               predictions)
        metrics.update(weights.compute())
        row = tag({"kind": "eval", "step": step, "tokens": step * tokens_per_step, "metrics": metrics,
                   "eval_s": round(progress.eval_end(), 3)}, seg)
        log.write(row)
        board.write(row)
        return metrics

    def flush(seg: Segment) -> None:  # the window's rows: one all-reduce, one host read
        for row in window.flush(str(ckpt.latest_checkpoint(ckpt_home(run_dir, seg)) or "none")):
            tag(row, seg)
            log.write(row)
            board.write(row)
            progress.update(row)

    stop = _StopFlag()
    progress = Progress(sum(g.last - max(g.first - 1, start if g.index == at_segment else 0) for g in todo), 0,
                        d.is_main, n_evals=sum(e > start or e == start == 0 for e in evals) + sum(g.branch for g in todo))
    if start == 0 and at_segment == 0 and 0 in evals:
        evaluate(0, timeline.segments[0])
    window = StepWindow(d, tokens_per_step, flops_tok, peaks, elapsed0)
    status, step, batches, previous, started, last_eval = "finished", start, None, None, False, None
    try:
        for seg in todo:
            # the segment's data: where the checkpoint left it, the blend of the segment before (same stage and
            # blend: a branch goes on from its trunk's data), or a fresh draw; the trunk's weights after a branch
            if previous is not None and previous.branch and not seg.branch:
                reload_trunk(run_dir, model, optimizer, d, say)
            if batches is not None and (previous.stage, previous.blend) == (seg.stage, seg.blend):
                sampler = batches.sampler
            else:
                sampler = sampler_for(seg)
                if sampler_state is not None and (seg.index == at_segment or continues(timeline, at_segment, seg)):
                    sampler.load_state_dict(sampler_state)
            batches, previous = DeviceBatches(sampler, d.device), seg
            if timeline.staged and not (seg.index == at_segment and sampler_state is not None):
                say(f"{where(timeline, seg.index, seg.first)}: {seg.why}")
                log.write(tag({"kind": "segment", "step": seg.first, "blend": seg.blend, "why": seg.why,
                               "lr": seg.lr_at(seg.first), "shards": str(seg.shards)}, seg))
            home = ckpt_home(run_dir, seg)
            for step in range(max(seg.first, start + 1 if seg.index == at_segment else 0), seg.last + 1):
                lr = seg.lr_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = forward_backward(net, batches.take(), micro, recipe.parallel.sync_grads_every_microbatch)
                if step < seg.last:
                    batches.prefetch()  # the next batch is read and copied while this step computes
                grad_norm = _full(torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip))
                on_device = skip_non_finite(optimizer, grad_norm)
                window.add(step, lr, loss, grad_norm)
                if not on_device:  # this optimizer cannot skip an update by itself: check before it steps
                    flush(seg)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if not started:
                    training_started(d, pc)
                    started = True
                interrupted = d.any(stop.requested)  # a host-side vote: every rank stops at the same step
                halt = interrupted or step == stop_at
                periodic = bool(tc.checkpoint_every) and step % tc.checkpoint_every == 0
                save = halt or periodic or (step == seg.last and keeps_trunk_end(timeline, seg, tc.save_final))
                in_evals = (step in evals and not seg.branch) or ends_branch(timeline, seg, step)
                if save or in_evals or step == seg.last or len(window) >= tc.log_every:
                    flush(seg)  # before an evaluation or a checkpoint: a non-finite step stops the run here
                if in_evals:
                    last_eval = evaluate(step, seg)
                if save:
                    trainer_state = {"sampler": batches.state_dict(), "elapsed_s": window.elapsed_s(),
                                     "segment": seg.index}
                    ckpt.save_checkpoint(home, step, model, optimizer, trainer_state, tc.keep_checkpoints, d)
                if in_evals or save:
                    window.restart_clock()
                if step == seg.last and timeline.staged:  # what it read: tokens per source, the hash of its order
                    log.write(tag({"kind": "segment_end", "step": step, "blend": seg.blend,
                                   "tokens_by_source": batches.tokens_by_source(),
                                   "consumed": batches.state_dict()["consumed"]}, seg))
                if halt and not (seg is timeline.segments[-1] and step == seg.last):
                    status = "interrupted" if interrupted else "stopped"
                    say(f"{status} at step {step} ({seg.kind} of stage {seg.stage_name}); checkpoint saved, "
                        "`train run` resumes from it" if timeline.staged else
                        f"{status} at step {step}; checkpoint saved, `train run` resumes from it")
                    break
            if step == seg.last and ends_branch(timeline, seg, step):  # stopped there too: export it before leaving
                with d.timeout(pc.work_timeout_s):  # rank 0 writes the branch's export while the others wait
                    export_pretrained(model, branch_dir(run_dir, seg.stage_name) / "export",
                                      _tokenizer_path(manifest, shards), manifest.tokenizer, d.is_main,
                                      export_dtype(recipe.model, model))
                if d.is_main:
                    write_branch_done(run_dir, seg, last_eval)
                    ckpt.remove_checkpoints(branch_dir(run_dir, seg.stage_name))  # done: its export is what stays
                    say(f"branch of stage {seg.stage_name}: {branch_dir(run_dir, seg.stage_name) / 'export'}")
            if status != "finished":
                break
    finally:
        progress.close()
        log.close()
        board.close()
        stop.restore()

    summary = {"status": status, "step": step, "steps": timeline.trunk_steps, "run_dir": str(run_dir),
               "tokens_by_source": batches.tokens_by_source() if batches is not None else {},
               "consumed": batches.state_dict().get("consumed") if batches is not None else None}
    if status == "finished" and previous is not None and previous.branch and tc.save_final:
        reload_trunk(run_dir, model, optimizer, d, say)  # export/ is the trunk: what a next stage goes on from
    if status == "finished" and tc.save_final:
        with d.timeout(pc.work_timeout_s):  # rank 0 writes the export while the others wait
            finish(model, run_dir, manifest, shards, d, say, export=True, dtype=export_dtype(recipe.model, model))
    elif status == "finished":
        say(f"{run_dir}: [train] save_final = false: no final checkpoint, export/ or gap.json written")
    return summary


def finish(model: torch.nn.Module, run_dir: Path, manifest: Manifest, shards: Path, d: Dist, say, export: bool,
           dtype: torch.dtype = torch.float32) -> None:
    """The outputs of a finished run: export/ (when asked, or missing) and gap.json; checked before returning.

    Called again by a re-run of a finished run, so outputs lost to a crash or a deletion come back.
    """
    from train.gap import write_gap

    if export:
        export_pretrained(model, run_dir / "export", _tokenizer_path(manifest, shards), manifest.tokenizer, d.is_main,
                          dtype)
    if d.is_main:
        write_gap(run_dir)
        outputs = ["export/config.json", "gap.json"]
        if (run_dir / STAGES_FILE).is_file():  # a sequence: its table and figure, boundaries and branches marked
            from train.stagereport import write_stage_report

            write_stage_report(run_dir, say)
            outputs.append("stages.png")
        missing = [name for name in outputs if not (run_dir / name).is_file()]
        if missing:
            raise RuntimeError(f"{run_dir}: finished, but {', '.join(missing)} was not written")
        say(f"done: {run_dir} (export/, metrics.jsonl, gap.json)")


def forward_backward(model: torch.nn.Module, batch: torch.Tensor, micro: int, sync_every_microbatch: bool = True) -> torch.Tensor:
    """Mean token loss of this rank's batch, gradients accumulated over micro-batches.

    Under FSDP every micro-batch's gradients are reduce-scattered into the sharded gradients, so a rank
    holds 1/world of them between micro-batches (OLMo-core, torchtitan), plus the input buffer of the last
    reduce-scatter (one unit's gradient, the input embeddings'), which overlaps the next micro-batch's
    forward instead of being waited for; the last micro-batch waits. `sync_every_microbatch=False`
    ([parallel] sync_grads_every_microbatch) reduces once, on the last: less communication, but FSDP then
    keeps an unsharded gradient accumulator (4 bytes x every parameter, on every rank) between them.
    """
    x, y = batch[:, :-1], batch[:, 1:]
    n = x.size(0) // micro
    total = torch.zeros((), device=batch.device)
    fsdp = hasattr(model, "set_requires_gradient_sync")
    for i in range(n):
        last = i == n - 1
        if fsdp:
            model.set_requires_gradient_sync(sync_every_microbatch or last)
            model.set_is_last_backward(last)
        xs, ys = x[i * micro:(i + 1) * micro], y[i * micro:(i + 1) * micro]
        loss = model(input_ids=xs, targets=ys) / n  # train.loss: no full-vocabulary logits
        loss.backward()
        total += loss.detach()
    return total  # on the device: read at the next log step


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; norms and biases (1-D) are left alone (nanoGPT, HF Trainer)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _fast_adamw(device: torch.device) -> dict:
    """Fused AdamW where torch has a fused kernel (CUDA, and CPU since 2.4: ~3x faster than foreach), else foreach."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    return {"fused": True} if device.type in _get_fused_kernels_supported_devices() else {"foreach": True}


def _full(t: torch.Tensor) -> torch.Tensor:
    """The global value of a (possibly sharded) tensor, still on the device."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


@contextmanager
def eager(compiled: bool) -> Iterator[None]:
    """Run compiled blocks eagerly: evaluation and MCQ batches have other widths than training, and each new
    width would otherwise recompile every block (and count against dynamo's recompile limit)."""
    if not compiled:
        yield
        return
    with torch.compiler.set_stance("force_eager"):
        yield


def _tokenizer_path(manifest: Manifest, shards: Path) -> Path | None:
    """The manifest's tokenizer path; a relative one is read against the shards folder, then the cwd."""
    raw = manifest.tokenizer.get("path")
    if not raw:
        return None
    p = Path(raw)
    return p if p.is_absolute() or not (shards / p).exists() else shards / p


def _benchmarks(recipe: Recipe, manifest: Manifest) -> tuple:
    if not recipe.eval.benchmarks:
        return None, {}
    from continua.tokenizer import load_tokenizer
    from train.mcq import load_benchmarks

    tok = load_tokenizer(_tokenizer_path(manifest, Path(shards_dir(recipe))))
    return tok, load_benchmarks(recipe.eval.benchmarks, recipe.eval.mcq_max_items)


def _eval_contents(windows: dict, mcq: tuple) -> str:
    """`2 validation sets x 64 windows, medqa 400 items`: what one evaluation runs."""
    parts = [f"{len(windows)} validation set{'s' if len(windows) != 1 else ''} x "
             f"{max((len(w) for w in windows.values()), default=0)} windows"]
    parts += [f"{name} {len(items)} items" for name, items in mcq[1].items()]
    return ", ".join(parts)


def _write_predictions(folder: Path, step: int, predictions: dict[str, list[dict]]) -> None:
    """predictions/NAME/step_NNNNNN.jsonl: per item the gold answer, the one chosen and every option's score."""
    import json

    for name, rows in predictions.items():
        write_text(folder / name / f"step_{step:06d}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _score_benchmarks(model: torch.nn.Module, mcq: tuple, batch_size: int, d: Dist,
                      status=lambda text: None, predictions: dict | None = None) -> dict:
    """acc, acc_norm, items, top_answer and `answers/NAME/LABEL` (share of items given each answer) per
    benchmark; per-item rows (train.mcq.item_predictions) into `predictions` when given."""
    from train.mcq import answer_labels, answer_shares, evaluate_mcq, item_predictions

    tok, sets = mcq
    out = {}
    for name, items in sets.items():
        r = evaluate_mcq(model, tok, items, d.device, batch_size=batch_size, return_scores=True, d=d,
                         on_batch=lambda i, n, _name=name, _k=len(items): status(
                             f"{_name} ({_k} items) {i}/{n} batches"))
        rows = item_predictions(items, r["scores"])
        for label, share in answer_shares(rows, answer_labels(items)).items():
            out[f"answers/{name}/{label}"] = share["chosen"]
        if predictions is not None:
            predictions[name] = rows
        out[f"acc/{name}"], out[f"acc_norm/{name}"] = r["acc"], r["acc_norm"]
        out[f"items/{name}"] = r["count"]  # for the gap metrics' noise bound (train.gap)
        out[f"top_answer/{name}"] = r["top_answer_share"]  # 1.0: the same answer to every item
    return out


class _StopFlag:
    """SIGTERM asks for a checkpoint at the end of the current step, then a clean exit."""

    def __init__(self):
        self.requested = False
        self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._old)


def _sayer(d: Dist):
    def say(msg: str) -> None:
        if d.is_main:
            print(f"[train] {msg}", file=sys.stderr, flush=True)

    return say

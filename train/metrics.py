"""What a run reports: metrics.jsonl (the record), a progress bar (for people), MFU, TensorBoard.

Only rank 0 writes. On resume the log is cut back to the checkpoint's step, so every step and
every evaluation appears exactly once even after a crash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from continua.io import atomic_open, naming

class MetricsLog:
    """Append-only JSON Lines, one object per train step or evaluation, flushed as written."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None = None,
                 keep: Callable[[dict], bool] | None = None):
        """A fresh log, or (resuming) the rows of the old one that `keep` accepts (or up to `keep_until_step`)."""
        self.path = Path(path)
        self.enabled = enabled
        self._f = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep is None and keep_until_step is not None:
            keep = lambda r: r.get("step", 0) <= keep_until_step  # noqa: E731
        if keep is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            from train.gap import read_metrics  # skips a line torn by a crash

            kept = [r for r in read_metrics(self.path) if keep(r)]
            with atomic_open(self.path) as f:
                f.write("".join(json.dumps(r) + "\n" for r in kept))
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        if self._f is not None:
            with naming(self.path):  # a full disk: the one-line error names the log
                self._f.write(json.dumps(row) + "\n")
                self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            with naming(self.path):
                f.close()


# dense bf16 tensor-core peaks from NVIDIA's datasheets (FLOP/s): (model, variant or None, peak). A device
# name matches by whole words ("NVIDIA L40" is an L40, not an L4; "NVIDIA A100-SXM4-80GB" an A100), and a
# variant's row wins over its model's plain row ("NVIDIA H100 PCIe" against "NVIDIA H100 80GB HBM3").
DATASHEET_BF16 = (("H100", "PCIE", 756e12), ("H100", "NVL", 835e12), ("H100", None, 989e12), ("H200", None, 989e12),
                  ("GH200", None, 989e12), ("B200", None, 2250e12), ("A100", None, 312e12), ("L40S", None, 362e12),
                  ("L40", None, 181e12), ("L4", None, 121e12), ("A10G", None, 70e12), ("A10", None, 125e12))


def datasheet_peak(name: str) -> float | None:
    """The datasheet's dense bf16 peak of the GPU torch names `name`, or None when it is not in the table."""
    import re

    words = set(re.split(r"[\s\-_/]+", name.upper()))
    for model, variant, flops in DATASHEET_BF16:  # variants come before their model's plain row
        if model in words and (variant is None or variant in words):
            return flops
    return None


def peak_flops(device: torch.device, configured: float, say=print) -> dict[str, float]:
    """What MFU divides by, per metrics key: `mfu` against [train] peak_flops if set, else on GPU against
    the datasheet's bf16 peak (the measured one when the GPU is not in the table) and `mfu_measured`
    against a measured bf16 matmul peak, both printed. On CPU nothing, silently (README says so; set
    [train] peak_flops to get it): a CPU's attainable peak moves with load and threads too much for a
    percentage to mean anything, and a line on every run would read like a problem."""
    if configured:
        return {"mfu": configured}
    if device.type != "cuda":
        return {}
    name = torch.cuda.get_device_name(device)
    measured = measure_peak_flops(device, seconds=1.0)
    sheet = datasheet_peak(name)
    say(f"{name}: bf16 matmul measured {measured / 1e12:.0f} TFLOP/s, datasheet "
        f"{f'{sheet / 1e12:.0f} TFLOP/s' if sheet else 'unknown'}; MFU is against the "
        f"{'datasheet' if sheet else 'measured'} peak")
    return {"mfu": sheet or measured, "mfu_measured": measured}


def measure_peak_flops(device: torch.device, seconds: float = 0.5) -> float:
    """FLOP/s of a large matmul in the training dtype: a measured ceiling where no spec sheet applies."""
    on_gpu = device.type == "cuda"
    n = 8192 if on_gpu else 1024
    dtype = torch.bfloat16 if on_gpu else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        a @ b
        reps += 1
        if on_gpu and reps % 10 == 0:
            _sync(device)
    _sync(device)
    return 2.0 * n ** 3 * reps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Progress:
    """A tqdm bar on rank 0 with loss, LR, tokens/s and MFU; during an evaluation it says so, and after
    the first one it shows what evaluating costs (seconds per evaluation, share of the wall time)."""

    def __init__(self, total: int, initial: int, enabled: bool, n_evals: int = 0):
        self.bar = None
        self.n_evals, self.evals_done, self.eval_s, self._t_eval = n_evals, 0, 0.0, 0.0
        self._t0 = time.perf_counter()
        self._eval_desc, self._t_status, self._eval_step, self._eval_what = "", 0.0, 0, ""
        if enabled:
            from continua.progress import progress

            self.bar = progress(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def update(self, row: dict) -> None:
        if self.bar is not None:
            post = {"loss": f"{row['loss']:.4f}", "lr": f"{row['lr']:.2e}", "tok_s": f"{row['tokens_per_s']:,.0f}"}
            if "mfu" in row:
                post["mfu"] = f"{100 * row['mfu']:.1f}%"
            if self.evals_done:
                post["eval"] = self.eval_cost()
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

    def eval_cost(self) -> str:
        """`4.1s x 3/17 (62% of time)`: seconds per evaluation, evaluations done / planned, share of wall time."""
        wall = max(time.perf_counter() - self._t0, 1e-9)
        per = self.eval_s / max(self.evals_done, 1)
        return f"{per:.1f}s x {self.evals_done}/{self.n_evals} ({100 * self.eval_s / wall:.0f}% of time)"

    def eval_start(self, step: int, what: str = "") -> None:
        """`what` (the sets and items an evaluation covers) ends the line a log gets for each evaluation."""
        self._t_eval = self._t_status = time.perf_counter()
        self._eval_step, self._eval_what = step, what
        self._eval_desc = f"evaluating at step {step} ({self.evals_done + 1}/{self.n_evals})"
        if self.bar is not None:
            self.bar.set_description(self._eval_desc)

    def eval_status(self, text: str) -> None:
        """Where an evaluation is (`loss/code 3/8 batches`, `mcq/medqa 12/50 batches`): shown on the bar, and
        as a plain line every interval in a log, so a long evaluation never looks stuck."""
        from continua.progress import LineProgress

        if self.bar is None:
            return
        self.bar.set_description(f"{self._eval_desc}: {text}", refresh=False)
        now = time.perf_counter()
        every = self.bar.interval if isinstance(self.bar, LineProgress) else 0.5
        if now - self._t_status >= every:
            self._t_status = now
            self.bar.refresh()

    def eval_end(self) -> float:
        """Ends an evaluation; returns its seconds."""
        seconds = time.perf_counter() - self._t_eval
        self.eval_s += seconds
        self.evals_done += 1
        if self.bar is not None:
            self.bar.set_description("train")
            self.bar.set_postfix_str(f"eval {self.eval_cost()}", refresh=True)
            from continua.progress import LineProgress

            if isinstance(self.bar, LineProgress):  # a log: one line per evaluation (longer ones also get
                # eval_status lines while they run)
                self.bar.write(f"[train] evaluated at step {self._eval_step} ({self.evals_done}/{self.n_evals}) in "
                               f"{seconds:.1f}s" + (f": {self._eval_what}" if self._eval_what else ""))
        return seconds

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoard:
    """Scalars to <run dir>/tensorboard when tensorboard is installed (the `tensorboard` extra); otherwise
    metrics.jsonl only, silently: an optional extra that is not installed is not a problem to report."""

    def __init__(self, folder: Path, enabled: bool, say=print):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(folder))

    def write(self, row: dict) -> None:
        if self.writer is None:
            return
        if row["kind"] == "train":
            for k in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                if k in row:
                    self.writer.add_scalar(f"train/{k}", row[k], row["step"])
        else:
            for k, v in row["metrics"].items():
                self.writer.add_scalar(f"eval/{k}", v, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WeightChange:
    """|w_t - w_0| / |w_0| per decoder layer (Guo et al.: lower layers move more during the gap).

    Works on FSDP shards: each rank sums squares of its local shard and the sums are all-reduced. The
    reference w_0 is kept in host memory (a device copy would add 4 bytes per parameter to the GPU for the
    whole run); at evaluation it comes back one tensor at a time, so the device holds at most one shard
    of one parameter beyond the model.
    """

    def __init__(self, layers: list[torch.nn.Module]):
        self.layers = layers
        _reshard(layers)
        self.w0 = [[_local(p).detach().to("cpu", copy=True) for p in layer.parameters()] for layer in layers]

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        if not self.layers:
            return {}
        _reshard(self.layers)
        device = _local(next(self.layers[0].parameters())).device
        sq = torch.zeros(len(self.layers), 2, dtype=torch.float64, device=device)
        for i, (layer, init) in enumerate(zip(self.layers, self.w0)):
            for p, p0 in zip(layer.parameters(), init):
                w0 = p0.to(device, non_blocking=True).double()
                sq[i, 0] += (_local(p).double() - w0).pow(2).sum()
                sq[i, 1] += w0.pow(2).sum()
                del w0
        from train.parallel import all_reduce_sum

        all_reduce_sum(sq)
        rel = (sq[:, 0] / sq[:, 1].clamp_min(1e-30)).sqrt().tolist()
        out = {f"weight_change/layer_{i}": r for i, r in enumerate(rel)}
        if rel[-1] > 0:  # undefined before the first update
            out["weight_change/bottom_top_ratio"] = rel[0] / rel[-1]
        return out


def _reshard(layers: list[torch.nn.Module]) -> None:
    """FSDP may keep a block gathered after forward: compare shards with shards."""
    for layer in layers:
        if hasattr(layer, "reshard"):
            layer.reshard()


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p

"""Each step's loss and gradient norm stay on the device until a log step: the step path never waits.

Reading a tensor on the host (`float(loss)`) makes the host wait until the device has run all queued
work, and an all-reduce of the loss every step adds a collective on top; either stalls a GPU step.
Here a step records its loss (this rank's) and its gradient norm (global) as device tensors; every
`log_every` steps, and before an evaluation, a checkpoint or a stop, `flush` reduces the window's
losses in one all-reduce, reads everything once and returns one metrics row per step.

A non-finite gradient norm skips its step's optimizer update on the device (`skip_non_finite`: fused
AdamW's found_inf), so the weights stay those of the last good step; the flush then raises
NonFiniteLoss, before anything is evaluated or saved.
"""

from __future__ import annotations

import math
import time

import torch

from train.parallel import Dist


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became NaN/inf; that step's update was skipped and nothing was saved."""


def skip_non_finite(optimizer: torch.optim.Optimizer, grad_norm: torch.Tensor) -> bool:
    """Make the next `optimizer.step()` a no-op on the device when `grad_norm` is not finite.

    True when the optimizer can (fused Adam/AdamW read `found_inf`, as under a GradScaler); False
    otherwise, and the caller must then read the norm on the host before stepping.
    """
    if not optimizer.defaults.get("fused"):
        return False
    optimizer.found_inf = (~torch.isfinite(grad_norm)).to(torch.float32).reshape(())
    return True


class StepWindow:
    """The steps since the last flush: device tensors, host clocks, and what a metrics row needs."""

    def __init__(self, d: Dist, tokens_per_step: int, flops_per_token: float, peaks: dict[str, float],
                 elapsed0: float):
        self.d, self.tokens_per_step, self.flops_per_token, self.peaks = d, tokens_per_step, flops_per_token, peaks
        self.elapsed0, self.t_run = elapsed0, time.perf_counter()
        self.t_start = self.t_run  # when the window's first step began
        self.steps: list[tuple[int, float]] = []  # (step, lr)
        self.losses: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []
        self.ends: list[float] = []  # host clock when each step's work was queued (on CPU: done)

    def add(self, step: int, lr: float, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.steps.append((step, lr))
        self.losses.append(loss.detach().reshape(()).to(torch.float64))
        self.norms.append(grad_norm.detach().reshape(()).to(torch.float64))
        self.ends.append(time.perf_counter())

    def __len__(self) -> int:
        return len(self.steps)

    def elapsed_s(self) -> float:
        """Seconds of training so far, over every resumed part of the run."""
        return self.elapsed0 + time.perf_counter() - self.t_run

    def restart_clock(self) -> None:
        """Time spent outside steps (an evaluation, a checkpoint) does not count as step time."""
        self.t_start = time.perf_counter()

    def flush(self, last_checkpoint: str) -> list[dict]:
        """One metrics row per step of the window (tokens/s: the window's mean); raises NonFiniteLoss."""
        if not self.steps:
            return []
        losses = self.d.all_reduce_sum(torch.stack(self.losses)) / self.d.world
        values = torch.stack([losses, torch.stack(self.norms)]).tolist()  # the one host read of the window
        now = time.perf_counter()
        per_step = (now - self.t_start) / len(self.steps)
        for (step, _), loss, norm in zip(self.steps, *values):
            if not (math.isfinite(loss) and math.isfinite(norm)):
                raise NonFiniteLoss(
                    f"step {step}: loss {loss}, gradient norm {norm}: stopped, with the non-finite steps' "
                    f"updates skipped before the optimizer update; nothing was saved (last good checkpoint: "
                    f"{last_checkpoint}). Lower [optim] lr, raise [schedule] warmup, or check the data.")
        rows = []
        self.ends[-1] = now  # the window's last step is done once its figures are read
        for (step, lr), loss, norm, end in zip(self.steps, *values, self.ends):
            row = {"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": norm,
                   "tokens": step * self.tokens_per_step, "tokens_per_s": self.tokens_per_step / per_step,
                   "elapsed_s": self.elapsed0 + end - self.t_run}
            for key, peak in self.peaks.items():
                row[key] = self.flops_per_token * self.tokens_per_step / per_step / (peak * self.d.world)
            if self.d.device.type == "cuda":  # the allocator's counters: read without waiting for the GPU
                row["mem_gib"] = torch.cuda.max_memory_allocated(self.d.device) / 2 ** 30
                row["mem_reserved_gib"] = torch.cuda.max_memory_reserved(self.d.device) / 2 ** 30
            rows.append(row)
        self.steps, self.losses, self.norms, self.ends = [], [], [], []
        self.t_start = now
        return rows

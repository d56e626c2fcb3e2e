"""Validation losses on every held-out set, on a cadence dense at the start of training.

The stability gap shows only when evaluation is frequent early (Guo et al.), so the default
cadence is log-spaced: steps 0, 1, 2, 4, ... then evenly spread to the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mix.manifest import Manifest
from mix.shards import ShardSet
from train.config import EvalConfig
from train.parallel import Dist, current_dist


def eval_steps(cfg: EvalConfig, total_steps: int) -> list[int]:
    """Steps after which to evaluate (0 = before training); always includes 0 and the last step.

    `num_evals` is the number of evaluations, exactly (fewer only when the run has fewer steps + 1):
    half log-spaced from step 1, the rest evenly spread; `before_after_only` (or num_evals = 2) is 0 and
    the last step.
    """
    if cfg.before_after_only:
        return sorted({0, total_steps})
    if cfg.every > 0:
        return sorted(set(range(0, total_steps + 1, cfg.every)) | {0, total_steps})
    n = min(cfg.num_evals, total_steps + 1)
    chosen = dict.fromkeys([0, total_steps])  # ordered set
    half = max(1, (n - 2) // 2 + 1)
    log = np.round(np.geomspace(1, max(1, total_steps), half)).astype(int).tolist()
    lin = np.linspace(0, total_steps, n - half + 1).astype(int).tolist()
    for candidates in (log, lin, *_finer_grids(total_steps, n)):
        for s in candidates:
            if len(chosen) >= n:
                return sorted(chosen)
            chosen.setdefault(int(s))
    return sorted(chosen)


def _finer_grids(total_steps: int, n: int):
    """Evenly spaced steps on ever finer grids, ending with every step: fills what collisions took away."""
    k = 2
    while k * n < total_steps:
        yield np.linspace(0, total_steps, k * n + 1).astype(int).tolist()
        k *= 2
    yield range(total_steps + 1)


def validation_windows(valid: ShardSet, seq_len: int, max_windows: int) -> np.ndarray:
    """Fixed evaluation windows: the concatenated validation tokens cut into seq_len+1 chunks."""
    need = max_windows * (seq_len + 1)
    chunks, have = [], 0
    for i in range(valid.num_docs):
        doc = valid.doc(i)
        chunks.append(doc)
        have += doc.size
        if have >= need:
            break
    flat = np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)
    n = min(max_windows, flat.size // (seq_len + 1))
    if n == 0:
        raise ValueError(f"{valid.folder}: validation set has fewer than {seq_len + 1} tokens")
    return flat[: n * (seq_len + 1)].reshape(n, seq_len + 1)


@torch.no_grad()
def evaluate_losses(model: torch.nn.Module, windows: dict[str, np.ndarray], batch_size: int,
                    device: torch.device, autocast_dtype: torch.dtype | None = None,
                    d: Dist | None = None,
                    on_batch: Callable[[str, int, int], None] | None = None) -> dict[str, float]:
    """Mean token loss per set; with several ranks (`d`) each takes a slice and the sums are reduced.
    `on_batch(set name, batches done, batches)` follows the progress (a long evaluation is not silent)."""
    d = d or current_dist(device)
    rank, world = d.rank, d.world
    was_training = model.training
    model.eval()
    out = {}
    for name, win in windows.items():
        total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, token count
        # every rank runs the same number of batches (FSDP needs matching collectives)
        n_batches = -(-len(win) // (batch_size * world))
        for b in range(n_batches):
            lo = (b * world + rank) * batch_size
            batch = win[lo: lo + batch_size]
            if batch.size == 0:
                batch = win[:1]
                weight = 0.0
            else:
                weight = 1.0
            x = torch.as_tensor(batch[:, :-1], device=device)
            y = torch.as_tensor(batch[:, 1:], device=device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                if getattr(model, "fused_loss", False):  # train.loss: no full-vocabulary logits
                    loss = model(input_ids=x, targets=y) * y.numel()
                else:
                    logits = model(input_ids=x).logits
                    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                             y.reshape(-1), reduction="sum")
            total += torch.stack([loss.double() * weight, torch.tensor(y.numel() * weight, dtype=torch.float64,
                                                                        device=device)])
            if on_batch is not None:
                on_batch(name, b + 1, n_batches)
        d.all_reduce_sum(total)
        out[name] = float(total[0] / total[1])
    if was_training:
        model.train()
    return out


def validation_sets(shards: Path, manifest: Manifest, seq_len: int, max_windows: int) -> dict[str, np.ndarray]:
    """Every source's fixed evaluation windows from a build's validation shards (sources without any: none)."""
    out = {}
    for name, entry in sorted(manifest.sources.items()):
        if entry.valid.docs > 0:
            out[name] = validation_windows(ShardSet.open(shards / name / "valid"), seq_len, max_windows)
    return out

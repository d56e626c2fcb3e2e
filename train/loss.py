"""Next-token cross-entropy without the full logits.

A causal LM's loss materializes batch x seq x vocabulary logits in fp32 (8 x 2048 x 128K = 8.6 GB)
and keeps them for backward. Here the output projection and the loss run together, a chunk of
positions at a time, each chunk under activation checkpointing: forward keeps only the loss sum,
backward recomputes one chunk's logits at a time. Peak extra memory: one chunk's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LOSS_CHUNK_TOKENS = 1024  # positions whose logits exist at once (x vocabulary x 4 bytes in fp32)


def _chunk_loss_sum(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(h, weight, bias).float(), y, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          bias: torch.Tensor | None = None, chunk_tokens: int = LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, computed chunk by chunk."""
    h = hidden.reshape(-1, hidden.size(-1))
    y = targets.reshape(-1)
    grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for lo in range(0, h.size(0), chunk_tokens):
        hs, ys = h[lo:lo + chunk_tokens], y[lo:lo + chunk_tokens]
        if grad:
            total = total + checkpoint(_chunk_loss_sum, hs, weight, bias, ys, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(hs, weight, bias, ys)
    return total / max(1, y.numel())


def _fused_head_supported(model: nn.Module) -> bool:
    """Models whose logits are exactly `head(hidden)`: no soft-capping or scaling after the projection."""
    cfg = model.config
    head = model.get_output_embeddings()
    return (isinstance(head, nn.Linear) and not getattr(cfg, "final_logit_softcapping", None)
            and getattr(cfg, "logit_scale", None) in (None, 1.0))


def install_chunked_loss(model: nn.Module) -> nn.Module:
    """Let `model(input_ids=x, targets=y)` return the mean next-token loss without full logits.

    The loss runs inside the model's own forward, so FSDP2's hooks gather the output head's weights
    around it (the head must belong to the root FSDP unit; see train.parallel.shard_model). Calls
    without `targets` (evaluation of MCQ, generation) keep the model's ordinary forward.
    """
    plain = model.forward
    fused = _fused_head_supported(model)

    def forward(*args, targets: torch.Tensor | None = None, **kwargs):
        if targets is None:
            return plain(*args, **kwargs)
        if not fused:
            logits = plain(*args, **kwargs).logits
            return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        base = getattr(model, model.base_model_prefix)
        hidden = base(*args, use_cache=False, **kwargs).last_hidden_state
        head = model.get_output_embeddings()
        return chunked_cross_entropy(hidden, head.weight, targets, head.bias)

    model.forward = forward
    model.fused_loss = True  # train.evaluate asks for the loss the same way
    return model

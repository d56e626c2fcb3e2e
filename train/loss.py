"""Next-token cross-entropy without the full logits, and the module that trains with it.

A causal LM's loss materializes batch x seq x vocabulary logits in fp32 (8 x 2048 x 128K = 8.6 GB)
and keeps them for backward. Here the output projection and the loss run together, a chunk of
positions at a time: forward keeps only each position's log-sum-exp, backward recomputes one chunk's
logits at a time and adds that chunk's head gradient into one fp32 accumulator (summing many bf16
partial gradients in bf16 would round away the small ones). Peak extra memory: one chunk's logits and
the fp32 head gradient.

`CausalLMLoss` wraps the Hugging Face model as a visible module (the FSDP root in train.parallel, so the
output head and final norm are gathered around its forward): `loss_model(input_ids, targets)` is the
mean loss; without targets it is the model's own forward, `logits_to_keep` included, so evaluation and
benchmark scoring ask only for the logits they read.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

LOSS_CHUNK_TOKENS = 1024  # positions whose logits exist at once (x vocabulary x 4 bytes in fp32)
IGNORE_INDEX = -100  # targets with this id add no loss and no gradient (as F.cross_entropy)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum over positions of cross_entropy(h @ W.T + b, y), chunk by chunk; gradients as F.linear + F.cross_entropy."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
                chunk: int) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        lse = torch.empty(h.size(0), dtype=torch.float32, device=h.device)
        for lo in range(0, h.size(0), chunk):
            logits = F.linear(h[lo:lo + chunk], weight, bias).float()
            ys = y[lo:lo + chunk]
            lse[lo:lo + chunk] = torch.logsumexp(logits, dim=-1)
            keep = ys != IGNORE_INDEX
            picked = logits.gather(1, ys.clamp_min(0)[:, None]).squeeze(1)
            total += ((lse[lo:lo + chunk] - picked) * keep).sum()
        ctx.save_for_backward(h, weight, bias, y, lse)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, weight, bias, y, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = None  # fp32: the first chunk's share, then each later one added (in place when already fp32)
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for lo in range(0, h.size(0), ctx.chunk):
            hs, ys = h[lo:lo + ctx.chunk], y[lo:lo + ctx.chunk]
            # d(sum of losses)/d logits = softmax - one_hot, zero on ignored positions, times the upstream gradient
            dlogits = (F.linear(hs, weight, bias).float() - lse[lo:lo + ctx.chunk, None]).exp_()
            keep = ys != IGNORE_INDEX
            dlogits[torch.arange(ys.numel(), device=ys.device), ys.clamp_min(0)] -= 1.0
            dlogits.mul_((keep.float() * grad_out)[:, None])
            d = dlogits.to(h.dtype)
            if need_h:
                grad_h[lo:lo + ctx.chunk] = d @ weight
            if need_w and grad_w is None:
                grad_w = (d.t() @ hs).float()
            elif need_w and d.dtype == torch.float32:
                grad_w.addmm_(d.t(), hs)
            elif need_w:
                grad_w += (d.t() @ hs).float()  # a bf16 chunk's share, added in fp32
            if need_b:
                grad_b += dlogits.sum(0)
        return (grad_h, grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if need_b else None, None, None)


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          bias: torch.Tensor | None = None, chunk_tokens: int = LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, computed chunk by chunk
    (the mean is over all target positions, as the loop's token counts are)."""
    h = hidden.reshape(-1, hidden.size(-1))
    y = targets.reshape(-1)
    total = _ChunkedLinearCrossEntropy.apply(h, weight, bias, y, chunk_tokens)
    return total / max(1, y.numel())


def _fused_head_supported(model: nn.Module) -> bool:
    """Models whose logits are exactly `head(hidden)`: no soft-capping or scaling after the projection."""
    cfg = model.config
    head = model.get_output_embeddings()
    return (isinstance(head, nn.Linear) and not getattr(cfg, "final_logit_softcapping", None)
            and getattr(cfg, "logit_scale", None) in (None, 1.0))


class CausalLMLoss(nn.Module):
    """A Hugging Face causal LM with its training loss: `forward(input_ids, targets)` returns the mean
    next-token loss without full-vocabulary logits; `forward(input_ids, logits_to_keep=k)` (no targets)
    returns the model's output with logits for the last k positions only (0 = all).

    The model is the child `lm`: its parameter names, state dict and checkpoints are the model's own.
    """

    fused_loss = True  # train.evaluate asks for the loss, not the logits

    def __init__(self, lm: nn.Module, chunk_tokens: int = LOSS_CHUNK_TOKENS):
        super().__init__()
        self.lm = lm
        self.chunk_tokens = chunk_tokens
        self.fused = _fused_head_supported(lm)
        self.keeps_logits = "logits_to_keep" in inspect.signature(lm.forward).parameters

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs):
        if targets is None and self.keeps_logits:
            return self.lm(input_ids=input_ids, logits_to_keep=logits_to_keep, use_cache=False, **kwargs)
        if targets is None:  # an architecture without logits_to_keep: all logits, then the ones asked for
            out = self.lm(input_ids=input_ids, use_cache=False, **kwargs)
            if isinstance(logits_to_keep, int) and logits_to_keep > 0:
                out.logits = out.logits[:, -logits_to_keep:]
            return out
        if not self.fused:
            logits = self.lm(input_ids=input_ids, use_cache=False, **kwargs).logits
            return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        base = getattr(self.lm, self.lm.base_model_prefix)
        hidden = base(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state
        head = self.lm.get_output_embeddings()
        return chunked_cross_entropy(hidden, head.weight, targets, head.bias, self.chunk_tokens)

"""Where a rank's memory goes, counted from the tensors themselves: for benchmarks and tests of the
training path's memory (bench/bench_load_memory.py), on any device, without an allocator's statistics.
"""

from __future__ import annotations

import gc
from typing import Callable

import torch
from torch import nn


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage Python can reach, and of the gradients of those that are leaves
    (FSDP keeps its unsharded gradients only in `.grad`); a DTensor counts its local shard, a storage once."""
    seen: dict[int, int] = {}

    def add(t: torch.Tensor) -> None:
        t = t.to_local() if hasattr(t, "to_local") else t
        if t.device.type != "meta" and not t.is_sparse:
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()

    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor):
            add(obj)
            if obj.is_leaf and obj.grad is not None:
                add(obj.grad)
    seen.pop(0, None)  # storages resized to nothing (FSDP's freed unsharded parameters)
    return sum(seen.values())


def held_between_microbatches(net: nn.Module, step: Callable[[], object]) -> list[int]:
    """Live tensor bytes at the start of each micro-batch of `step()`, minus those at the first: what a
    rank keeps between micro-batches (train.loop.forward_backward calls FSDP's set_is_last_backward there)."""
    marks: list[int] = []
    plain = net.set_is_last_backward

    def spy(last: bool) -> None:
        gc.collect()
        marks.append(live_tensor_bytes())
        plain(last)

    net.set_is_last_backward = spy
    try:
        step()
    finally:
        del net.set_is_last_backward
    return [m - marks[0] for m in marks]


def activation_bytes(net: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward of `net(input_ids, targets)` (parameters'
    storage excluded); runs the backward too, so FSDP's iteration ends as in training, and clears grads."""
    params = {(p.to_local() if hasattr(p, "to_local") else p).untyped_storage().data_ptr() for p in net.parameters()}
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = net(input_ids=input_ids, targets=targets)
    held = {}
    for t in saved:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            held[st.data_ptr()] = st.nbytes()
    held.pop(0, None)  # FSDP's unsharded weights, freed after forward: gathered again for backward
    saved.clear()
    loss.backward()
    net.zero_grad(set_to_none=True)
    return sum(held.values())

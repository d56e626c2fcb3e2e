"""One torchrun rank (gloo, FSDP2): the same 4-sequence batch per rank trained as one micro-batch, as 4
micro-batches reduce-scattered each time, and as 4 micro-batches synced only on the last; rank 0 writes
the gathered gradients' largest differences and the tensor bytes each mode held between micro-batches.

    python -m torch.distributed.run --standalone --nproc-per-node=2 tests/fsdp_grad_worker.py OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(out: str, layers: int = 2, hidden: int = 32) -> None:
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from train.loop import forward_backward
    from train.memory import held_between_microbatches
    from train.parallel import init_distributed, prepare_model, shutdown

    torch.set_num_threads(1)
    d = init_distributed("cpu")
    torch.manual_seed(0)  # the same initial model on both ranks; fully_shard keeps each rank's slices
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=hidden, intermediate_size=2 * hidden,
                                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, tie_word_embeddings=False))
    model.config.use_cache = False
    net = prepare_model(model, d, bf16=False)
    batch = torch.randint(0, 300, (4, 17), generator=torch.Generator().manual_seed(1 + d.rank))
    grads, held = {}, {}
    for mode, micro, sync in (("one", 4, True), ("every", 1, True), ("last", 1, False)):
        held[mode] = held_between_microbatches(net, lambda: forward_backward(net, batch, micro, sync))
        grads[mode] = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = None
    n_params = sum(p.numel() for p in model.parameters())
    ranks = [None] * d.world
    dist.all_gather_object(ranks, {"rank": d.rank, "held": held})
    if d.is_main:
        diff = {mode: max((grads[mode][k] - g).abs().max().item() for k, g in grads["one"].items())
                for mode in ("every", "last")}
        scale = max(g.abs().max().item() for g in grads["one"].values())
        Path(out).write_text(json.dumps({"diff": diff, "scale": scale, "params": n_params, "world": d.world,
                                         "embedding_params": model.get_input_embeddings().weight.numel(),
                                         "ranks": ranks}))
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))

"""One torchrun rank: meta-build a HF folder's model, shard it (FSDP2), load it slice by slice, and
check the gathered weights are bitwise those of from_pretrained. Rank 0 writes the verdict as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(folder: str, out: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM

    from train.parallel import init_distributed, prepare_model, shutdown
    from train.weights import build_empty, load_config, load_weights, resolve_source

    d = init_distributed("cpu")
    source = resolve_source(Path(folder))
    model = build_empty(load_config(source))
    prepare_model(model, d, bf16=False)
    load_weights(model, source.path, source.kind)
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if d.is_main:
        plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()
        unequal = sorted(k for k, v in full.items() if not torch.equal(v, plain[k]))
        total = sum(p.numel() for n, p in plain.items() if n in full)
        Path(out).write_text(json.dumps({"unequal": unequal, "keys": len(full), "local": local, "total": total}))
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

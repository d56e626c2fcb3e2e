"""One torchrun rank: meta-build a HF folder's model, shard it (FSDP2), load it slice by slice, and
check the gathered weights are bitwise those of from_pretrained. Rank 0 writes the verdict as JSON.

`fresh OUT`: build_model's fresh Llama instead, tied and untied; rank 0 writes the gathered weights
(OUT.TIED.safetensors) and, per rank, whether the model was all meta before loading and how many
tensors it was handed.

`badbin FOLDER OUT`: load FOLDER's pickled weights (names that are not the model's); rank 0 writes each
rank's error message."""

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


def fresh(out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from train.model import build_model
    from train.parallel import init_distributed, prepare_model, shutdown
    from train.weights import load_weights

    d = init_distributed("cpu")
    verdict = {}
    for tied in (True, False):
        model, weights = build_model(fresh_config(tied), {"vocab_size": 300}, 7, Path(out).parent)
        seen = {"rank": d.rank, "meta": all(p.is_meta for p in model.parameters()), "handed": len(weights[0])}
        prepare_model(model, d, bf16=False)
        load_weights(model, *weights)
        verdict[str(tied)] = ranks = [None] * d.world
        dist.all_gather_object(ranks, seen)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if d.is_main:
            save_file({k: v.contiguous().clone() for k, v in full.items()}, f"{out}.{tied}.safetensors")
    if d.is_main:
        Path(out).write_text(json.dumps(verdict))
    shutdown()


def fresh_config(tied: bool):
    from train.config import ModelConfig

    return ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       max_position_embeddings=64, tie_embeddings=tied)


def badbin(folder: str, out: str) -> None:
    import torch.distributed as dist

    from train.parallel import init_distributed, prepare_model, shutdown
    from train.weights import WeightKeysError, build_empty, load_config, load_weights, resolve_source

    d = init_distributed("cpu")
    model = build_empty(load_config(resolve_source(Path(folder))))
    prepare_model(model, d, bf16=False)
    try:
        load_weights(model, Path(folder), "hf", allow_pickle=True)
        message = None
    except WeightKeysError as e:
        message = str(e)
    ranks = [None] * d.world
    dist.all_gather_object(ranks, message)
    if d.is_main:
        Path(out).write_text(json.dumps(ranks))
    shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "fresh":
        fresh(sys.argv[2])
    elif sys.argv[1] == "badbin":
        badbin(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2])

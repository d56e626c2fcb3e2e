"""The model in and out: a base model (HF folder, GGUF, DCP checkpoint) or a fresh small Llama; export back.

The weights themselves move through train/weights.py (sharded reads and writes); the export is a plain
Hugging Face folder (safetensors, config, tokenizer) that opens anywhere `from_pretrained` does.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from train.config import ModelConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja")


def build_model(cfg: ModelConfig, tokenizer: dict, seed: int, work_dir: Path,
                say=lambda msg: None) -> tuple[nn.Module, tuple | None]:
    """The model to train, and where its weights come from (None: a fresh Llama, initialized here).

    With `[model] path` the architecture is built on the meta device (no memory): prepare_model shards
    it, then `load_weights(model, *source)` fills each rank's shards. A GGUF file is first dequantized
    by rank 0 into `work_dir`/base_model. A fresh Llama on several processes is initialized (seeded) on
    rank 0's CPU only and meta-built everywhere; load_weights broadcasts it into the shards. `tokenizer`
    is the manifest's entry; its vocabulary must fit.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from train.parallel import barrier
    from train.weights import build_empty, gguf_to_folder, load_config, resolve_source

    vocab = int(tokenizer.get("vocab_size") or 0)
    if vocab < 1:
        raise ValueError("the shard manifest's tokenizer entry has no vocab_size")
    torch.manual_seed(seed)
    if cfg.path is not None:
        source = resolve_source(cfg.path, cfg.gguf_file)
        config = load_config(source)
        if config.vocab_size < vocab:
            raise ValueError(f"[model] path {cfg.path}: {config.vocab_size} embeddings but the shards' tokenizer has "
                             f"{vocab} ids; use the model's own tokenizer in [data] tokenizer")
        weights = (source.path, source.kind)
        if source.kind == "gguf":
            folder = Path(work_dir) / "base_model"
            if _is_main():
                say(f"de-quantizing {source.path.name} into {folder} (once; reused while the file is unchanged)")
                gguf_to_folder(source.path, folder)
            barrier()
            weights = (folder, "hf")
        return build_empty(config), weights
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_std,
        bos_token_id=tokenizer.get("bos_id"),
        eos_token_id=tokenizer.get("eos_id"),
        pad_token_id=None,
        attn_implementation="sdpa",
    )
    config.architectures = ["LlamaForCausalLM"]
    if not _several_ranks():
        return LlamaForCausalLM(config), None
    full = LlamaForCausalLM(config).state_dict() if _is_main() else {}  # the other ranks never hold the model
    return build_empty(config), (full, "rank0")


def _is_main() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def _several_ranks() -> bool:
    import torch.distributed as dist

    return dist.is_initialized() and dist.get_world_size() > 1


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters that do matmul work per token): the input embedding is a lookup."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return total, total if tied else total - emb.numel()


def attention_width(config) -> int:
    """Width of the attention scores' matmuls, heads x head_dim: not hidden_size when a model sets its own
    head_dim (Gemma, Qwen3: 16 x 256 = 4096 against a hidden size of 2048 or 3072)."""
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads * int(head_dim)


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus attention's 12 * layers * heads * head_dim * seq_len
    (PaLM, appendix B: the QK^T and AV products, forward and backward)."""
    _, n = count_params(model)
    cfg = model.config
    return 6.0 * n + 12.0 * cfg.num_hidden_layers * attention_width(cfg) * seq_len


def copy_tokenizer(tokenizer_path: Path, dest: Path, tokenizer: dict) -> None:
    """Put the shards' tokenizer beside the weights so `AutoTokenizer.from_pretrained(export)` works."""
    tokenizer_path = Path(tokenizer_path)
    folder = tokenizer_path if tokenizer_path.is_dir() else tokenizer_path.parent
    if tokenizer_path.is_file() and tokenizer_path.suffix == ".json":
        shutil.copy2(tokenizer_path, dest / "tokenizer.json")
    for name in TOKENIZER_FILES:
        if (folder / name).exists() and not (dest / name).exists():
            shutil.copy2(folder / name, dest / name)
    if not (dest / "tokenizer.json").exists():  # e.g. a GGUF file's tokenizer: write it out as tokenizer.json
        from continua.tokenizer import load_tokenizer

        load_tokenizer(tokenizer_path).backend.save(str(dest / "tokenizer.json"))
    if not (dest / "tokenizer_config.json").exists() and (dest / "tokenizer.json").exists():
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tokenizer.get("eos_token"),
               "add_bos_token": bool(tokenizer.get("add_bos"))}
        if tokenizer.get("bos_token"):
            cfg["bos_token"] = tokenizer["bos_token"]
        (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def export_dtype(cfg: ModelConfig, model: nn.Module) -> torch.dtype:
    """`[model] export_dtype`, or with "auto" the base model's dtype (recorded in model.config by
    train.weights.build_empty; none for a fresh model: float32)."""
    name = cfg.export_dtype if cfg.export_dtype != "auto" else getattr(model.config, "dtype", None) or "float32"
    dtype = name if isinstance(name, torch.dtype) else getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"the base model's config.json names dtype {name!r}; set [model] export_dtype")
    return dtype


def export_pretrained(model: nn.Module, dest: Path, tokenizer_path: Path | None, tokenizer: dict,
                      is_main: bool, dtype: torch.dtype = torch.float32) -> Path | None:
    """Save weights in `dtype` (each rank its shards, consolidated into safetensors), config and tokenizer,
    atomically. config.json names the dtype under both `dtype` (transformers 5) and `torch_dtype` (older
    readers), so `from_pretrained(dtype="auto")` and serving engines load what was written.

    All ranks call this; `dest` appears complete or not at all, so its presence means the export is done.
    """
    from train.parallel import barrier

    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    export_safetensors(model, tmp, is_main, dtype)
    if is_main:
        config = copy.deepcopy(model.config)
        config.dtype = dtype
        config.save_pretrained(str(tmp))
        saved = json.loads((tmp / "config.json").read_text())
        saved["torch_dtype"] = saved.get("dtype") or str(dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(str(tmp))
        if tokenizer_path is not None and Path(tokenizer_path).exists():
            copy_tokenizer(Path(tokenizer_path), tmp, tokenizer)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    barrier()
    return dest if is_main else None


def export_safetensors(model: nn.Module, dest: Path, is_main: bool, dtype: torch.dtype = torch.float32) -> None:
    """Write the model's weights to `dest` in `dtype` as one plain safetensors file: every rank writes its own
    shards, then rank 0 consolidates them tensor slice by tensor slice (DCP HuggingFaceStorageWriter)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    from train.parallel import barrier
    from train.weights import model_keys

    sd = {k: v.detach().to(dtype) for k, v in model_keys(model).items()}  # a cast copy of this rank's shards only
    dest.mkdir(parents=True, exist_ok=True)
    writer = HuggingFaceStorageWriter(str(dest), save_distributed=True, enable_consolidation=True)
    dcp.save(sd, storage_writer=writer)
    barrier()
    if is_main:
        shutil.rmtree(dest / "sharded", ignore_errors=True)
        parts = sorted(dest.glob("model-*-of-*.safetensors"))
        if len(parts) == 1:  # the name from_pretrained looks for first; the one-file index is then redundant
            parts[0].rename(dest / "model.safetensors")
            (dest / "model.safetensors.index.json").unlink(missing_ok=True)
    barrier()

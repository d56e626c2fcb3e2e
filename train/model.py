"""The model in and out: a local Hugging Face checkpoint (or GGUF), or a fresh small Llama; export back.

Loading and saving go through transformers so the result opens anywhere `from_pretrained` does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from train.config import ModelConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja")


def build_model(cfg: ModelConfig, tokenizer: dict, seed: int) -> nn.Module:
    """Load `[model] path` (safetensors, or `gguf_file` through transformers) or build a fresh Llama.

    `tokenizer` is the manifest's tokenizer entry; its vocabulary must fit the model's embeddings.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    vocab = int(tokenizer.get("vocab_size") or 0)
    if vocab < 1:
        raise ValueError("the shard manifest's tokenizer entry has no vocab_size")
    torch.manual_seed(seed)
    if cfg.path is not None:
        kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
        if cfg.gguf_file:
            if not (Path(cfg.path) / cfg.gguf_file).exists():
                raise FileNotFoundError(f"[model] gguf_file: {Path(cfg.path) / cfg.gguf_file} does not exist")
            kwargs["gguf_file"] = cfg.gguf_file
        try:
            model = AutoModelForCausalLM.from_pretrained(str(cfg.path), **kwargs)
        except (OSError, ValueError, ImportError) as e:
            raise RuntimeError(f"[model] path {cfg.path}: transformers cannot load it: {e}") from e
        n_emb = model.get_input_embeddings().weight.shape[0]
        if n_emb < vocab:
            raise ValueError(f"[model] path {cfg.path}: {n_emb} embeddings but the shards' tokenizer has "
                             f"{vocab} ids; use the model's own tokenizer in [data] tokenizer")
        model.config.architectures = [type(model).__name__]  # FSDP renames the class; export keeps this one
        return model
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
    return LlamaForCausalLM(config)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters that do matmul work per token): the input embedding is a lookup."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return total, total if tied else total - emb.numel()


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus attention's 12 * layers * hidden * seq_len (PaLM)."""
    _, n = count_params(model)
    cfg = model.config
    return 6.0 * n + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def copy_tokenizer(tokenizer_path: Path, dest: Path, tokenizer: dict) -> None:
    """Put the shards' tokenizer beside the weights so `AutoTokenizer.from_pretrained(export)` works."""
    tokenizer_path = Path(tokenizer_path)
    folder = tokenizer_path if tokenizer_path.is_dir() else tokenizer_path.parent
    if tokenizer_path.is_file() and tokenizer_path.suffix == ".json":
        shutil.copy2(tokenizer_path, dest / "tokenizer.json")
    for name in TOKENIZER_FILES:
        if (folder / name).exists() and not (dest / name).exists():
            shutil.copy2(folder / name, dest / name)
    if not (dest / "tokenizer_config.json").exists() and (dest / "tokenizer.json").exists():
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tokenizer.get("eos_token"),
               "add_bos_token": bool(tokenizer.get("add_bos"))}
        if tokenizer.get("bos_token"):
            cfg["bos_token"] = tokenizer["bos_token"]
        (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def export_pretrained(model: nn.Module, dest: Path, tokenizer_path: Path | None, tokenizer: dict,
                      is_main: bool) -> Path | None:
    """Gather full weights (all ranks call this) and `save_pretrained` them with the tokenizer, atomically."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from train.parallel import barrier

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    dest = Path(dest)
    if is_main:
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp), state_dict=full)
        if tokenizer_path is not None and Path(tokenizer_path).exists():
            copy_tokenizer(Path(tokenizer_path), tmp, tokenizer)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    barrier()
    return dest if is_main else None

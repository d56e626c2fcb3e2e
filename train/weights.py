"""Base-model weights in and out at scale: no rank ever holds the whole model.

Routes for `[model] path` (resolve_source):
* a Hugging Face folder (safetensors, one file or sharded with an index): every rank reads only its
  own slices through torch DCP's HuggingFaceStorageReader;
* a `.gguf` file, or a folder holding one: rank 0 dequantizes it once into <run>/base_model as plain
  safetensors (transformers' GGUF reader), then the Hugging Face route;
* a torch.distributed.checkpoint folder of an earlier run (checkpoints/step_N): DCP reshards it;
* pickled `.bin` weights, only with `[model] allow_pickle`: rank 0 reads them with the weights-only
  unpickler and broadcasts (set_model_state_dict with broadcast_from_rank0).
A fresh model on several processes comes the same way as pickled weights: rank 0 initializes it on its
CPU and broadcasts (kind "rank0", train.model.build_model).

The model is built on the meta device, sharded with FSDP2, given empty storage, then loaded.
Export writes each rank's shards with DCP's HuggingFaceStorageWriter and consolidates them into
plain safetensors file by file (no full gather on one rank).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

from continua.trust import HF_SAFE_KWARGS, load_pickled_weights, refuse_remote_code, weight_files

SourceKind = Literal["hf", "gguf", "dcp"]
WeightsKind = Literal["hf", "dcp", "rank0"]  # what load_weights reads: a folder, a checkpoint, rank 0's state dict


class ModelSourceError(ValueError):
    """`[model] path` is not something continua can load; the message names the path and what was found."""


@dataclass
class ModelSource:
    kind: SourceKind
    path: Path  # the HF folder, the .gguf file, or the DCP checkpoint folder
    config_dir: Path  # the folder whose config.json describes the architecture (GGUF: the file's folder)


def resolve_source(path: Path, gguf_file: str | None = None) -> ModelSource:
    """What `[model] path` points at: a HF folder, a GGUF file (or a folder with exactly one), or a DCP checkpoint."""
    p = Path(path)
    if gguf_file:
        p = p / gguf_file
    if p.is_file():
        if p.suffix == ".gguf":
            return ModelSource("gguf", p, p.parent)
        raise ModelSourceError(f"[model] path {p}: a file that is not .gguf; give the model's folder instead")
    if not p.is_dir():
        raise ModelSourceError(f"[model] path {p} does not exist")
    if (p / ".metadata").is_file():
        for cand in (p, p.parent.parent, p.parent.parent / "export"):  # a run's checkpoints/step_N: its run dir
            if (cand / "config.json").is_file():
                return ModelSource("dcp", p, cand)
        raise ModelSourceError(f"[model] path {p}: a DCP checkpoint without config.json (looked in it, in "
                               f"{p.parent.parent} and in its export/); copy the model's config.json into it")
    if (p / "config.json").is_file():
        return ModelSource("hf", p, p)
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource("gguf", ggufs[0], p)
    if ggufs:
        raise ModelSourceError(f"[model] path {p}: {len(ggufs)} .gguf files; set path to the one to train")
    raise ModelSourceError(f"[model] path {p}: no config.json, no .gguf file and no DCP .metadata: not a model")


def load_config(source: ModelSource):
    """The transformers config of the source (no weights read); remote code refused."""
    from transformers import AutoConfig

    refuse_remote_code(source.config_dir)
    try:
        if source.kind == "gguf":
            return AutoConfig.from_pretrained(str(source.path.parent), gguf_file=source.path.name, **HF_SAFE_KWARGS)
        return AutoConfig.from_pretrained(str(source.config_dir), **HF_SAFE_KWARGS)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelSourceError(f"[model] path {source.path}: transformers cannot read its config: {first}") from e


def max_positions(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def build_empty(config) -> nn.Module:
    """The architecture with parameters on the meta device (no memory) and real buffers (rotary tables)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa",
                                                 trust_remote_code=False)
    model.config.architectures = [type(model).__name__]  # FSDP renames the class; export keeps this one
    return model


def is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def materialize(model: nn.Module, device: torch.device) -> None:
    """Give a (sharded) meta model uninitialized storage on `device`; buffers keep their computed values."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()  # to_empty gives each module a new parameter: tie the head to the embeddings again
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])


def gguf_to_folder(gguf: Path, dest: Path) -> Path:
    """Dequantize a GGUF file into a plain safetensors folder (config, weights, tokenizer); reused when current."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from continua.fingerprint import fingerprint

    marker = dest / "continua_source.json"
    old = json.loads(marker.read_text()) if marker.is_file() else None
    stamp = fingerprint(Path(gguf).resolve(), old)  # by content: a re-downloaded identical file is current
    if old is not None and old.get("hash") == stamp["hash"] and (dest / "model.safetensors").is_file():
        return dest
    config = load_config(ModelSource("gguf", gguf, gguf.parent))
    model = build_empty(config)  # transformers needs the architecture to name and reorder the tensors
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    config.save_pretrained(str(tmp))
    try:
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **HF_SAFE_KWARGS).save_pretrained(str(tmp))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a GGUF without tokenizer metadata: the shards' tokenizer is used for export
    (tmp / marker.name).write_text(json.dumps(stamp) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _model_keys(model: nn.Module) -> dict:
    """The model's sharded state dict, without the output head when it is tied to the embeddings."""
    sd = get_model_state_dict(model)
    if getattr(model.config, "tie_word_embeddings", False):
        head = model.get_output_embeddings()
        for name, p in model.named_parameters(remove_duplicate=False):
            if head is not None and p is head.weight and name in sd and name != _embedding_name(model):
                sd.pop(name)
    return sd


def _embedding_name(model: nn.Module) -> str:
    emb = model.get_input_embeddings().weight
    return next(n for n, p in model.named_parameters() if p is emb)


def _safetensors_keys(files: list[Path]) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            keys.update(h.keys())
    return keys


def load_weights(model: nn.Module, folder_or_ckpt: Path | dict, kind: WeightsKind, allow_pickle: bool = False) -> None:
    """Fill a materialized (sharded) model from a HF folder or a DCP checkpoint (each rank reads its slices),
    or from rank 0's full state dict (kind "rank0": the other ranks pass {})."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    if kind == "rank0":
        _broadcast_from_rank0(model, folder_or_ckpt)
        return
    sd = _model_keys(model)  # the parameters themselves (their local shards): DCP reads into them in place
    if kind == "dcp":
        dcp.load({"model": sd}, checkpoint_id=str(folder_or_ckpt))
        return
    refuse_remote_code(folder_or_ckpt)
    fmt, files = weight_files(folder_or_ckpt, allow_pickle)
    if fmt == "pickle":
        _load_pickled(model, files)
        return
    have = _safetensors_keys(files)
    missing = sorted(set(sd) - have)
    if missing:
        raise ModelSourceError(f"{folder_or_ckpt}: {len(missing)} weights of {type(model).__name__} are not in its "
                               f"safetensors files (first: {', '.join(missing[:3])})")
    _drop_unindexed(folder_or_ckpt, files)
    dcp.load(sd, storage_reader=HuggingFaceStorageReader(str(folder_or_ckpt)))


def _drop_unindexed(folder: Path, files: list[Path]) -> None:
    """The storage reader reads every *.safetensors in the folder: stray copies would shadow the indexed ones."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        if len(files) > 1:
            raise ModelSourceError(f"{folder}: {len(files)} safetensors files and no model.safetensors.index.json")
        return
    listed = set(json.loads(index.read_text())["weight_map"].values())
    extra = sorted(f.name for f in files if f.name not in listed)
    if extra:
        raise ModelSourceError(f"{folder}: {', '.join(extra)} not in model.safetensors.index.json; move it away")


def _load_pickled(model: nn.Module, files: list[Path]) -> None:
    """Rank 0 reads the pickled state dict (weights-only, memory-mapped) and broadcasts it into the shards."""
    import torch.distributed as dist

    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    full: dict = {}
    if rank0:
        for f in files:
            full.update(load_pickled_weights(f))
    _broadcast_from_rank0(model, full)


def _broadcast_from_rank0(model: nn.Module, full: dict) -> None:
    """Rank 0's full state dict into every rank's shards, one tensor at a time (the other ranks pass {})."""
    import torch.distributed as dist

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=dist.is_initialized(), strict=False)
    set_model_state_dict(model, full, options=options)


def export_safetensors(model: nn.Module, dest: Path, is_main: bool) -> None:
    """Write the model's weights to `dest` as one plain safetensors file: every rank writes its own shards,
    then rank 0 consolidates them tensor slice by tensor slice (DCP HuggingFaceStorageWriter)."""
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    from train.parallel import barrier

    sd = _model_keys(model)
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


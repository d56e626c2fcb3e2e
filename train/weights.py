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

from continua.modelpath import GGUFReaderMissing, ModelPathError, require_gguf_reader
from continua.modelpath import gguf_file as named_gguf
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
            return _gguf_source(p)
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
    try:
        gguf = named_gguf(p)  # the rule [curate] lm_scorers and the tokenizer use too
    except ModelPathError as e:
        raise ModelSourceError(f"[model] path {e}") from e
    if gguf is not None:
        return _gguf_source(gguf)
    raise ModelSourceError(f"[model] path {p}: no config.json, no .gguf file and no DCP .metadata: not a model")


def _gguf_source(gguf: Path) -> ModelSource:
    try:
        require_gguf_reader(f"[model] path {gguf}")
    except GGUFReaderMissing as e:
        raise ModelSourceError(str(e)) from e
    return ModelSource("gguf", gguf, gguf.parent)


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

    base_dtype = getattr(config, "dtype", None)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa",
                                                 trust_remote_code=False)
    model.config.architectures = [type(model).__name__]  # FSDP renames the class; export keeps this one
    model.config.dtype = base_dtype  # trained in fp32; the base's dtype is what export writes back (export_dtype)
    return model


def gguf_to_folder(gguf: Path, dest: Path) -> Path:
    """Dequantize a GGUF file into a plain safetensors folder (config, weights, tokenizer); reused when current."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer
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


def model_keys(model: nn.Module) -> dict:
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


class WeightKeysError(ModelSourceError):
    """The weights' names are not the model's: a parameter would be left uninitialized, or a weight unused."""


def check_keys(model: nn.Module, found: set[str], where: str) -> None:
    """Fail unless `found` names every parameter of `model` (a tied output head may be absent) and nothing
    else (bar the names the architecture itself ignores, e.g. old checkpoints' rotary tables, and a tied
    head's copy). The message names the missing and unexpected keys, so another prefix shows at once."""
    import re

    expected = set(model_keys(model))
    missing = sorted(expected - found)
    ignore = [re.compile(r) for r in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
    tied_head = _tied_head_names(model)
    unexpected = sorted(k for k in found - expected if k not in tied_head and not any(r.search(k) for r in ignore))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights of {type(model).__name__} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        raise WeightKeysError(f"{where}: {'; '.join(parts)}: nothing was loaded. Is this the model's own checkpoint "
                              "(the same architecture, names without an extra or missing prefix)?")


def _tied_head_names(model: nn.Module) -> set[str]:
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    head = model.get_output_embeddings()
    return {n for n, p in model.named_parameters(remove_duplicate=False) if head is not None and p is head.weight}


def load_weights(model: nn.Module, folder_or_ckpt: Path | dict, kind: WeightsKind, allow_pickle: bool = False) -> None:
    """Fill a materialized (sharded) model from a HF folder or a DCP checkpoint (each rank reads its slices),
    or from rank 0's full state dict (kind "rank0": the other ranks pass {}). Every route first checks that
    the weights' names are exactly the model's (check_keys), on every rank, so no parameter is ever left
    with the uninitialized storage `materialize` gave it."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    if kind == "rank0":
        _broadcast_from_rank0(model, folder_or_ckpt, "the fresh model's initial weights")
        return
    sd = model_keys(model)  # the parameters themselves (their local shards): DCP reads into them in place
    if kind == "dcp":
        meta = dcp.FileSystemReader(str(folder_or_ckpt)).read_metadata().state_dict_metadata
        check_keys(model, {k[len("model."):] for k in meta if k.startswith("model.")}, str(folder_or_ckpt))
        dcp.load({"model": sd}, checkpoint_id=str(folder_or_ckpt))
        return
    refuse_remote_code(folder_or_ckpt)
    fmt, files = weight_files(folder_or_ckpt, allow_pickle)
    if fmt == "pickle":
        _load_pickled(model, files)
        return
    _drop_unindexed(folder_or_ckpt, files)
    check_keys(model, _safetensors_keys(files), f"{folder_or_ckpt} (safetensors)")
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
    _broadcast_from_rank0(model, full, f"{files[0].parent} (pickled {', '.join(f.name for f in files)})")


def _broadcast_from_rank0(model: nn.Module, full: dict, where: str) -> None:
    """Rank 0's full state dict into every rank's shards, one tensor at a time (the other ranks pass {}).

    Only rank 0 sees the names: it checks them and every rank learns the verdict before any tensor moves,
    so a bad file fails on all ranks with rank 0's message instead of hanging the others.
    """
    import torch.distributed as dist

    several = dist.is_initialized() and dist.get_world_size() > 1
    verdict: list = [None]
    if not several or dist.get_rank() == 0:
        try:
            check_keys(model, set(full), where)
        except WeightKeysError as e:
            verdict[0] = str(e)
    if several:
        dist.broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        raise WeightKeysError(verdict[0])
    # the names are the model's (checked above); strict=False: the other ranks pass {}, a tied head may be absent
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=dist.is_initialized(), strict=False)
    set_model_state_dict(model, full, options=options)

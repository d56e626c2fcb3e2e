"""torch.distributed.checkpoint loading that never runs code from the checkpoint's files.

Stock DCP unpickles two things with Python's full pickle: the `.metadata` file (FileSystemReader
uses `pickle.load`) and every non-tensor value (DefaultLoadPlanner uses `torch.load(weights_only=
False)`, e.g. the optimizer's lr and betas). A crafted checkpoint could run any code there. Here:

* `.metadata` is read by an unpickler that resolves only DCP's own metadata classes, torch.Size,
  dtypes, layouts and paths: any other global (os.system, builtins.eval, ...) is refused;
* its storage entries must name plain files of the checkpoint folder (no `../`, no absolute path);
* non-tensor values load with torch's weights-only unpickler (containers of numbers and strings);
* tensors already load with `weights_only=True` in DCP itself.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint._nested_dict import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata

METADATA = ".metadata"
_PATH_MODULES = {"pathlib", "pathlib._local"}
_PATH_NAMES = {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path", "PurePath"}


class CheckpointReadError(ValueError):
    """DCP could not read a checkpoint (a file missing or unreadable, a key absent): the first rank's reason."""


class UnsafeCheckpointError(CheckpointReadError):
    """A checkpoint file asks to load something other than tensors and plain values."""


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves only the globals a DCP metadata file legitimately holds (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == dcp_metadata.__name__:
            obj = vars(dcp_metadata).get(name)
            if isinstance(obj, type) and obj.__module__ == module:
                return obj
        elif (module, name) == ("torch.distributed.checkpoint.filesystem", "_StorageInfo"):
            from torch.distributed.checkpoint.filesystem import _StorageInfo

            return _StorageInfo
        elif module == "torch" and name == "Size":
            return torch.Size
        elif module == "torch" and isinstance(vars(torch).get(name), torch.dtype):
            return vars(torch)[name]
        elif (module, name) == ("torch.serialization", "_get_layout"):
            from torch.serialization import _get_layout

            return _get_layout
        elif module in _PATH_MODULES and name in _PATH_NAMES:
            import pathlib

            return getattr(pathlib, name)
        elif (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a checkpoint's metadata never needs")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("holds a persistent reference, which a checkpoint's metadata never needs")


def read_metadata(folder: Path, allowed_files: set[str] | None = None) -> Metadata:
    """The DCP metadata of `folder`, read without running code; its data files must be in `allowed_files`."""
    path = Path(folder) / METADATA
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a torch.distributed.checkpoint folder (no {METADATA})")
    try:
        with open(path, "rb") as f:
            meta = _MetadataUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
        raise UnsafeCheckpointError(f"{path}: not a checkpoint metadata file continua will read ({e})") from None
    if not isinstance(meta, Metadata):
        raise UnsafeCheckpointError(f"{path}: holds a {type(meta).__name__}, not checkpoint metadata")
    for info in (meta.storage_data or {}).values():
        rel = getattr(info, "relative_path", None)
        if not isinstance(rel, str) or Path(rel).name != rel or rel in ("", ".", "..") or \
                (allowed_files is not None and rel not in allowed_files):
            raise UnsafeCheckpointError(f"{path}: points at {rel!r}, not a data file of this checkpoint")
    return meta


class _Reader(FileSystemReader):
    """FileSystemReader that hands DCP the metadata `read_metadata` checked (never the rank-local files)."""

    def __init__(self, folder: Path, meta: Metadata):
        super().__init__(folder)
        self._meta = meta

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if kwargs.get("rank") is not None:
            raise UnsafeCheckpointError("rank-local checkpoint metadata is not read")
        meta = dataclasses.replace(self._meta)
        if meta.storage_meta is None:
            meta.storage_meta = dcp_metadata.StorageMeta()
        meta.storage_meta.load_id = self.load_id
        return meta


class _Planner(DefaultLoadPlanner):
    """DefaultLoadPlanner whose non-tensor values load with torch's weights-only unpickler."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(f"value {fqn!r} is not plain data ({weights_only_reason(e)})") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def load(state_dict: dict, folder: Path, allowed_files: set[str] | None = None, partial: bool = False) -> None:
    """dcp.load into `state_dict` (in place) from `folder`, with the checks above."""
    meta = read_metadata(folder, allowed_files)
    try:
        dcp.load(state_dict, storage_reader=_Reader(Path(folder), meta), planner=_Planner(allow_partial_load=partial))
    except CheckpointException as e:  # DCP wraps each rank's failure (a BaseException): raise one plain error
        causes = [f[0] if isinstance(f, tuple) else f for f in e.failures.values()] or [e]
        unsafe = [c for c in causes if isinstance(c, UnsafeCheckpointError)]
        if unsafe:
            raise UnsafeCheckpointError(f"{folder}: {unsafe[0]}") from None
        raise CheckpointReadError(f"{folder}: cannot be read ({_reason(causes[0])})") from None


def _reason(e: BaseException) -> str:
    """What broke, in a few words: never torch's advice to retry with weights_only=False (that would run a pickle)."""
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
        return f"not plain data: {weights_only_reason(e)}"
    text = " ".join(str(e).split())
    for end in (". This", ". If you"):  # torch's explanations after the first sentence
        text = text.split(end, 1)[0]
    return f"{type(e).__name__}: {text[:300]}"


def weights_only_reason(e: BaseException) -> str:
    """The one informative line of torch's long weights-only refusal (which global or type it met)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error" in ln:
            rest = ln.split("WeightsUnpickler error:", 1)[-1].strip()
            if rest or i + 1 < len(lines):
                return rest or lines[i + 1]
    # never torch's advice around it (retry with weights_only=False: that would run the pickle)
    plain = [ln for ln in lines if "weights_only" not in ln and not ln.startswith(("Please file", "Check the doc"))]
    return plain[0] if plain else f"{type(e).__name__} from torch's weights-only loader"

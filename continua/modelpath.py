"""One way to name a model in every stage: a Hugging Face folder, a `.gguf` file, or a folder holding one.

`[model] path`, `[curate] lm_scorers` and `[data] tokenizer` all go through `gguf_file` (is it GGUF, and
which file) and `require_gguf_reader` (transformers reads GGUF through the `gguf` package: checked
before any work starts, one line naming what to install, never a traceback from deep in a worker).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

GGUF_MIN_VERSION = (0, 10)


class ModelPathError(ValueError):
    """A path that names no model unambiguously (a folder with several .gguf files)."""


class GGUFReaderMissing(ValueError):
    """A `.gguf` model was named but the `gguf` package transformers needs to read it is not installed."""


def gguf_file(path: str | Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one `.gguf` of a folder without config.json
    (a folder with config.json is a Hugging Face folder, whatever else it holds); None when not GGUF."""
    p = Path(path)
    if p.is_file():
        return p if p.suffix == ".gguf" else None
    if p.is_dir() and not (p / "config.json").is_file():
        found = sorted(p.glob("*.gguf"))
        if len(found) > 1:
            raise ModelPathError(f"{p}: {len(found)} .gguf files ({', '.join(f.name for f in found[:3])}); "
                                 "name the one to use")
        return found[0] if found else None
    return None


def model_folder_and_gguf(path: str | Path) -> tuple[Path, dict]:
    """(folder to give transformers' from_pretrained, extra kwargs: {"gguf_file": name} for GGUF)."""
    p = Path(path)
    gguf = gguf_file(p)
    if gguf is None:
        return p, {}
    require_gguf_reader(gguf)
    return gguf.parent, {"gguf_file": gguf.name}


def require_gguf_reader(what: str | Path) -> None:
    """Raise one line naming the install command when the `gguf` package is missing or too old."""
    try:
        version = importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        raise GGUFReaderMissing(f"{what}: reading a .gguf model needs the `gguf` package: "
                                "pip install 'gguf>=0.10' (or reinstall continua: pip install -e .)") from None
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if parts < GGUF_MIN_VERSION:
        raise GGUFReaderMissing(f"{what}: reading a .gguf model needs gguf>=0.10, this environment has {version}: "
                                "pip install -U 'gguf>=0.10'")

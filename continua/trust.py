"""What a shared model or tokenizer folder may contain: data, never code.

One check used wherever the project loads a model or tokenizer (train/model.py, curate/lm_perplexity.py,
continua/tokenizer.py): a folder whose config asks for custom Python (`auto_map`) is refused, weights
are safetensors (or GGUF), and a pickled `.bin`/`.pt` checkpoint is accepted only when the recipe says
so, and is then read with torch's weights-only unpickler (no code runs on load).
"""

from __future__ import annotations

import json
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
# passed to every transformers from_pretrained call: no code from the folder, no downloads
HF_SAFE_KWARGS = {"trust_remote_code": False, "local_files_only": True}


class UntrustedModelError(ValueError):
    """The folder asks for something that would run code from it, or holds only pickled weights."""


def refuse_remote_code(folder: Path) -> None:
    """Raise naming the file when a config in `folder` maps classes to Python shipped with it (`auto_map`)."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    for name in CODE_CONFIGS:
        cfg = folder / name
        if not cfg.is_file():
            continue
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UntrustedModelError(f"{cfg}: not valid JSON: {e}") from e
        if isinstance(data, dict) and data.get("auto_map"):
            raise UntrustedModelError(
                f"{cfg}: 'auto_map' asks to run Python code shipped with the model ({', '.join(sorted(data['auto_map']))}); "
                "continua never runs remote code: use a model whose architecture transformers has built in")


def weight_files(folder: Path, allow_pickle: bool = False) -> tuple[str, list[Path]]:
    """('safetensors' | 'pickle', files) of a model folder; safetensors win when both are present."""
    folder = Path(folder)
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        return "safetensors", safetensors
    pickled = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file()) if folder.is_dir() else []
    if pickled and not allow_pickle:
        raise UntrustedModelError(
            f"{folder}: holds only pickled weights ({pickled[0].name}); pickles can run code when loaded. Convert "
            "them to safetensors, or set [model] allow_pickle = true to read them with torch's weights-only loader")
    if pickled:
        return "pickle", pickled
    raise UntrustedModelError(f"{folder}: no *.safetensors weights (and no .gguf file) in this folder")


def load_pickled_weights(path: Path) -> dict:
    """A pickled state dict through torch's weights-only unpickler (tensors and plain containers only)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - the unpickler raises many types; all mean "refused"
        raise UntrustedModelError(f"{path}: refused by torch's weights-only loader: {str(e).splitlines()[0]}") from e

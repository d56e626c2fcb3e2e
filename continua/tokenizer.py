"""The one place that loads a tokenizer and decides how documents become token ids.

Used by `curate` (token counts), `mix build` (shards) and `train` (vocabulary, eval), so all three
agree on the ids and on the BOS/EOS policy: every document is `[BOS]? tokens EOS`, with BOS only
when the tokenizer's own config asks for it (Llama-style `add_bos_token`), and EOS always, using
the tokenizer's declared EOS token (never a GPT-2 default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from continua.modelpath import GGUFReaderMissing, ModelPathError, gguf_file, require_gguf_reader
from continua.trust import HF_SAFE_KWARGS, UntrustedModelError, refuse_remote_code


class TokenizerError(ValueError):
    pass


def _token_text(value: object) -> str | None:
    if isinstance(value, dict):  # {"content": "</s>", ...} in older configs
        return value.get("content")
    return value if isinstance(value, str) else None


@dataclass
class TextTokenizer:
    """A fast `tokenizers.Tokenizer` plus the BOS/EOS policy read from the tokenizer's config."""

    path: Path
    eos_token: str
    bos_token: str | None
    add_bos: bool

    @cached_property
    def backend(self):
        return _load_backend(self.path)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @cached_property
    def eos_id(self) -> int:
        tid = self.backend.token_to_id(self.eos_token)
        if tid is None:
            raise TokenizerError(f"{self.path}: EOS token {self.eos_token!r} is not in the vocabulary")
        return tid

    @cached_property
    def bos_id(self) -> int | None:
        if not self.bos_token:
            return None
        return self.backend.token_to_id(self.bos_token)

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.vocab_size <= 65536 else np.dtype(np.uint32)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text with the document policy applied (BOS if wanted, EOS always)."""
        encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False) if hasattr(
            self.backend, "encode_batch_fast") else self.backend.encode_batch(texts, add_special_tokens=False)
        head = [self.bos_id] if self.add_bos and self.bos_id is not None else []
        eos = [self.eos_id]
        return [head + e.ids + eos for e in encodings]

    def count_batch(self, texts: list[str]) -> list[int]:
        extra = 1 + (1 if self.add_bos and self.bos_id is not None else 0)
        encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False) if hasattr(
            self.backend, "encode_batch_fast") else self.backend.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) + extra for e in encodings]

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    def describe(self) -> dict:
        return {"path": str(self.path), "vocab_size": self.vocab_size, "eos_token": self.eos_token,
                "eos_id": self.eos_id, "bos_token": self.bos_token, "bos_id": self.bos_id, "add_bos": self.add_bos,
                "token_dtype": self.token_dtype.name}

    def __getstate__(self):  # pickles cheaply to datatrove workers; the backend reloads lazily
        state = dict(self.__dict__)
        for lazy in ("backend", "eos_id", "bos_id"):
            state.pop(lazy, None)
        return state


def _gguf_file(path: Path) -> Path | None:
    """The .gguf file the path names (continua.modelpath's rule), its reader checked before it is used."""
    try:
        gguf = gguf_file(path)
        if gguf is not None:
            require_gguf_reader(gguf)
    except (GGUFReaderMissing, ModelPathError) as e:
        raise TokenizerError(str(e)) from e
    return gguf


def _load_backend(path: Path):
    from tokenizers import Tokenizer

    if path.is_file() and path.suffix == ".json":
        return Tokenizer.from_file(str(path))
    if path.is_dir() and (path / "tokenizer.json").exists():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    gguf = _gguf_file(path)
    if gguf is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **HF_SAFE_KWARGS)
        return tok.backend_tokenizer
    raise TokenizerError(f"{path}: no tokenizer.json or .gguf file found")


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """Load from a tokenizer.json file, a model folder holding one, or a folder with a GGUF file."""
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"tokenizer path does not exist: {path}")
    folder = path.parent if path.is_file() else path
    try:
        refuse_remote_code(folder)
    except UntrustedModelError as e:
        raise TokenizerError(str(e)) from e
    config: dict = {}
    cfg_file = folder / "tokenizer_config.json"
    if cfg_file.exists():
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    special_file = folder / "special_tokens_map.json"
    if special_file.exists():
        for k, v in json.loads(special_file.read_text(encoding="utf-8")).items():
            config.setdefault(k, v)
    eos = _token_text(config.get("eos_token"))
    bos = _token_text(config.get("bos_token"))
    add_bos = bool(config.get("add_bos_token", False))
    if eos is None and _gguf_file(path) is not None:
        from transformers import AutoTokenizer

        gguf = _gguf_file(path)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **HF_SAFE_KWARGS)
        eos, bos = tok.eos_token, tok.bos_token
        add_bos = bool(getattr(tok, "add_bos_token", False))
    tok = TextTokenizer(path=path, eos_token=eos or "", bos_token=bos, add_bos=add_bos)
    if eos is None:
        # no config: fall back to the conventional end-of-text tokens the vocabulary actually has
        for cand in ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"):
            if tok.backend.token_to_id(cand) is not None:
                tok.eos_token = cand
                break
        else:
            raise TokenizerError(f"{path}: cannot tell the EOS token (no tokenizer_config.json with eos_token, "
                                 "and none of <|endoftext|>, </s>, <|end_of_text|>, <eos> in the vocabulary)")
    _ = tok.eos_id  # fail now, naming the file, rather than in a worker
    return tok

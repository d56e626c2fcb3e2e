"""Tiny tokenizer, shards and recipes for the train tests: built on the fly, no downloads, no mix CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from continua.tokenizer import load_tokenizer
from mix.manifest import Manifest, SourceEntry, SplitEntry
from mix.shards import ShardWriter
from tiny_tokenizer import train_bpe

WORDS = {
    "med": "patient dose heart renal acute chronic therapy clinical trial cardiac lesion tumor insulin".split(),
    "web": "the city river music film game team season world history people school river market".split(),
}


def sentences(kind: str, n: int, rng: np.random.Generator) -> list[str]:
    words = WORDS[kind]
    return [" ".join(rng.choice(words, size=int(rng.integers(4, 40)))) + "." for _ in range(n)]


def make_tokenizer(folder: Path, vocab_size: int = 300) -> Path:
    """A byte-level BPE trained on the fixture's words, with </s> as EOS and no BOS."""
    rng = np.random.default_rng(0)
    return train_bpe(folder, sentences("med", 200, rng) + sentences("web", 200, rng), vocab_size, ["<s>", "</s>"],
                     {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "bos_token": "<s>",
                      "add_bos_token": False})


def make_shards(folder: Path, tok_folder: Path, plan: dict[str, dict], seed: int = 0,
                valid_docs: int = 12) -> Manifest:
    """Shards + manifest as `mix build` writes them. plan: name -> {docs, target_tokens?, epochs?, resample?}."""
    tok = load_tokenizer(tok_folder)
    rng = np.random.default_rng(seed)
    sources = {}
    for name, spec in plan.items():
        kind = spec.get("kind", name)
        splits = {}
        for split, n in (("train", spec["docs"]), ("valid", valid_docs)):
            docs = tok.encode_batch(sentences(kind, n, rng))
            rel = f"{name}/{split}/00000.ds"
            with ShardWriter(folder / rel, tok.token_dtype, "fixture") as w:
                for d in docs:
                    w.write(d)
            splits[split] = SplitEntry(docs=n, tokens=sum(map(len, docs)), shards=[rel])
        epochs = float(spec.get("epochs", 1.0))
        target = int(spec.get("target_tokens", round(splits["train"].tokens * epochs)))
        sources[name] = SourceEntry(role=spec.get("role", "domain"), epochs=epochs, target_tokens=target, share=0.0,
                                    train=splits["train"], valid=splits["valid"],
                                    resample=spec.get("resample", "fixed"))
    total = sum(s.target_tokens for s in sources.values())
    for s in sources.values():
        s.share = s.target_tokens / total
    manifest = Manifest(tokenizer=tok.describe(), seed=seed, sources=sources, total_target_tokens=total)
    manifest.save(folder)
    return manifest


def two_source_shards(root: Path, docs: int = 40, general_tokens: int = 800) -> Path:
    """Tokenizer + shards of a domain source (`med`, 2 epochs) and a general one (`web`); returns the shards folder."""
    tok = make_tokenizer(root / "tok")
    make_shards(root / "shards", tok, {"med": {"docs": docs, "epochs": 2.0},
                                       "web": {"docs": docs, "role": "general", "target_tokens": general_tokens}})
    return root / "shards"


TINY_MODEL = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
              "max_position_embeddings": 64}


def write_recipe(path: Path, out_dir: Path, shards: Path, train: dict | None = None, model: dict | None = None,
                 extra: str = "") -> Path:
    """A recipe for a tiny Llama on `shards`; `train`/`model` override keys of those sections."""
    tr = {"seq_len": 32, "batch_size": 4, "steps": 8, "peak_flops": 1e11, "tensorboard": False,
          "shards": str(shards), **(train or {})}
    md = {**TINY_MODEL, **(model or {})}

    def table(d: dict) -> str:
        return "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items())

    path.write_text(f"[run]\nout_dir = {json.dumps(str(out_dir))}\nseed = 0\n\n[model]\n{table(md)}\n\n"
                    f"[optim]\nlr = 3e-3\n\n[schedule]\nwarmup = 2\n\n[eval]\nevery = 4\nmax_batches = 2\nbatch_size = 4\n\n"
                    f"[train]\n{table(tr)}\n{extra}")
    return path

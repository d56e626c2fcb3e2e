"""Tiny corpora, a tiny byte-level BPE tokenizer and hand-made score tables for the mix tests.

The score tables follow docs/formats.md (doc_id, source, path, row, n_chars, n_tokens, text_hash
+ score columns) and are written directly, so these tests do not depend on `curate score`.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import polars as pl

from continua.documents import iter_documents
from continua.recipe import SourceConfig
from continua.tokenizer import load_tokenizer
from tiny_tokenizer import train_bpe

MEDICAL = ("patient clinical therapy dose tumor cardiac insulin diagnosis symptom chronic renal hepatic trial "
           "placebo cohort lesion biopsy infection antibiotic vaccine immune protein gene mutation").split()
GENERAL = ("river mountain history king city war music film football season album election village church "
           "painter novel bridge railway island festival").split()
CODE = "def return import class self value list dict loop print error string int float".split()


def make_text(rng: random.Random, vocab: list[str], n_words: int) -> str:
    words = [rng.choice(vocab) for _ in range(n_words)]
    return " ".join(words).capitalize() + "."


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return path


def make_tokenizer(folder: Path, texts: list[str], add_bos: bool = True) -> Path:
    """A byte-level BPE (exact round trip) with <s>/</s>, and a config asking for BOS."""
    return train_bpe(folder, texts, 400, ["<s>", "</s>"], {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": add_bos})


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def write_score_table(curate_dir: Path, name: str, jsonl: Path, tokenizer_dir: Path, scores: dict | None = None,
                      empty: bool = False) -> pl.DataFrame:
    """curate/NAME/scores/00000.parquet for the documents of `jsonl`; `scores` maps column -> fn(text, i)."""
    cfg = SourceConfig(paths=[jsonl])
    recs = list(iter_documents(name, cfg))
    tok = load_tokenizer(tokenizer_dir)
    n_tokens = tok.count_batch([r.text for r in recs])
    data = {
        "doc_id": [r.doc_id for r in recs], "source": [name] * len(recs), "path": [r.path for r in recs],
        "row": [r.row for r in recs], "n_chars": [len(r.text) for r in recs], "n_tokens": n_tokens,
        "text_hash": [text_hash(r.text) for r in recs],
    }
    for col, fn in (scores or {}).items():
        data[col] = [float(fn(r.text, i)) for i, r in enumerate(recs)]
    df = pl.DataFrame(data, schema_overrides={"row": pl.Int64, "n_chars": pl.Int64, "n_tokens": pl.Int64})
    if empty:
        df = df.head(0)
    out = curate_dir / name / "scores" / "00000.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(out)
    return df


def medical_quality(text: str, i: int) -> float:
    """A stand-in for a classifier: share of medical words, plus a little deterministic noise."""
    words = text.lower().rstrip(".").split()
    return sum(w in MEDICAL for w in words) / len(words) + (i % 7) * 1e-4


def write_recipe(path: Path, sources: dict[str, dict], tokenizer: Path, mix: dict | None = None,
                 train: dict | None = None, seed: int = 0) -> Path:
    from continua.recipe import toml_text

    table = {
        "run": {"out_dir": str(path.parent / "out"), "seed": seed, "name": "test"},
        "data": {"tokenizer": str(tokenizer), "sources": sources},
        "mix": mix or {},
        "train": train or {"seq_len": 64, "batch_size": 4},
    }
    path.write_text(toml_text(table))
    return path


def build_world(root: Path, n_domain: int = 2000, n_general: int = 600, dup_groups: int = 40, seed: int = 1,
                general_groups: dict[str, str] | None = None) -> dict:
    """A domain corpus of mixed quality (with exact duplicates), general sources, tokenizer, score tables."""
    rng = random.Random(seed)
    domain_texts = []
    for i in range(n_domain):
        p_med = rng.random()
        vocab_mix = [w for w in MEDICAL for _ in range(int(10 * p_med) + 1)] + GENERAL * 2
        domain_texts.append(make_text(rng, vocab_mix, rng.randint(8, 40)))
    for g in range(dup_groups):  # exact duplicates: each text three times
        t = make_text(rng, MEDICAL, 12 + g % 5) + f" Case {g}."
        domain_texts.extend([t, t, t])
    rng.shuffle(domain_texts)
    general_groups = general_groups or {"wiki": "Wikipedia", "arxiv": "ArXiv", "se": "StackExchange"}
    files = {"domain": write_jsonl(root / "data" / "domain.jsonl", domain_texts)}
    general_texts = {}
    for k, name in enumerate(general_groups):
        vocab = CODE if name == "se" else GENERAL
        general_texts[name] = [make_text(rng, vocab, rng.randint(10, 60)) for _ in range(n_general)]
        files[name] = write_jsonl(root / "data" / f"{name}.jsonl", general_texts[name])
    all_texts = domain_texts + [t for ts in general_texts.values() for t in ts]
    tokdir = make_tokenizer(root / "tok", all_texts)
    curate = root / "out" / "curate"
    tables = {"domain": write_score_table(curate, "domain", files["domain"], tokdir,
                                          {"fasttext_q": medical_quality, "ppl_ngram_med": lambda t, i: -medical_quality(t, i)})}
    for name in general_groups:
        tables[name] = write_score_table(curate, name, files[name], tokdir)
    sources = {"domain": {"paths": [str(files["domain"])], "role": "domain"}}
    for name, group in general_groups.items():
        sources[name] = {"paths": [str(files[name])], "role": "general", "group": group}
    return {"root": root, "files": files, "tok": tokdir, "tables": tables, "sources": sources, "curate": curate}

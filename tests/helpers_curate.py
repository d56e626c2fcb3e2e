"""Tiny generated corpora, tokenizer and recipes for the curate tests (no real data, no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tiny_tokenizer import train_bpe

MED = ("patient clinical dose therapy diagnosis symptoms treatment chronic infection cardiac renal tumor "
       "insulin trial cohort mortality prognosis lesion biopsy antibiotic syndrome").split()
GEN = ("river castle album football village election painter novel railway season mountain festival "
       "band university kingdom bridge island church poet harbour").split()
COMMON = "the of and a in to was is with for on by as at from that".split()


def sentence(rng: random.Random, vocab: list[str]) -> str:
    words = [rng.choice(vocab) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(rng.randint(8, 16))]
    return " ".join(words).capitalize() + "."


def document(rng: random.Random, vocab: list[str], n_sent: int | None = None) -> str:
    sents = [sentence(rng, vocab) for _ in range(n_sent or rng.randint(6, 12))]
    return "\n".join(" ".join(sents[i:i + 3]) for i in range(0, len(sents), 3))


def styled_texts(style: str, n: int, seed: int) -> list[str]:
    rng = random.Random(f"{style}-{seed}")
    vocab = MED if style == "med" else GEN
    return [document(rng, vocab) for _ in range(n)]


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({field: t}) + "\n")
    return path


def make_tokenizer(folder: Path) -> Path:
    """A 300-token byte-level BPE with </s> as EOS, trained on generated text."""
    return train_bpe(folder, styled_texts("med", 50, 99) + styled_texts("gen", 50, 99), 300, ["</s>"],
                     {"eos_token": "</s>"})


def write_recipe(path: Path, sources: dict[str, list[Path]], tokenizer: Path | None,
                 classifiers: dict[str, Path] | None = None, heuristics: list[str] | None = None,
                 extra: str = "") -> Path:
    lines = ["[run]", f'out_dir = "{path.parent / "out"}"', "", "[data]"]
    if tokenizer:
        lines.append(f'tokenizer = "{tokenizer}"')
    for name, paths in sources.items():
        lines += [f"[data.sources.{name}]", "paths = [" + ", ".join(f'"{p}"' for p in paths) + "]"]
    lines += ["", "[curate]", "heuristics = [" + ", ".join(f'"{h}"' for h in (heuristics or [])) + "]"]
    if classifiers:
        lines.append("[curate.classifiers]")
        lines += [f'{k} = "{v}"' for k, v in classifiers.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


_TINY_CLASSIFIER: list[Path] = []  # trained once per test process, copied to each caller


def train_tiny_classifier(tmp: Path) -> Path:
    """A fastText model separating the two styles (med = positive): `tmp`/style.bin and its metrics.

    Trained once per test process (train_classifier trains in a fresh process, so it is the same model
    whichever test asks first) and copied into each caller's folder."""
    import atexit
    import shutil
    import tempfile

    from curate.classifier import TrainParams, metrics_path, train_classifier

    if not _TINY_CLASSIFIER:
        folder = tempfile.mkdtemp(prefix="tiny-classifier-")
        atexit.register(shutil.rmtree, folder, True)
        model = Path(folder) / "style.bin"
        train_classifier(styled_texts("med", 150, 1), styled_texts("gen", 150, 2), model,
                         TrainParams(epochs=20, lr=0.5, dim=16, threads=1, valid_fraction=0.2, seed=0))
        _TINY_CLASSIFIER.append(model)
    cached = _TINY_CLASSIFIER[0]
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metrics_path(cached), metrics_path(tmp / "style.bin"))
    return Path(shutil.copyfile(cached, tmp / "style.bin"))


def write_chain_recipe(path: Path, out: Path, data: Path, tok: Path, extra: str = "") -> Path:
    """A recipe for the whole chain (curate -> mix -> train) on a tiny model; `extra` is appended after [train]
    (more [train] keys, then other tables)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
[run]
out_dir = "{out}"
seed = 1

[data]
tokenizer = "{tok}"

[data.sources.med]
paths = ["{data}"]
role = "domain"

[mix]
budget = "40%"
valid_fraction = 0.1
min_valid_docs = 4

[model]
hidden_size = 32
intermediate_size = 64
num_layers = 2
num_heads = 2
max_position_embeddings = 64

[eval]
num_evals = 2
max_batches = 1
batch_size = 2

[train]
seq_len = 16
batch_size = 2
peak_flops = 1e11
tensorboard = false
{extra}""")
    return path

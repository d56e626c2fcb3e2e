"""Prepare the three-stage experiment of docs/results.md ("A sequence of stages: infinite trunk + branches vs cosine").

    python bench/results/stages_prepare.py --data /work/shared/data --out /work/runs-stages

Stage 1 is general pre-training (a small Llama from scratch on an enwiki sample: pretrain.toml); stages 2
and 3 are one multi-stage CPT recipe, code then medical text, written twice with only [schedule] changed:
stages-infinite.toml (Ibrahim et al.'s infinite schedule: one warmup + cooldown, then constant across the
stages, each stage ending in an annealed branch from the trunk) and stages-cosine.toml (re-warm and re-decay
in every stage). Both train the same optimizer steps per stage: the infinite run's trunk (1 - anneal) x S plus
its branch anneal x S equals the cosine run's S.

Writes under --out (nothing here is committed):
  data/general.jsonl   a seeded sample of enwiki.jsonl (pre-training corpus, then replay)
  data/demo/code.jsonl the demo's code corpus (Python source of continua's base install, workflow.demo_corpus)
  data/medical.jsonl   a seeded sample of medical.jsonl
  tokenizer/           byte-level BPE trained on all three corpora
  pretrain.toml, stages-infinite.toml, stages-cosine.toml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from continua.io import atomic_open, write_json, write_text
from laws_prepare import sample  # this script's folder: the seeded corpus sample of the laws experiment
from workflow.demo_corpus import CorpusCaps, build_demo_corpora, train_demo_tokenizer

COMMON = """[data]
tokenizer = "{out}/tokenizer"

[curate]
heuristics = []

[optim]
lr = {lr}
weight_decay = 0.1

[eval]
num_evals = {num_evals}
max_batches = 4
batch_size = 8

[train]
steps = 0
seq_len = {seq_len}
batch_size = 8
nproc = 1
threads = 1   # one thread: small models on a shared CPU run far faster than with two
tensorboard = false
"""

PRETRAIN = """# Stage 1 of the three-stage experiment: a Llama pre-trained from scratch on an enwiki sample.
[run]
name = "pretrain"
out_dir = "{out}/pretrain"
seed = 0

[data.sources.general]
paths = ["{out}/data/general.jsonl"]
role = "domain"   # for pre-training, the general text is the corpus being learned
id_field = "id"

[mix]
budget = "{pretrain_tokens}"
valid_fraction = {valid}

[model]
hidden_size = {hidden}
intermediate_size = {inter}
num_layers = {layers}
num_heads = 4
max_position_embeddings = {max_pos}

[schedule]
name = "cosine"
warmup = 0.05
min_lr_ratio = 0.1

""" + COMMON

SCHEDULES = {
    "infinite": """[schedule]
name = "infinite"        # the trunk: warmup + cooldown once (fractions of the first stage's steps), then eta_const
warmup = {warmup}
cooldown_fraction = {cooldown}
eta_const_ratio = {eta_const}
min_lr_ratio = 0.1       # each branch anneals from eta_const to 0.1 x peak
""",
    "cosine": """[schedule]
name = "cosine"          # every stage re-warms (warmup of its own steps) and re-decays to 0.1 x peak
warmup = {warmup}
min_lr_ratio = 0.1
""",
}

STAGES = """# Stages 2 and 3 of the three-stage experiment ({schedule}): the enwiki-pre-trained base -> code -> medical.
[run]
name = "stages-{schedule}"
out_dir = "{out}/stages-{schedule}"
seed = 0

[data.sources.general]
paths = ["{out}/data/general.jsonl"]
role = "general"
id_field = "id"

[data.sources.code]
paths = ["{out}/data/demo/code.jsonl"]
role = "domain"
id_field = "id"

[data.sources.medical]
paths = ["{out}/data/medical.jsonl"]
role = "domain"
id_field = "id"

[mix]
budget = "100%"
replay = {replay}
valid_fraction = {valid}

[model]
path = "{out}/pretrain/train/export"

{schedule_block}
{common}
[[stages]]
name = "code"
domains = ["code"]
replay = ["general"]
mix = {{ budget = "100%", replay = {replay} }}
steps = 0
{anneal}
[[stages]]
name = "medical"
domains = ["medical"]
replay = ["general", "code"]
mix = {{ budget = "100%", replay = {replay}, replay_weights = {{ general = 0.6, code = 0.4 }} }}
steps = 0
{anneal}"""


def write_corpus(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)


def read_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/work/runs-stages"))
    ap.add_argument("--general-chars", type=int, default=3_000_000, help="enwiki sample (pre-training and replay)")
    ap.add_argument("--code-chars", type=int, default=600_000, help="code corpus: sets the code stage's steps")
    ap.add_argument("--medical-chars", type=int, default=600_000, help="medical sample: sets the medical stage's steps")
    ap.add_argument("--pretrain-tokens", default="500000")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--inter", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak LR of pre-training and of both CPT schedules")
    ap.add_argument("--replay", type=float, default=0.25)
    ap.add_argument("--anneal", type=float, default=0.2, help="infinite: each stage's annealed branch share")
    ap.add_argument("--warmup", type=float, default=0.05)
    ap.add_argument("--cooldown", type=float, default=0.5, help="infinite: cooldown share of the first stage")
    ap.add_argument("--eta-const", type=float, default=0.55, help="infinite: eta_const / peak")
    ap.add_argument("--num-evals", type=int, default=12, help="evaluations per stage (log-spaced from its start)")
    ap.add_argument("--valid", type=float, default=0.05, help="share of each source held out for validation")
    args = ap.parse_args(argv)
    if args.warmup + args.cooldown > 1 - args.anneal:
        ap.error(f"--warmup + --cooldown ({args.warmup} + {args.cooldown}) must fit in the first stage's trunk "
                 f"(1 - --anneal = {1 - args.anneal})")
    out = args.out.resolve()
    data = out / "data"
    for name, chars in (("general", args.general_chars), ("medical", args.medical_chars)):
        if not (data / f"{name}.jsonl").exists():  # a re-run keeps the files (and what was built of them)
            source = args.data / name / ("enwiki.jsonl" if name == "general" else "medical.jsonl")
            write_corpus(data / f"{name}.jsonl", sample(source, chars, seed=0))
    if not (data / "demo" / "code.jsonl").exists():
        # the demo's code corpus; its general and reference corpora are not used here (kept small)
        write_json(data / "demo" / "corpora.json",
                   build_demo_corpora(data / "demo", CorpusCaps(general_chars=50_000, code_chars=args.code_chars,
                                                                reference_chars=50_000)))
    corpora = {"general": data / "general.jsonl", "code": data / "demo" / "code.jsonl",
               "medical": data / "medical.jsonl"}
    texts = {name: read_texts(path) for name, path in corpora.items()}
    if not (out / "tokenizer" / "tokenizer.json").exists():
        general = texts["general"][: len(texts["general"]) // 3]  # about as much English as each domain
        train_demo_tokenizer(iter(general + texts["code"] + texts["medical"]), out / "tokenizer", vocab_size=args.vocab)
    shared = dict(out=out, lr=args.lr, num_evals=args.num_evals, seq_len=args.seq_len, valid=args.valid)
    write_text(out / "pretrain.toml", PRETRAIN.format(
        **shared, pretrain_tokens=args.pretrain_tokens, hidden=args.hidden, inter=args.inter, layers=args.layers,
        max_pos=max(256, args.seq_len)))
    for schedule, block in SCHEDULES.items():
        write_text(out / f"stages-{schedule}.toml", STAGES.format(
            **shared, schedule=schedule, replay=args.replay,
            anneal=(f"anneal = {args.anneal}   # the stage's last share of steps: an annealed branch from the trunk\n"
                    if schedule == "infinite" else ""),
            common=COMMON.format(**shared),
            schedule_block=block.format(warmup=args.warmup, cooldown=args.cooldown, eta_const=args.eta_const)))
    print({name: {"documents": len(t), "characters": sum(map(len, t))} for name, t in texts.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`train lm-eval RUN_DIR`: the recipe's benchmarks scored by EleutherAI's lm-evaluation-harness, offline.

Why: `train.mcq` scores the same benchmarks inside the loop, but published figures come from the
harness; running it on the run's `export/` makes the two comparable. The benchmark files are turned
into local harness tasks (a YAML and a JSONL per benchmark, under RUN_DIR/lm_eval/tasks): the items
`train.mcq.load_benchmark` reads, with its prompt, its options as continuations " {option}" and the
same `mcq_max_items` subset, so the harness's acc / acc_norm are train.mcq's, item for item.

BOS policy (both paths): a BOS token is prepended when the tokenizer's config says `add_bos_token`
(continua's `TextTokenizer.add_bos`), never an EOS. The harness gets `add_bos_token` set to that
policy (through a copy of the tokenizer with a BOS post-processor where transformers would ignore the
flag), and before it runs, that tokenizer is checked to encode prompts exactly as train.mcq does; a
mismatch is an error rather than silently different figures.

Offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are set before the harness is imported; its datasets
are the local JSONL files through the `json` builder (pip install 'continua[lm-eval]').
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from continua.io import write_json, write_text
from train.mcq import MCQItem, load_benchmarks

TASK_PREFIX = "continua_"


class HarnessError(RuntimeError):
    """lm-evaluation-harness is missing, or would not score what train.mcq scores."""


def task_config(name: str, data_file: Path) -> dict:
    """A harness multiple-choice task over a local JSONL of {prompt, options, answer} rows."""
    return {
        "task": TASK_PREFIX + name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",  # column names: the harness reads doc[column]
        "doc_to_choice": "options",
        "doc_to_target": "answer",
        "target_delimiter": " ",  # continuation " {option}", as train.mcq
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_tasks(benchmarks: dict[str, list[MCQItem]], folder: Path) -> list[str]:
    """One `<name>.yaml` + `<name>.jsonl` per benchmark in `folder`; returns the task names.
    The YAML is written as JSON, which YAML reads as is."""
    names = []
    for name, items in benchmarks.items():
        data = folder / f"{name}.jsonl"
        write_text(data, "".join(json.dumps({"id": it.id, "prompt": it.prompt, "options": list(it.options),
                                             "answer": it.answer}, ensure_ascii=False) + "\n" for it in items))
        write_text(folder / f"{name}.yaml", json.dumps(task_config(name, data), indent=2) + "\n")
        names.append(TASK_PREFIX + name)
    return names


def harness_tokenizer(export_dir: Path, folder: Path) -> Path:
    """The tokenizer folder the harness loads: the export's own, or, when continua's policy adds BOS but
    the export's tokenizer.json has no post-processor that does (a plain BPE file: transformers then
    ignores `add_bos_token`), a copy in `folder` whose post-processor prepends BOS."""
    from tokenizers import Tokenizer, processors

    from continua.tokenizer import load_tokenizer

    ours = load_tokenizer(export_dir)
    if not ours.add_bos or ours.bos_id is None:
        return export_dir
    backend = Tokenizer.from_file(str(export_dir / "tokenizer.json"))
    probe = backend.encode("a", add_special_tokens=True).ids
    if probe and probe[0] == ours.bos_id:
        return export_dir
    template = processors.TemplateProcessing(single=f"{ours.bos_token} $A", pair=f"{ours.bos_token} $A $B:1",
                                             special_tokens=[(ours.bos_token, ours.bos_id)])
    existing = backend.post_processor
    backend.post_processor = template if existing is None else processors.Sequence([existing, template])
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (export_dir / name).is_file():
            write_text(folder / name, (export_dir / name).read_text(encoding="utf-8"))
    write_text(folder / "tokenizer.json", backend.to_str())
    return folder


def check_tokenization(export_dir: Path, tokenizer_dir: Path, items: list[MCQItem]) -> bool:
    """continua's BOS policy for the export's tokenizer, after checking that the transformers tokenizer
    the harness loads from `tokenizer_dir` encodes prompts + options exactly as train.mcq does."""
    from transformers import AutoTokenizer

    from continua.tokenizer import load_tokenizer
    from train.mcq import build_requests

    ours = load_tokenizer(export_dir)
    theirs = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sample = items[:4]
    expected = [list(r.tokens) for r in build_requests(ours, sample)]
    got = [theirs.encode(it.prompt + " " + opt, add_special_tokens=ours.add_bos) for it in sample for opt in it.options]
    if got != expected:
        raise HarnessError(f"{tokenizer_dir}: the transformers tokenizer encodes {sample[0].where} as {got[0][:8]}..., "
                           f"train.mcq as {expected[0][:8]}... (BOS policy add_bos_token={ours.add_bos}); "
                           "the harness's figures would not be train.mcq's")
    return ours.add_bos


def run_harness(export_dir: Path, tokenizer_dir: Path, task_dir: Path, tasks: list[str], add_bos: bool,
                device: str = "cpu", batch_size: int = 8, dtype: str = "float32") -> dict:
    """`lm_eval.simple_evaluate` on the local tasks with per-item samples; raises HarnessError when missing."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise HarnessError("lm-evaluation-harness is not installed: pip install 'continua[lm-eval]'") from e
    model_args = (f"pretrained={export_dir.resolve()},tokenizer={tokenizer_dir.resolve()},dtype={dtype},"
                  f"add_bos_token={add_bos}")
    return lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=tasks, device=device,
                                   batch_size=batch_size, log_samples=True,
                                   task_manager=TaskManager(include_path=str(task_dir.resolve()),
                                                            include_defaults=False))


def item_scores(results: dict, task: str) -> dict[int, list[float]]:
    """doc index -> log-likelihood of each option, from the harness's samples."""
    return {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in results["samples"][task]}


def lm_eval_command(run_dir: Path, device: str, batch_size: int, dtype: str) -> int:
    """Write the tasks, run the harness on RUN_DIR/export, save RUN_DIR/lm_eval/results.json, print the table."""
    from continua.recipe import load_recipe

    recipe_file, export_dir = run_dir / "recipe.toml", run_dir / "export"
    if not recipe_file.is_file() or not (export_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished `train run` folder (needs recipe.toml and export/)")
    recipe = load_recipe(recipe_file)
    if not recipe.eval.benchmarks:
        raise ValueError(f"{recipe_file}: [eval] benchmarks is empty: nothing for the harness to score")
    benchmarks = load_benchmarks(recipe.eval.benchmarks, recipe.eval.mcq_max_items)
    out = run_dir / "lm_eval"
    tasks = write_tasks(benchmarks, out / "tasks")
    tokenizer_dir = harness_tokenizer(export_dir, out / "tokenizer")
    add_bos = check_tokenization(export_dir, tokenizer_dir, next(iter(benchmarks.values())))
    results = run_harness(export_dir, tokenizer_dir, out / "tasks", tasks, add_bos, device, batch_size, dtype)
    table = {}
    for name, items in benchmarks.items():
        r = results["results"][TASK_PREFIX + name]
        table[name] = {"acc": r["acc,none"], "acc_norm": r["acc_norm,none"], "count": len(items)}
        scores = item_scores(results, TASK_PREFIX + name)
        write_text(out / f"items_{name}.jsonl", "".join(
            json.dumps({"id": it.id, "answer": it.answer, "loglikelihoods": scores[i]}) + "\n"
            for i, it in enumerate(items)))
    write_json(out / "results.json", {"export": str(export_dir.resolve()), "bos": add_bos, "dtype": dtype,
                                      "lm_eval_version": results.get("config", {}).get("lm_eval_version")
                                      or _version(), "benchmarks": table})
    loop = last_loop_scores(run_dir)
    print(f"lm-evaluation-harness on {export_dir} (BOS {'on' if add_bos else 'off'}, {dtype}, zero-shot):")
    print(f"  {'benchmark':20s} {'acc':>7s} {'acc_norm':>9s} {'items':>6s}   in-loop acc / acc_norm (train.mcq)")
    for name, r in table.items():
        ours = loop.get(name)
        also = f"{ours[0]:.4f} / {ours[1]:.4f}" if ours else "-"
        print(f"  {name:20s} {r['acc']:7.4f} {r['acc_norm']:9.4f} {r['count']:6d}   {also}")
    print(f"wrote {out / 'results.json'}, per-item log-likelihoods in {out}/items_*.jsonl, tasks in {out / 'tasks'}")
    return 0


def last_loop_scores(run_dir: Path) -> dict[str, tuple[float, float]]:
    """benchmark -> (acc, acc_norm) of the run's last in-loop evaluation (metrics.jsonl), when it scored any."""
    from train.gap import read_metrics

    metrics = run_dir / "metrics.jsonl"
    evals = [r for r in read_metrics(metrics) if r.get("kind") == "eval"] if metrics.is_file() else []
    last = evals[-1]["metrics"] if evals else {}
    return {k.split("/", 1)[1]: (v, last.get("acc_norm/" + k.split("/", 1)[1], float("nan")))
            for k, v in last.items() if k.startswith("acc/")}


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None

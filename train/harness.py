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
    _quiet_git_hash()
    return lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=tasks, device=device,
                                   batch_size=batch_size, log_samples=True,
                                   task_manager=TaskManager(include_path=str(task_dir.resolve()),
                                                            include_defaults=False))


def _quiet_git_hash() -> None:
    """The harness records `git describe` of the current folder, and git prints "fatal: not a git repository"
    to the terminal outside one. The folder a user runs from says nothing about the models: not asked."""
    import lm_eval.evaluator

    if hasattr(lm_eval.evaluator, "get_git_commit_hash"):
        lm_eval.evaluator.get_git_commit_hash = lambda: None


def item_scores(results: dict, task: str) -> dict[int, list[float]]:
    """doc index -> log-likelihood of each option, from the harness's samples."""
    return {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in results["samples"][task]}


def base_model_folder(run_dir: Path, model_path: Path | None) -> tuple[Path | None, str]:
    """(Hugging Face folder of the run's base model, or None; why not). A GGUF base is read from the folder
    `train run` de-quantized it into (RUN_DIR/base_model); a checkpoint of an earlier run from its export/."""
    if model_path is None:
        return None, "the run started from a fresh model (no [model] path): there is no base to score"
    p = Path(model_path)
    if p.suffix == ".gguf" or (p.is_dir() and not (p / "config.json").is_file() and any(p.glob("*.gguf"))):
        p = run_dir / "base_model"
    elif (p / ".metadata").is_file() and p.parent.name == "checkpoints":
        p = p.parent.parent / "export"
    if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return p, ""
    return None, f"{p}: not a Hugging Face folder with safetensors weights; name one with --base"


def _score_model(model_dir: Path, benchmarks: dict[str, list[MCQItem]], out: Path, task_dir: Path,
                 tasks: list[str], device: str, batch_size: int, dtype: str, prefix: str) -> tuple[dict, bool, dict]:
    """Run the harness on one model folder: ({name: acc, acc_norm, count, answers}, BOS policy, raw results);
    per-item log-likelihoods and the chosen answer into OUT/{prefix}items_NAME.jsonl."""
    from train.mcq import answer_labels, answer_shares

    tokenizer_dir = harness_tokenizer(model_dir, out / f"{prefix}tokenizer")
    add_bos = check_tokenization(model_dir, tokenizer_dir, next(iter(benchmarks.values())))
    results = run_harness(model_dir, tokenizer_dir, task_dir, tasks, add_bos, device, batch_size, dtype)
    table = {}
    for name, items in benchmarks.items():
        r = results["results"][TASK_PREFIX + name]
        scores = item_scores(results, TASK_PREFIX + name)
        labels = answer_labels(items)
        rows = [{"id": it.id, "answer": it.answer, "chosen": int(max(range(len(scores[i])), key=scores[i].__getitem__)),
                 "loglikelihoods": scores[i]} for i, it in enumerate(items)]
        write_text(out / f"{prefix}items_{name}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        shares = answer_shares([{"answer": labels[x["answer"]], "chosen": labels[x["chosen"]]} for x in rows], labels)
        table[name] = {"acc": r["acc,none"], "acc_norm": r["acc_norm,none"], "count": len(items),
                       "answers": {lab: s["chosen"] for lab, s in shares.items()},
                       "gold": {lab: s["gold"] for lab, s in shares.items()}}
    return table, add_bos, results


def lm_eval_command(run_dir: Path, device: str, batch_size: int, dtype: str, base: Path | None = None,
                    score_base: bool = True) -> int:
    """Write the tasks, run the harness on RUN_DIR/export and on the base model (the run's [model] path, or
    `base`), save RUN_DIR/lm_eval/results.json, print base and CPT side by side."""
    from continua.recipe import load_recipe

    recipe_file, export_dir = run_dir / "recipe.toml", run_dir / "export"
    if not recipe_file.is_file() or not (export_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished `train run` folder (needs recipe.toml and export/)")
    recipe = load_recipe(recipe_file)
    if not recipe.eval.benchmarks:
        raise ValueError(f"{recipe_file}: [eval] benchmarks is empty: nothing for the harness to score")
    base_dir, why = (None, "--no-base") if not score_base else (
        (Path(base), "") if base is not None else base_model_folder(run_dir, recipe.model.path))
    if base is not None and not (Path(base) / "config.json").is_file():
        raise FileNotFoundError(f"--base {base}: not a Hugging Face model folder (no config.json)")
    benchmarks = load_benchmarks(recipe.eval.benchmarks, recipe.eval.mcq_max_items)
    out = run_dir / "lm_eval"
    tasks = write_tasks(benchmarks, out / "tasks")
    table, add_bos, results = _score_model(export_dir, benchmarks, out, out / "tasks", tasks, device, batch_size,
                                           dtype, prefix="")
    base_table = None
    if base_dir is not None:
        base_table, _, _ = _score_model(base_dir, benchmarks, out, out / "tasks", tasks, device, batch_size, dtype,
                                        prefix="base_")
    write_json(out / "results.json", {"export": str(export_dir.resolve()), "bos": add_bos, "dtype": dtype,
                                      "lm_eval_version": results.get("config", {}).get("lm_eval_version")
                                      or _version(), "benchmarks": table,
                                      "base": str(base_dir.resolve()) if base_dir is not None else None,
                                      "base_benchmarks": base_table})
    print_side_by_side(export_dir, base_dir, why, add_bos, dtype, table, base_table, last_loop_scores(run_dir))
    print(f"wrote {out / 'results.json'}, per-item log-likelihoods and chosen answers in {out}/*items_*.jsonl, "
          f"tasks in {out / 'tasks'}")
    return 0


def print_side_by_side(export_dir: Path, base_dir: Path | None, why: str, add_bos: bool, dtype: str, table: dict,
                       base_table: dict | None, loop: dict) -> None:
    """acc / acc_norm of the base and of the CPT export, the change, and which answers each one gives."""
    print(f"lm-evaluation-harness on {export_dir} (BOS {'on' if add_bos else 'off'}, {dtype}, zero-shot)"
          + (f", base {base_dir}:" if base_dir is not None else f"; base not scored ({why}):"))
    head = f"  {'benchmark':20s} {'acc':>7s} {'acc_norm':>9s} {'items':>6s}"
    if base_table:
        head += f" {'base acc':>9s} {'change':>8s} {'base acc_norm':>14s}"
    print(head + "   in-loop acc / acc_norm (train.mcq)")
    for name, r in table.items():
        ours = loop.get(name)
        also = f"{ours[0]:.4f} / {ours[1]:.4f}" if ours else "-"
        line = f"  {name:20s} {r['acc']:7.4f} {r['acc_norm']:9.4f} {r['count']:6d}"
        if base_table:
            b = base_table[name]
            line += f" {b['acc']:9.4f} {r['acc'] - b['acc']:+8.4f} {b['acc_norm']:14.4f}"
        print(line + f"   {also}")
    for name, r in table.items():  # answer bias, label by label: a model that says "no" to everything shows here
        shares = ", ".join(f"{lab} {100 * r['gold'][lab]:.0f}%" for lab in r["answers"])
        chosen = ", ".join(f"{lab} {100 * v:.0f}%" for lab, v in r["answers"].items())
        line = f"  {name}: answers chosen {chosen} (CPT)"
        if base_table:
            line += "; " + ", ".join(f"{lab} {100 * v:.0f}%" for lab, v in base_table[name]["answers"].items()) + " (base)"
        print(line + f"; gold {shares}")


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

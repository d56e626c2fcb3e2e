"""`train lm-eval`: local harness tasks, and lm-evaluation-harness scoring every item as train.mcq does."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from continua.tokenizer import load_tokenizer
from train.harness import TASK_PREFIX, HarnessError, check_tokenization, harness_tokenizer, write_tasks
from train.mcq import evaluate_mcq, load_benchmark
from train.model import copy_tokenizer

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
TEXTS = ["the heart pumps blood through the body", "a question about the lungs and the liver",
         "answer yes or no or maybe", "the kidney filters the blood", "context of the study was small"] * 20
MEDQA = [{"id": f"q{i}", "question": f"what does the {w} do", "options": {"A": "pumps blood", "B": "filters",
          "C": "nothing at all", "D": "maybe"}, "answer": "ABCD"[i % 4]}
         for i, w in enumerate(["heart", "kidney", "liver", "lungs", "body", "blood"])]
PUBMED = [{"question": f"was the study {w}", "context": "context of the study was small",
           "answer": ["yes", "no", "maybe"][i % 3]} for i, w in enumerate(["small", "large", "done"])]


def export_folder(tmp: Path, add_bos: bool) -> Path:
    """A tiny Llama saved as `train run` exports it: save_pretrained + the tokenizer files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    (tmp / "tok").mkdir()
    tok.save(str(tmp / "tok" / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                      bos_token_id=0, eos_token_id=1)
    export = tmp / "export"
    LlamaForCausalLM(cfg).save_pretrained(str(export))
    copy_tokenizer(tmp / "tok" / "tokenizer.json", export,
                   {"eos_token": "</s>", "bos_token": "<s>", "add_bos": add_bos})
    return export


def benchmarks(tmp: Path) -> dict:
    (tmp / "medqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MEDQA))
    (tmp / "pubmedqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PUBMED))
    return {"medqa": load_benchmark(tmp / "medqa.jsonl"), "pubmedqa": load_benchmark(tmp / "pubmedqa.jsonl")}


def test_task_files(tmp_path):
    bench = benchmarks(tmp_path)
    names = write_tasks(bench, tmp_path / "tasks")
    assert names == [TASK_PREFIX + "medqa", TASK_PREFIX + "pubmedqa"]
    cfg = json.loads((tmp_path / "tasks" / "medqa.yaml").read_text())
    assert cfg["output_type"] == "multiple_choice" and cfg["target_delimiter"] == " "
    rows = [json.loads(x) for x in (tmp_path / "tasks" / "medqa.jsonl").read_text().splitlines()]
    assert rows[1] == {"id": "q1", "prompt": "Question: what does the kidney do\nAnswer:",
                       "options": ["pumps blood", "filters", "nothing at all", "maybe"], "answer": 1}


@pytest.mark.parametrize("add_bos", [True, False])
def test_transformers_tokenizer_follows_the_bos_policy(tmp_path, add_bos):
    export = export_folder(tmp_path, add_bos)
    folder = harness_tokenizer(export, tmp_path / "harness_tok")
    assert folder == (tmp_path / "harness_tok" if add_bos else export)  # a plain BPE file adds no BOS itself
    assert check_tokenization(export, folder, benchmarks(tmp_path)["medqa"]) is add_bos
    if add_bos:
        with pytest.raises(HarnessError, match="add_bos_token=True"):  # transformers ignores the config flag
            check_tokenization(export, export, benchmarks(tmp_path)["medqa"])


@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-evaluation-harness is not installed (pip install 'continua[lm-eval]')")
def test_lm_eval_command_agrees_with_train_mcq_per_item(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from train.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    export = export_folder(run_dir, add_bos=True)
    bench = benchmarks(tmp_path)
    (run_dir / "recipe.toml").write_text(f'[run]\nout_dir = "{tmp_path}"\n\n[eval]\nbenchmarks = '
                                         f'{{medqa = "{tmp_path / "medqa.jsonl"}", pubmedqa = "{tmp_path / "pubmedqa.jsonl"}"}}\n')
    (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 9, "metrics": {
        "loss/x": 2.0, "acc/medqa": 0.5, "acc_norm/medqa": 0.25}}) + "\n")
    assert main(["lm-eval", str(run_dir), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "BOS on" in out and "pubmedqa" in out
    assert [line for line in out.splitlines() if line.strip().startswith("medqa")][0].endswith("0.5000 / 0.2500")
    results = json.loads((run_dir / "lm_eval" / "results.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32).eval()
    tok = load_tokenizer(export)
    for name, items in bench.items():
        ours = evaluate_mcq(model, tok, items, torch.device("cpu"), return_scores=True)
        rows = [json.loads(x) for x in (run_dir / "lm_eval" / f"items_{name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == [it.id for it in items]
        np.testing.assert_allclose([r["loglikelihoods"] for r in rows], ours["scores"], rtol=1e-4, atol=1e-4)
        assert results["benchmarks"][name]["acc"] == pytest.approx(ours["acc"])
        assert results["benchmarks"][name]["acc_norm"] == pytest.approx(ours["acc_norm"])
    assert main(["lm-eval", str(tmp_path / "nowhere")]) == 2  # not a run folder: a usage error, one line
    assert "not a finished `train run` folder" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-evaluation-harness not installed (pip install 'continua[lm-eval]')")
def test_lm_eval_scores_the_base_model_the_same_way_and_prints_both(tmp_path, capfd, monkeypatch):
    from transformers import AutoModelForCausalLM

    from train.cli import main

    monkeypatch.chdir(tmp_path)  # outside any git repository, as a user's data folder is

    (tmp_path / "base_src").mkdir()
    base = export_folder(tmp_path / "base_src", add_bos=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    export = export_folder(run_dir, add_bos=False)
    torch.manual_seed(7)  # the "trained" export: other weights than the base
    model = AutoModelForCausalLM.from_pretrained(str(export))
    for p in model.parameters():
        p.data += 0.5 * torch.randn_like(p)
    model.save_pretrained(str(export))
    bench = benchmarks(tmp_path)
    (run_dir / "recipe.toml").write_text(f'[run]\nout_dir = "{tmp_path}"\n\n[model]\npath = "{base}"\n\n[eval]\n'
                                         f'benchmarks = {{pubmedqa = "{tmp_path / "pubmedqa.jsonl"}"}}\n')
    assert main(["lm-eval", str(run_dir), "--batch-size", "4"]) == 0
    captured = capfd.readouterr()
    out = captured.out
    results = json.loads((run_dir / "lm_eval" / "results.json").read_text())
    assert results["base"] == str(base.resolve())
    items = bench["pubmedqa"]
    for folder, table in ((base, results["base_benchmarks"]), (export, results["benchmarks"])):
        ours = evaluate_mcq(AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval(),
                            load_tokenizer(folder), items, torch.device("cpu"), return_scores=True)
        assert table["pubmedqa"]["acc"] == pytest.approx(ours["acc"])
        picked = [int(np.argmax(s)) for s in ours["scores"]]
        assert table["pubmedqa"]["answers"] == {lab: picked.count(i) / 3 for i, lab in enumerate(["yes", "no", "maybe"])}
    line = [x for x in out.splitlines() if x.strip().startswith("pubmedqa ")][0].split()
    b, c = results["base_benchmarks"]["pubmedqa"]["acc"], results["benchmarks"]["pubmedqa"]["acc"]
    assert line[1] == f"{c:.4f}" and line[4] == f"{b:.4f}" and line[5] == f"{c - b:+.4f}"
    assert "pubmedqa: answers chosen yes " in out and "(base); gold yes 33%, no 33%, maybe 33%" in out
    assert (run_dir / "lm_eval" / "base_items_pubmedqa.jsonl").is_file()
    assert "fatal: not a git repository" not in captured.err  # the harness asks git about its own folder
    assert main(["lm-eval", str(run_dir), "--no-base"]) == 0
    assert json.loads((run_dir / "lm_eval" / "results.json").read_text())["base_benchmarks"] is None

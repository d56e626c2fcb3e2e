"""Base models end to end: GGUF, HF folders and DCP checkpoints loaded on the meta device, the chunked
loss, preflight (one line, exit 2), the rendezvous launch, and the refusal of remote code and pickles."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from gguf_fixture import write_llama_gguf
from train_fixtures import make_shards, make_tokenizer, write_recipe

from continua.recipe import load_recipe
from continua.trust import UntrustedModelError
from train.cli import main
from train.gap import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tok = make_tokenizer(root / "tok")
    make_shards(root / "shards", tok, {"med": {"docs": 30, "epochs": 2.0}})
    return root / "shards"


def tiny_llama(tied: bool = True, seed: int = 1):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        tie_word_embeddings=tied))


def last_eval(run_dir: Path) -> dict:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "eval"][-1]


def valid_loss(model, shards: Path) -> float:
    """The loss `train run` reports for source med, computed from plain logits ([eval] 2 batches x 4)."""
    from mix.shards import ShardSet
    from train.evaluate import validation_windows

    win = torch.as_tensor(validation_windows(ShardSet.open(shards / "med" / "valid"), 32, 2 * 4))
    with torch.no_grad():
        logits = model(input_ids=win[:, :-1]).logits
    return float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), win[:, 1:].reshape(-1)))


def test_chunked_loss_equals_the_plain_loss_in_values_and_gradients():
    from train.loss import CausalLMLoss, chunked_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(3, 37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True)
    y = torch.randint(0, 50, (3, 37))
    y[0, :5] = -100  # ignored positions: no loss, no gradient (as F.cross_entropy), still counted in the mean
    plain = F.cross_entropy((h @ w.T + bias).reshape(-1, 50), y.reshape(-1), reduction="sum") / y.numel()
    gh, gw, gb = torch.autograd.grad(plain, (h, w, bias))
    chunked = chunked_cross_entropy(h, w, y, bias, chunk_tokens=8)  # 111 positions: 13 full chunks and a partial one
    ch, cw, cb = torch.autograd.grad(chunked, (h, w, bias))
    assert abs(chunked.item() - plain.item()) < 1e-5
    assert (ch - gh).abs().max() < 1e-5 and (cw - gw).abs().max() < 1e-5 and (cb - gb).abs().max() < 1e-5

    model = tiny_llama(tied=False)
    x = torch.randint(0, 300, (2, 20))
    logits = model(input_ids=x[:, :-1]).logits
    want = F.cross_entropy(logits.reshape(-1, 300), x[:, 1:].reshape(-1))
    want_grad = torch.autograd.grad(want, model.lm_head.weight)[0]
    net = CausalLMLoss(model)
    assert dict(net.named_parameters()).keys() == {f"lm.{k}" for k, _ in model.named_parameters()}
    got = net(input_ids=x[:, :-1], targets=x[:, 1:])
    got_grad = torch.autograd.grad(got, model.lm_head.weight)[0]
    assert abs(got.item() - want.item()) < 1e-5 and (got_grad - want_grad).abs().max() < 1e-5
    assert net(input_ids=x).logits.shape == (2, 20, 300)  # without targets: the model's output
    assert net(input_ids=x, logits_to_keep=3).logits.shape == (2, 3, 300)

    class WithoutLogitsToKeep(type(model)):  # an architecture whose forward has no logits_to_keep
        def forward(self, input_ids=None, use_cache=None):
            return super().forward(input_ids=input_ids, use_cache=use_cache)

    other = WithoutLogitsToKeep(model.config)
    other.load_state_dict(model.state_dict())
    kept = CausalLMLoss(other)(input_ids=x, logits_to_keep=3).logits
    assert torch.allclose(kept, net(input_ids=x).logits[:, -3:], atol=1e-6)


def test_the_head_gradient_is_summed_over_chunks_in_fp32():
    """bf16 hidden states and head (FSDP's compute dtype on GPU): 64 chunks' head gradients summed in bf16
    lose the small ones; summed in fp32 the result is the bf16 computation's own rounding away from fp32."""
    from train.loss import chunked_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(2048, 32)
    w = torch.randn(64, 32) * 0.1
    y = torch.randint(0, 64, (2048,))
    w32 = w.clone().requires_grad_(True)
    exact = torch.autograd.grad(chunked_cross_entropy(h, w32, y, chunk_tokens=32), w32)[0]
    wb = w.to(torch.bfloat16).requires_grad_(True)
    got = torch.autograd.grad(chunked_cross_entropy(h.to(torch.bfloat16), wb, y, chunk_tokens=32), wb)[0]
    naive = torch.zeros_like(wb)  # what autograd did before: each chunk's bf16 share added into a bf16 sum
    for lo in range(0, 2048, 32):
        wc = wb.detach().clone().requires_grad_(True)
        part = F.cross_entropy(F.linear(h[lo:lo + 32].to(torch.bfloat16), wc).float(), y[lo:lo + 32],
                               reduction="sum") / 2048
        naive += torch.autograd.grad(part, wc)[0]
    err_fp32_sum = (got.float() - exact).norm() / exact.norm()
    err_bf16_sum = (naive.float() - exact).norm() / exact.norm()
    assert err_fp32_sum < 0.02
    assert err_fp32_sum < 0.5 * err_bf16_sum, (err_fp32_sum, err_bf16_sum)


def test_gguf_file_trains_exports_reloads_and_a_lost_export_comes_back(tmp_path, shards):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from train.weights import resolve_source

    gguf = write_llama_gguf(tiny_llama(), tmp_path / "gguf" / "tiny-q8.gguf")
    assert resolve_source(gguf.parent).kind == resolve_source(gguf).kind == "gguf"  # the folder or the file
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, train={"steps": 4}, model={"path": str(gguf)})
    assert main(["run", str(recipe)]) == 0
    run_dir = tmp_path / "out" / "train"
    # step 0 evaluated the dequantized GGUF weights, as transformers' own GGUF loader reads them
    first = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "eval"][0]
    via_hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    assert first["metrics"]["loss/med"] == pytest.approx(valid_loss(via_hf, shards), rel=1e-5)
    # the export is a plain safetensors model whose loss is the last evaluation's
    export = run_dir / "export"
    assert sorted(p.name for p in export.glob("*.safetensors")) == ["model.safetensors"]
    exported = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
    assert last_eval(run_dir)["step"] == 4
    assert valid_loss(exported, shards) == pytest.approx(last_eval(run_dir)["metrics"]["loss/med"], rel=1e-5)
    assert (export / "tokenizer.json").is_file()

    weights = load_file(export / "model.safetensors")
    import shutil

    shutil.rmtree(export)
    (run_dir / "gap.json").unlink()
    assert main(["run", str(recipe)]) == 0  # "already trained 4 of 4": finishes what is missing
    again = load_file(export / "model.safetensors")
    assert sorted(again) == sorted(weights) and all(torch.equal(again[k], weights[k]) for k in weights)
    assert (run_dir / "gap.json").is_file()

    # a DCP checkpoint of this run is itself a base model route: same weights as the export
    from train.config import ModelConfig
    from train.model import build_model
    from train.parallel import Dist, prepare_model
    from train.weights import load_weights

    ckpt = run_dir / "checkpoints" / "step_0000004"
    model, source = build_model(ModelConfig(path=ckpt), {"vocab_size": 300}, 0, tmp_path)
    assert source[1] == "dcp"
    prepare_model(model, Dist(0, 1, 0, torch.device("cpu")), bf16=False)
    load_weights(model, *source)
    assert all(torch.equal(p, exported.state_dict()[k]) for k, p in model.state_dict().items())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_tokenizer_comes_with_the_model_unless_the_recipe_names_one(tmp_path):
    from continua.recipe import recipe_from_dict

    gguf = write_llama_gguf(tiny_llama(), tmp_path / "m" / "tiny.gguf", quantize_mlp=False)
    assert recipe_from_dict({"model": {"path": str(gguf)}}).data.tokenizer == gguf
    named = make_tokenizer(tmp_path / "tok")
    recipe = recipe_from_dict({"model": {"path": str(gguf)}, "data": {"tokenizer": str(named)}})
    assert recipe.data.tokenizer == named
    assert recipe_from_dict({}).data.tokenizer is None


def test_meta_loading_is_bitwise_plain_loading_on_one_and_two_processes(tmp_path):
    """One process in this one; two through torchrun's c10d rendezvous on a localhost endpoint (the
    multi-node launch path, with one node)."""
    from transformers import AutoModelForCausalLM

    from train.parallel import Dist, prepare_model
    from train.weights import build_empty, load_config, load_weights, resolve_source

    folder = tmp_path / "hf"
    tiny_llama(tied=False).to(torch.bfloat16).save_pretrained(folder, max_shard_size="40KB")  # sharded + index
    assert (folder / "model.safetensors.index.json").is_file()
    source = resolve_source(folder)
    model = build_empty(load_config(source))
    assert all(p.is_meta for p in model.parameters())
    prepare_model(model, Dist(0, 1, 0, torch.device("cpu")), bf16=False)
    load_weights(model, source.path, source.kind)
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(b, dict(model.named_buffers())[n]) for n, b in plain.named_buffers())  # rotary tables

    out, folder = tmp_path / "two.json", tmp_path / "tied"  # tied embeddings stay tied through to_empty
    tiny_llama(tied=True).save_pretrained(folder, max_shard_size="40KB")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
                           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=test",
                           str(ROOT / "tests" / "meta_load_worker.py"), str(folder), str(out)],
                          env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = json.loads(out.read_text())
    assert verdict["unequal"] == [] and verdict["keys"] == 21  # 2 x 9 per layer, embeddings, norm; head tied
    assert verdict["local"] < 0.6 * verdict["total"]  # rank 0 holds its shards, not the model


def test_a_fresh_model_on_two_processes_is_built_on_rank_0_only_and_bitwise_the_single_process_one(tmp_path):
    """Rank 1 meta-builds the fresh Llama and is handed nothing; rank 0's seeded initialization is
    broadcast into both ranks' shards, so the gathered weights equal build_model in one process."""
    from safetensors.torch import load_file
    from meta_load_worker import fresh_config

    from train.model import build_model

    out = tmp_path / "fresh.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(ROOT / "tests" / "meta_load_worker.py"), "fresh", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for tied, ranks in json.loads(out.read_text()).items():
        ranks = sorted(ranks, key=lambda r: r["rank"])
        assert [r["meta"] for r in ranks] == [True, True]  # sharded before any rank gets storage
        assert ranks[1]["handed"] == 0 and ranks[0]["handed"] >= 21  # only rank 0 held the initialized model
        gathered = load_file(f"{out}.{tied}.safetensors")
        plain, weights = build_model(fresh_config(tied == "True"), {"vocab_size": 300}, 7, tmp_path)
        assert weights is None and not any(p.is_meta for p in plain.parameters())  # one process: as before
        reference = plain.state_dict()
        assert sorted(gathered) == sorted(reference) and len(gathered) == 21
        assert all(torch.equal(v, reference[k]) for k, v in gathered.items())


def test_train_run_across_nodes_launches_torchrun_with_a_c10d_rendezvous(tmp_path, shards, monkeypatch):
    """`train run --nnodes 2 --rdzv-endpoint HOST:PORT` on each node (as srun starts it): checked, then
    torchrun joins the rendezvous; a missing endpoint is a usage error."""
    import train.parallel

    calls = []
    monkeypatch.setattr(train.parallel.subprocess, "call", lambda cmd, env, **kw: calls.append(cmd) or 0)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards)
    assert main(["run", str(recipe), "--nproc", "2", "--nnodes", "2", "--rdzv-endpoint", "node1:29500"]) == 0
    cmd = calls[0]
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node1:29500", "--rdzv-id=4242",
            "--nproc-per-node=2"} <= set(cmd)
    assert cmd[cmd.index("train.cli"):] == ["train.cli", "run", str(recipe)]
    assert main(["run", str(recipe), "--nnodes", "2"]) == 2


def test_pickled_weights_need_the_flag_and_load_weights_only(tmp_path):
    from train.parallel import Dist, prepare_model
    from train.weights import build_empty, load_config, load_weights, resolve_source

    folder = tmp_path / "bin"
    base = tiny_llama()
    base.config.save_pretrained(folder)
    torch.save(base.state_dict(), folder / "pytorch_model.bin")
    model = build_empty(load_config(resolve_source(folder)))
    prepare_model(model, Dist(0, 1, 0, torch.device("cpu")), bf16=False)
    with pytest.raises(UntrustedModelError, match="pickled weights.*allow_pickle"):
        load_weights(model, folder, "hf")
    load_weights(model, folder, "hf", allow_pickle=True)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in model.state_dict().items())

    class Boom:  # a pickle that would run code when loaded
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'marker'}",))

    torch.save({"model.embed_tokens.weight": Boom()}, folder / "pytorch_model.bin")
    with pytest.raises(UntrustedModelError, match="weights-only"):
        load_weights(model, folder, "hf", allow_pickle=True)
    assert not (tmp_path / "marker").exists()


def test_every_load_path_refuses_weights_whose_names_are_not_the_models(tmp_path):
    """No parameter is ever left with materialize's uninitialized storage: pickled .bin, safetensors, DCP
    and rank 0's fresh weights all fail naming the missing and unexpected keys; a tied head may be absent."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file

    from train.parallel import Dist, prepare_model
    from train.weights import WeightKeysError, build_empty, load_config, load_weights, resolve_source

    base = tiny_llama(tied=False)
    full = base.state_dict()

    def empty(folder):
        model = build_empty(load_config(resolve_source(folder)))
        prepare_model(model, Dist(0, 1, 0, torch.device("cpu")), bf16=False)
        return model

    folder = tmp_path / "bin"
    base.config.save_pretrained(folder)
    torch.save({k: v for k, v in full.items() if k != "lm_head.weight"}, folder / "pytorch_model.bin")
    with pytest.raises(WeightKeysError, match=r"pickled pytorch_model.bin\): 1 weights of LlamaForCausalLM missing "
                                               r"\(first: lm_head.weight\): nothing was loaded"):
        load_weights(empty(folder), folder, "hf", allow_pickle=True)
    torch.save({"transformer." + k.removeprefix("model."): v for k, v in full.items()}, folder / "pytorch_model.bin")
    with pytest.raises(WeightKeysError, match=r"21 weights .* missing \(first: lm_head.weight, model.embed_tokens.weight.*; "
                                               r"21 unexpected \(first: transformer.embed_tokens.weight"):
        load_weights(empty(folder), folder, "hf", allow_pickle=True)

    folder = tmp_path / "st"
    base.config.save_pretrained(folder)
    save_file({**full, "model.extra.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(WeightKeysError, match=r"1 unexpected \(first: model.extra.weight\)"):
        load_weights(empty(folder), folder, "hf")

    ckpt = tmp_path / "ckpt"
    dcp.save({"model": {k: v for k, v in full.items() if k != "model.norm.weight"}}, checkpoint_id=str(ckpt))
    with pytest.raises(WeightKeysError, match=r"1 weights .* missing \(first: model.norm.weight\)"):
        load_weights(empty(folder), ckpt, "dcp")

    with pytest.raises(WeightKeysError, match=r"fresh model's initial weights: 1 weights .*lm_head.weight"):
        load_weights(empty(folder), {k: v for k, v in full.items() if k != "lm_head.weight"}, "rank0")

    tied = tiny_llama(tied=True)  # its head is its embeddings: a file without lm_head.weight is complete
    folder = tmp_path / "tied"
    tied.config.save_pretrained(folder)
    torch.save({k: v for k, v in tied.state_dict().items() if k != "lm_head.weight"}, folder / "pytorch_model.bin")
    model = empty(folder)
    load_weights(model, folder, "hf", allow_pickle=True)
    assert torch.equal(model.lm_head.weight, tied.model.embed_tokens.weight)


def test_a_bad_pickle_seen_by_rank_0_only_fails_every_rank_with_its_message(tmp_path):
    folder = tmp_path / "bin"
    base = tiny_llama(tied=False)
    base.config.save_pretrained(folder)
    torch.save({k: v for k, v in base.state_dict().items() if k != "lm_head.weight"}, folder / "pytorch_model.bin")
    out = tmp_path / "bad.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(ROOT / "tests" / "meta_load_worker.py"), "badbin", str(folder), str(out)],
                          env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = json.loads(out.read_text())
    assert len(messages) == 2 and messages[0] == messages[1] and "missing (first: lm_head.weight)" in messages[0]


def test_the_export_keeps_the_base_models_dtype_unless_export_dtype_says_otherwise(tmp_path, shards):
    """Training holds fp32 master weights; a bf16 base comes back as bf16 (half the bytes of an fp32 export),
    with config.json saying so under both names, and `from_pretrained(dtype="auto")` loads it as bf16."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "bf16"
    tiny_llama().to(torch.bfloat16).save_pretrained(folder)
    for name, extra, want in (("auto", {}, torch.bfloat16), ("fp32", {"export_dtype": "float32"}, torch.float32)):
        recipe = write_recipe(tmp_path / f"{name}.toml", tmp_path / name, shards, train={"steps": 2},
                              model={"path": str(folder), **extra})
        assert main(["run", str(recipe)]) == 0
        export = tmp_path / name / "train" / "export"
        assert {t.dtype for t in load_file(export / "model.safetensors").values()} == {want}
        cfg = json.loads((export / "config.json").read_text())
        assert cfg["dtype"] == cfg["torch_dtype"] == str(want).removeprefix("torch.")
        assert AutoModelForCausalLM.from_pretrained(export, dtype="auto").dtype == want
    run_config = json.loads((tmp_path / "auto" / "train" / "config.json").read_text())
    assert run_config["dtype"] == "bfloat16"  # a checkpoint of this run as [model] path exports bf16 too


def test_remote_code_is_refused_by_train_curate_and_the_tokenizer(tmp_path, shards, capsys):
    from continua.tokenizer import TokenizerError, load_tokenizer
    from curate.lm_perplexity import LMScorer, LMScorerError

    folder = tmp_path / "custom"
    tiny_llama().save_pretrained(folder)
    make_tokenizer(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, model={"path": str(folder)})
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "auto_map" in err[0] and "config.json" in err[0]
    with pytest.raises(LMScorerError, match="auto_map"):
        LMScorer(folder)
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, "auto_map": {"AutoTokenizer": ["x.Tok", None]}}))
    (folder / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "auto_map"}))
    with pytest.raises(TokenizerError, match="tokenizer_config.json.*auto_map"):
        load_tokenizer(folder)


def one_error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train run: error: "), err
    return err[0]


def test_preflight_mistakes_are_one_line_and_exit_2_before_any_rank_starts(tmp_path, shards, capsys, monkeypatch):
    no_shards = write_recipe(tmp_path / "a.toml", tmp_path / "a", tmp_path / "missing")
    assert "no shards to train on" in one_error_line(capsys, ["run", str(no_shards), "--nproc", "8"])

    too_long = write_recipe(tmp_path / "b.toml", tmp_path / "b", shards, train={"seq_len": 128})
    assert "seq_len 128 is above [model] max_position_embeddings (64)" in one_error_line(capsys, ["run", str(too_long)])
    base = tmp_path / "base"
    tiny_llama().save_pretrained(base)
    too_long = write_recipe(tmp_path / "c.toml", tmp_path / "c", shards, train={"seq_len": 128},
                            model={"path": str(base)})
    assert f"max_position_embeddings of {base} (64)" in one_error_line(capsys, ["run", str(too_long)])

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"hidden_size": 8}))
    bad_model = write_recipe(tmp_path / "d.toml", tmp_path / "d", shards, model={"path": str(broken)})
    assert "transformers cannot read its config" in one_error_line(capsys, ["run", str(bad_model)])

    ok = write_recipe(tmp_path / "e.toml", tmp_path / "e", shards)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "batch_size 4 is not divisible by 8 processes" in one_error_line(capsys, ["run", str(ok), "--nproc", "8"])
    assert "2 processes per node but this machine has 1 GPU" in one_error_line(capsys, ["run", str(ok), "--nproc", "2"])
    assert not (tmp_path / "e" / "train").exists()  # nothing was started


def test_nproc_above_cpu_cores_is_a_warning_with_the_counts(tmp_path, shards, capsys):
    from continua.cores import available_cores as cpu_cores
    from train.preflight import preflight

    recipe = load_recipe(write_recipe(tmp_path / "r.toml", tmp_path / "r", shards))
    preflight(recipe, nproc=cpu_cores() + 2, say=print)
    out = capsys.readouterr().out
    assert f"{cpu_cores() + 2} processes x 1 thread(s) on {cpu_cores()} CPU core(s)" in out

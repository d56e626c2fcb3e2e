"""One model, one way to name it: a .gguf works with the base install, in `[model] path` and in
`[curate] lm_scorers` alike, and a missing GGUF reader is one line naming what to install."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
from gguf_fixture import write_llama_gguf

from continua.modelpath import GGUFReaderMissing, ModelPathError, gguf_file, require_gguf_reader


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))


def test_the_base_install_reads_gguf():
    from packaging.requirements import Requirement

    base = [Requirement(r) for r in importlib.metadata.requires("continua") or []]
    assert any(r.name == "gguf" and r.marker is None for r in base)  # not only in an extra
    require_gguf_reader("model.gguf")  # installed and recent enough


def test_missing_gguf_reader_is_one_line_naming_the_install(tmp_path, monkeypatch):
    from continua.tokenizer import TokenizerError, load_tokenizer
    from curate.lm_perplexity import LMScorer, LMScorerError
    from train.weights import ModelSourceError, resolve_source

    gguf = write_llama_gguf(tiny_llama(), tmp_path / "m" / "tiny.gguf", quantize_mlp=False)
    real = importlib.metadata.version

    def no_gguf(name):
        if name == "gguf":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", no_gguf)
    for load, error in ((load_tokenizer, TokenizerError), (resolve_source, ModelSourceError),
                        (lambda p: LMScorer(p, device="cpu"), LMScorerError)):
        with pytest.raises(error) as e:
            load(gguf)
        msg = str(e.value)
        assert "\n" not in msg and str(gguf) in msg and "pip install 'gguf>=0.10'" in msg
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.9.1" if name == "gguf" else real(name))
    with pytest.raises(GGUFReaderMissing, match=r"needs gguf>=0\.10, this environment has 0\.9\.1"):
        require_gguf_reader(gguf)


def test_one_rule_for_what_a_path_names(tmp_path):
    gguf = write_llama_gguf(tiny_llama(), tmp_path / "m" / "tiny.gguf", quantize_mlp=False)
    assert gguf_file(gguf) == gguf_file(gguf.parent) == gguf
    (tmp_path / "m" / "config.json").write_text("{}")
    assert gguf_file(tmp_path / "m") is None  # a folder with config.json is a Hugging Face folder
    (tmp_path / "m" / "config.json").unlink()
    write_llama_gguf(tiny_llama(), tmp_path / "m" / "other.gguf", quantize_mlp=False)
    with pytest.raises(ModelPathError, match=r"2 \.gguf files \(other\.gguf, tiny\.gguf\); name the one to use"):
        gguf_file(tmp_path / "m")
    assert gguf_file(gguf) == gguf  # naming the file is always unambiguous


def test_lm_scorers_take_the_gguf_file_that_model_path_takes(tmp_path):
    from transformers import AutoModelForCausalLM

    from curate.config import CurateConfig
    from curate.lm_perplexity import LMScorer
    from curate.perplexity import LMPerplexityStep, perplexity_steps
    from train.weights import resolve_source

    gguf = write_llama_gguf(tiny_llama(), tmp_path / "m" / "tiny-q8.gguf")
    assert resolve_source(gguf).kind == "gguf"  # [model] path
    steps = perplexity_steps(CurateConfig(lm_scorers={"small": gguf}, lm_device="cpu"))  # [curate] lm_scorers
    assert [type(s) for s in steps] == [LMPerplexityStep]
    ids = [[1, 5, 9, 2, 7], [1, 3], [1, 60, 61, 62, 63, 8, 9]]
    by_file = LMScorer(gguf, device="cpu").score_ids(ids)
    by_folder = LMScorer(gguf.parent, device="cpu").score_ids(ids)
    np.testing.assert_array_equal(by_file[0], by_folder[0])
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        logp = model(input_ids=torch.tensor([ids[2]])).logits.log_softmax(-1)[0, :-1]
    want = logp.gather(-1, torch.tensor(ids[2][1:])[:, None]).sum().item()
    assert by_file[0][2] == pytest.approx(want, rel=1e-5) and list(by_file[1]) == [4, 1, 6]
    with pytest.raises(FileNotFoundError, match=r"lm_scorers\.bad: .*neither a local model folder nor a \.gguf file"):
        perplexity_steps(CurateConfig(lm_scorers={"bad": tmp_path / "m" / "nothing.bin"}))

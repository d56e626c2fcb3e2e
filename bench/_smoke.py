"""Tiny generated stand-ins for the benchmarks' real inputs, so every bench script has a `--smoke` run
(tests/test_bench_smoke.py) that needs no shared data, no network and no GPU.

`tiny_data(folder)` lays out the shared data folder's shape (`medical/medical.jsonl`,
`general/enwiki.jsonl`) with a few hundred seeded documents each; `tiny_tokenizer` and
`tiny_llama` give a byte-level BPE and a small random Llama saved as a Hugging Face folder.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

MEDICAL = ("patient clinical therapy dose tumor cardiac insulin diagnosis symptom chronic renal hepatic trial "
           "placebo cohort lesion biopsy infection antibiotic vaccine immune protein gene mutation").split()
GENERAL = ("river mountain history king city war music film football season album election village church "
           "painter novel bridge railway island festival").split()
COMMON = "the of and a in to was is with for on by as at from that".split()


def texts(style: str, n: int, seed: int = 0) -> list[str]:
    """`n` documents of 3-6 sentences in the words of `style` ("medical" or "general")."""
    rng = random.Random(f"{style}-{seed}")
    vocab = MEDICAL if style == "medical" else GENERAL
    docs = []
    for _ in range(n):
        sents = []
        for _ in range(rng.randint(3, 6)):
            words = [rng.choice(vocab) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(rng.randint(6, 14))]
            sents.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sents))
    return docs


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(docs):
            f.write(json.dumps({"id": str(i), "text": t}) + "\n")
    return path


def tiny_data(folder: Path, n: int = 300) -> Path:
    """A folder shaped like the shared data folder: medical/medical.jsonl and general/enwiki.jsonl."""
    write_jsonl(folder / "medical" / "medical.jsonl", texts("medical", n))
    write_jsonl(folder / "general" / "enwiki.jsonl", texts("general", n))
    return folder


def tiny_tokenizer(folder: Path, vocab: int = 300) -> Path:
    """A byte-level BPE with <s>/</s> trained on generated text (tokenizer.json + tokenizer_config.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts("medical", 100) + texts("general", 100), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                              "add_bos_token": True}))
    return folder


def tiny_llama(folder: Path) -> Path:
    """A 2-layer random Llama with the tiny tokenizer, saved as a Hugging Face model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny_tokenizer(folder)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                         bos_token_id=0, eos_token_id=1))
    model.save_pretrained(folder)
    return folder

"""One way to make a test tokenizer: a small byte-level BPE (exact round trip) saved as a folder."""

from __future__ import annotations

import json
from pathlib import Path


def train_bpe(folder: Path, texts: list[str], vocab_size: int, special_tokens: list[str], config: dict) -> Path:
    """Train a byte-level BPE on `texts`; write tokenizer.json and `config` as tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder

"""Perplexity of documents under a local causal LM (Ankner et al., 2024: prune by a small LM's perplexity).

Why these choices:
* Every document is scored as `start token + its tokens`: one BOS (or EOS when the tokenizer has no
  BOS, GPT-2 style) is prepended by us, whatever the tokenizer's own special-token policy, so the
  first real token is predicted too and documents of any tokenizer are comparable.
* Truncation, not a sliding window: only the first `max_length` tokens (start token included)
  count. Quality pruning needs a ranking, not exact long-document perplexity, and a window would
  multiply the cost for long documents.
* Batches are length-bucketed: documents are sorted by length and packed so that batch size x
  longest length <= `batch_tokens`, which keeps padding (wasted compute) small. Padding is on the
  right with an attention mask and padded positions are excluded from the mean, so a document's
  score does not depend on its batch-mates (checked by the tests).
* bf16 weights on GPU, float32 on CPU; log-softmax always in float32, a few rows at a time, so
  memory is the logits (batch_tokens x vocabulary x 2 or 4 bytes) plus a 4096-position slice.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

LOSS_CHUNK_TOKENS = 4096  # positions whose float32 log-softmax is held at once (x vocabulary x 4 bytes)


class LMScorerError(ValueError):
    pass


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LMScorerError(f"lm_device is {device!r} but torch sees no CUDA device")
    return device


def pack_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped so that len(group) * longest <= batch_tokens (a single long doc may exceed it)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * lengths[current[0]] > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class LMScorer:
    """Loads a Hugging Face causal LM folder on first use; `perplexity(texts)` -> one float per text."""

    def __init__(self, path: str | Path, batch_tokens: int = 16384, max_length: int = 1024, device: str = "auto",
                 allow_pickle: bool = False):
        from continua.trust import UntrustedModelError, refuse_remote_code

        from continua.modelpath import GGUFReaderMissing, model_folder_and_gguf

        self.path = Path(path)
        self.allow_pickle = allow_pickle
        if not (self.path.is_dir() or self.path.suffix == ".gguf" and self.path.is_file()):
            raise LMScorerError(f"{self.path}: LM scorer path is neither a model folder nor a .gguf file")
        try:  # now, naming the file, rather than in a worker
            self.folder, self.gguf_kwargs = model_folder_and_gguf(self.path)  # the same rule as [model] path
            refuse_remote_code(self.folder)
        except (UntrustedModelError, GGUFReaderMissing) as e:
            raise LMScorerError(str(e)) from e
        if max_length < 2:
            raise LMScorerError(f"lm_max_length must be at least 2 (a start token and one scored token), got {max_length}")
        if batch_tokens < max_length:
            raise LMScorerError(f"lm_batch_tokens ({batch_tokens}) must be at least lm_max_length ({max_length})")
        self.batch_tokens, self.max_length, self.device_name = batch_tokens, max_length, device

    @cached_property
    def device(self) -> str:
        return resolve_device(self.device_name)

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        if not self.gguf_kwargs and not any((self.folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise LMScorerError(f"{self.path}: no tokenizer.json or tokenizer_config.json (save the tokenizer "
                                "with the model: tokenizer.save_pretrained(folder))")
        from continua.trust import HF_SAFE_KWARGS

        try:
            tok = AutoTokenizer.from_pretrained(str(self.folder), **self.gguf_kwargs, **HF_SAFE_KWARGS)
        except (OSError, ValueError) as e:
            raise LMScorerError(f"{self.path}: cannot load the tokenizer from this folder: {e}") from e
        tok.truncation_side = "right"  # keep each document's beginning, whatever the folder's config says
        return tok

    @cached_property
    def model(self):
        import torch
        from transformers import AutoModelForCausalLM

        from continua.trust import HF_SAFE_KWARGS, UntrustedModelError, weight_files

        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        kwargs = dict(self.gguf_kwargs)
        try:
            if not kwargs:  # safetensors, or pickled weights only when allowed (transformers reads them weights-only)
                kwargs["use_safetensors"] = weight_files(self.folder, self.allow_pickle)[0] == "safetensors"
            model = AutoModelForCausalLM.from_pretrained(str(self.folder), dtype=dtype, **kwargs, **HF_SAFE_KWARGS)
        except UntrustedModelError as e:
            raise LMScorerError(str(e)) from e
        except (OSError, ValueError) as e:
            raise LMScorerError(f"{self.path}: cannot load a causal LM from this folder: {e}") from e
        return model.to(self.device).eval()

    @cached_property
    def start_id(self) -> int:
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise LMScorerError(f"{self.path}: the tokenizer has neither a BOS nor an EOS token to start documents with")
        return start

    def encode(self, texts: list[str]) -> list[list[int]]:
        """The ids that get scored: start token + text tokens, cut to max_length."""
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length - 1,
                             return_attention_mask=False)["input_ids"]
        return [[self.start_id] + x for x in ids]

    def score_ids(self, docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(sum of natural-log probabilities, number of predicted tokens) per document."""
        import torch

        logp_sum = np.zeros(len(docs))
        count = np.zeros(len(docs), dtype=np.int64)
        lengths = [len(d) for d in docs]
        with torch.inference_mode():
            for batch in pack_batches(lengths, self.batch_tokens):
                width = lengths[batch[0]]
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : lengths[i]] = torch.tensor(docs[i])
                    mask[row, : lengths[i]] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                target = ids[:, 1:]
                tok_logp = torch.empty(target.shape, dtype=torch.float32, device=ids.device)
                step = max(1, LOSS_CHUNK_TOKENS // width)  # float32 log-softmax a few rows at a time
                for r in range(0, len(batch), step):
                    chunk = logits[r:r + step, :-1].float()
                    tok_logp[r:r + step] = -torch.nn.functional.cross_entropy(
                        chunk.reshape(-1, chunk.shape[-1]), target[r:r + step].reshape(-1),
                        reduction="none").view(chunk.shape[:2])
                del logits
                keep = mask[:, 1:].bool()
                sums = torch.where(keep, tok_logp, 0.0).sum(1).double().cpu().numpy()
                logp_sum[batch] = sums
                count[batch] = keep.sum(1).cpu().numpy()
        return logp_sum, count

    def perplexity(self, texts: list[str]) -> np.ndarray:
        """exp(-mean log p) over each document's scored tokens; NaN only for a document with none."""
        if not texts:
            return np.zeros(0)
        logp_sum, count = self.score_ids(self.encode(texts))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.exp(-logp_sum / count)

    def __getstate__(self):  # pickles cheaply to datatrove workers; model and tokenizer reload there
        state = dict(self.__dict__)
        for lazy in ("device", "tokenizer", "model", "start_id"):
            state.pop(lazy, None)
        return state

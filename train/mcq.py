"""Zero-shot multiple-choice accuracy on local JSONL benchmarks, scored like lm-evaluation-harness.

Why: the stability gap shows in benchmark accuracy as well as in losses (Guo et al.), and these
machines are offline, so the harness's hub datasets are out of reach. Each option is scored by the
log-likelihood of the continuation " {option}" after the prompt "Question: {q}\\nAnswer:" (PubMedQA:
"Context: {c}\\nQuestion: {q}\\nAnswer:" with options yes/no/maybe); acc = argmax of the sum, acc_norm
= argmax of sum / characters of the option (the harness's acc_norm). Token split as the harness:
encode(prompt + continuation), the continuation being what follows encode(prompt).

Formats (auto-detected from the first line): MedQA / MMLU `{question, options: {A: ..}, answer: "B"}`
(options may also be a list; answer a letter, a 0-based index or the option's text; `answer_idx` wins);
PubMedQA `{question, context, answer: yes|no|maybe}`, keeping only `split == "test"` items when lines
carry a split.
"""

from __future__ import annotations

import inspect
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from train.parallel import Dist, current_dist

PUBMEDQA_OPTIONS = ["yes", "no", "maybe"]


class BenchmarkError(ValueError):
    """A benchmark file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class MCQItem:
    id: str
    prompt: str  # ends with "Answer:"; each option is scored as the continuation " {option}"
    options: tuple[str, ...]
    answer: int  # index into options
    where: str  # "file:line", for messages


def _detect(obj: dict) -> str:
    if "options" in obj:
        return "mcq"
    if "context" in obj or str(obj.get("answer", obj.get("final_decision", ""))).lower() in PUBMEDQA_OPTIONS:
        return "pubmedqa"
    raise ValueError("cannot tell the format: expected 'options' (MedQA/MMLU) or 'context' with a "
                     "yes/no/maybe 'answer' (PubMedQA)")


def _text(obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"'{key}' must be a non-empty string, got {value!r}")
    return value.strip()


def _parse_mcq(obj: dict, ident: str, where: str) -> MCQItem:
    question = _text(obj, "question")
    options = obj["options"]
    if isinstance(options, dict):
        letters = list(options)
        texts = [options[k] for k in letters]
    elif isinstance(options, list):
        letters = list(string.ascii_uppercase[: len(options)])
        texts = options
    else:
        raise ValueError(f"'options' must be an object {{A: text, ...}} or a list, got {type(options).__name__}")
    if len(texts) < 2 or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"'options' needs at least two non-empty strings, got {options!r}")
    answer = obj.get("answer_idx", obj.get("answer"))  # the original MedQA release: answer_idx + answer text
    if isinstance(answer, str) and answer.strip() in letters:
        index = letters.index(answer.strip())
    elif isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(texts):
        index = answer
    elif isinstance(answer, str) and answer.strip() in [t.strip() for t in texts]:
        index = [t.strip() for t in texts].index(answer.strip())
    else:
        raise ValueError(f"'answer' must be one of {letters}, an index below {len(texts)} or an option's text, "
                         f"got {answer!r}")
    return MCQItem(ident, f"Question: {question}\nAnswer:", tuple(t.strip() for t in texts), index, where)


def _parse_pubmedqa(obj: dict, ident: str, where: str) -> MCQItem:
    question = _text(obj, "question")
    context = obj.get("context")
    if isinstance(context, dict):  # the original release: {"contexts": [...], "labels": [...]}
        context = context.get("contexts")
    if isinstance(context, list) and all(isinstance(c, str) for c in context):
        context = " ".join(c.strip() for c in context)
    if not isinstance(context, str) or not context.strip():
        raise ValueError(f"'context' must be a non-empty string (or list of strings), got {context!r}")
    answer = str(obj.get("answer", obj.get("final_decision", ""))).strip().lower()
    if answer not in PUBMEDQA_OPTIONS:
        raise ValueError(f"'answer' must be yes, no or maybe, got {obj.get('answer')!r}")
    prompt = f"Context: {context.strip()}\nQuestion: {question}\nAnswer:"
    return MCQItem(ident, prompt, tuple(PUBMEDQA_OPTIONS), PUBMEDQA_OPTIONS.index(answer), where)


def load_benchmark(path: str | Path, max_items: int = 0) -> list[MCQItem]:
    """Read a JSONL benchmark; `max_items` > 0 keeps an evenly spread, fixed subset (every run sees the same)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark file not found: {path}")
    items: list[MCQItem] = []
    fmt = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                kind = _detect(obj)
                if fmt is None:
                    fmt = kind
                elif kind != fmt:
                    raise ValueError(f"this line looks like {kind} but the file started as {fmt}")
                if fmt == "pubmedqa" and "split" in obj and obj["split"] != "test":
                    continue
                ident = str(obj.get("id", f"{path.name}#{lineno - 1}"))
                items.append(_parse_mcq(obj, ident, where) if fmt == "mcq" else _parse_pubmedqa(obj, ident, where))
            except (ValueError, KeyError) as e:  # JSONDecodeError is a ValueError
                raise BenchmarkError(f"{where}: {e}") from e
    if not items:
        raise BenchmarkError(f"{path}: no usable items (empty file, or no split == 'test' PubMedQA items)")
    if 0 < max_items < len(items):
        keep = np.unique(np.linspace(0, len(items) - 1, max_items).round().astype(int))
        items = [items[i] for i in keep]
    return items


def load_benchmarks(benchmarks: dict[str, Path], max_items: int = 0) -> dict[str, list[MCQItem]]:
    """All of [eval] benchmarks, loaded up front so a bad file fails before training starts."""
    return {name: load_benchmark(path, max_items) for name, path in benchmarks.items()}


@dataclass(frozen=True)
class Request:
    tokens: tuple[int, ...]  # prompt + continuation, left-truncated to fit the model
    n_cont: int  # the last n_cont tokens are the continuation being scored


def build_requests(tokenizer, items: list[MCQItem], max_len: int | None = None) -> list[Request]:
    """One request per (item, option), in item-major order; BOS when the tokenizer's policy adds one, no EOS."""
    backend = tokenizer.backend
    head = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    prompts = [it.prompt for it in items]
    wholes = [it.prompt + " " + opt for it in items for opt in it.options]
    enc = backend.encode_batch(prompts + wholes, add_special_tokens=False)
    ctx_ids, whole_ids = enc[: len(prompts)], enc[len(prompts):]
    out, k = [], 0
    for i, it in enumerate(items):
        n_ctx = len(ctx_ids[i].ids)
        for opt in it.options:
            whole = whole_ids[k].ids
            k += 1
            cont = whole[n_ctx:]
            if not cont:
                raise BenchmarkError(f"{it.where}: option {opt!r} encodes to no tokens after the prompt")
            tokens = head + whole
            if max_len is not None and len(tokens) > max_len + 1:  # the harness keeps the right end
                if len(cont) > max_len:
                    raise BenchmarkError(f"{it.where}: option {opt!r} is longer than the model's {max_len} tokens")
                tokens = tokens[-(max_len + 1):]
            out.append(Request(tuple(tokens), len(cont)))
    return out


def _forward_kwargs(model: torch.nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


@torch.no_grad()
def loglikelihoods(model: torch.nn.Module, requests: list[Request], device: torch.device, batch_size: int = 8,
                   autocast_dtype: torch.dtype | None = None, d: Dist | None = None,
                   on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Sum of continuation log-probs per request.

    Requests with the same input tokens (all but the last token) share one forward pass, as the harness
    reuses the logits of a context for one-token continuations: PubMedQA's " yes" / " no" / " maybe" cost
    one pass over the (long) context instead of three. Under torch.distributed every rank runs the same
    number of forward passes (FSDP's collectives must match; a rank with nothing left scores a dummy batch
    with weight 0), takes every world-th batch of the length-sorted inputs, and the score vector is summed
    over ranks so all ranks return all scores.
    """
    d = d or current_dist(device)
    rank, world = d.rank, d.world
    shared: dict[tuple[int, ...], list[int]] = {}  # input tokens -> the requests scored from its logits
    for i, r in enumerate(requests):
        shared.setdefault(r.tokens[:-1], []).append(i)
    inputs = sorted(shared, key=len, reverse=True)  # similar lengths batch well
    scores = torch.zeros(len(requests), dtype=torch.float64, device=device)
    keep_kw = "logits_to_keep" in _forward_kwargs(model)
    was_training = model.training
    model.eval()
    n_batches = -(-len(inputs) // (batch_size * world))
    for b in range(n_batches):
        lo = (b * world + rank) * batch_size
        rows = inputs[lo: lo + batch_size]
        real = bool(rows)
        if not real:
            rows = inputs[:1]
        width = max(len(t) for t in rows)
        x = torch.zeros(len(rows), width, dtype=torch.long)
        for j, t in enumerate(rows):  # right padding: causal attention never looks at the pads
            x[j, : len(t)] = torch.tensor(t)
        # only the last `keep` positions are needed: the longest continuation of the shortest row reaches back furthest
        keep = max(width - len(t) + max(requests[i].n_cont for i in shared[t]) for t in rows)
        kwargs = {"logits_to_keep": keep} if keep_kw else {}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=x.to(device), **kwargs).logits
        logits = logits[:, -keep:]
        if on_batch is not None:
            on_batch(b + 1, n_batches)  # forward passes done, of this rank's
        if not real:
            continue
        for j, t in enumerate(rows):
            end = len(t) - (width - keep)  # position after the last input token, within `keep`
            for i in shared[t]:
                r = requests[i]
                logp = logits[j, end - r.n_cont: end].float().log_softmax(-1)
                target = torch.tensor(r.tokens[-r.n_cont:], device=logp.device)
                scores[i] = logp.gather(-1, target[:, None]).sum().double()
    d.all_reduce_sum(scores)
    if was_training:
        model.train()
    return scores.cpu().numpy()


def evaluate_mcq(model: torch.nn.Module, tokenizer, items: list[MCQItem], device: torch.device, batch_size: int = 8,
                 autocast_dtype: torch.dtype | None = None, max_len: int | None = None,
                 return_scores: bool = False, d: Dist | None = None,
                 on_batch: Callable[[int, int], None] | None = None) -> dict:
    """{"acc", "acc_norm", "count", "top_answer_share"} over `items` (identical on every rank); `scores` per item
    if asked. `on_batch(forward passes done, passes)` follows the progress."""
    if not items:
        raise ValueError("evaluate_mcq needs at least one item")
    if max_len is None:
        max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    requests = build_requests(tokenizer, items, max_len)
    flat = loglikelihoods(model, requests, device, batch_size, autocast_dtype, d=d, on_batch=on_batch)
    correct = correct_norm = 0
    per_item, picked, k = [], [], 0
    for it in items:
        s = flat[k: k + len(it.options)]
        k += len(it.options)
        chars = np.array([len(o) for o in it.options], dtype=np.float64)
        picked.append(int(np.argmax(s)))
        correct += int(picked[-1] == it.answer)
        correct_norm += int(np.argmax(s / chars) == it.answer)
        per_item.append(s.tolist())
    # share of items given the model's most frequent answer position: 1.0 = one answer for everything, whose
    # accuracy is just that label's share (a CPT model that says "no" to all of PubMedQA scores its "no" share)
    top_answer = np.bincount(picked).max() / len(items)
    out = {"acc": correct / len(items), "acc_norm": correct_norm / len(items), "count": len(items),
           "top_answer_share": float(top_answer)}
    if return_scores:
        out["scores"] = per_item
    return out


def answer_labels(items: list[MCQItem]) -> list[str]:
    """Names of the answer positions: the options' own texts when every item has the same ones (PubMedQA's
    yes / no / maybe), else letters A, B, C, ... (MedQA, MMLU)."""
    first = items[0].options if items else ()
    if all(it.options == first for it in items):
        return list(first)
    width = max(len(it.options) for it in items)
    return [string.ascii_uppercase[i] if i < 26 else str(i) for i in range(width)]


def item_predictions(items: list[MCQItem], scores: list[list[float]]) -> list[dict]:
    """One row per item: id, gold answer, the answer chosen (acc's argmax), and every option's log-likelihood."""
    labels = answer_labels(items)
    rows = []
    for it, s in zip(items, scores):
        chosen = int(np.argmax(s))
        rows.append({"id": it.id, "answer": labels[it.answer], "chosen": labels[chosen],
                     "correct": chosen == it.answer, "loglikelihoods": [round(float(v), 4) for v in s]})
    return rows


def answer_shares(rows: list[dict], labels: list[str]) -> dict[str, dict[str, float]]:
    """Per label: `chosen` (share of items given that answer) and `gold` (share whose answer it is). A model
    that answers "no" to 90% of items while 30% are "no" shows it here, label by label."""
    n = max(len(rows), 1)
    return {lab: {"chosen": sum(r["chosen"] == lab for r in rows) / n, "gold": sum(r["answer"] == lab for r in rows) / n}
            for lab in labels}

"""`mix build`: tokenize the planned documents into shards, one set per source and split.

Per source: the documents are re-read from the source files (continua.documents) and matched by
doc_id against the plan's selection; texts are tokenized in chunks (by a pool of `workers`
processes, one per core by default; with one worker, in-process on the tokenizer's own threads), appended to an unshuffled work
shard, then copied in a seeded random order into shards of at most `shard_tokens` tokens. Each
unique document is stored once; epochs and shares go to the manifest for the sampler.

Resumable: every shard appears under its final name only when complete (ShardWriter), and a
source is finished when its `complete.json` exists and names the plan's hash; a re-run skips
such sources and rebuilds any other.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
import multiprocessing as mp
import os
import shutil
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from continua import fingerprint as fp
from continua.documents import expand_inputs, iter_documents
from continua.io import read_json, write_json
from continua.layout import mix_dir, shards_dir
from continua.recipe import Recipe, SourceConfig
from continua.tokenizer import TextTokenizer, load_tokenizer
from mix.manifest import Manifest, SourceEntry, SplitEntry
from mix.planner import PLAN_NAME
from mix.shards import Shard, ShardWriter
from curate.table import text_hash
from mix.tables import PlanError

COMPLETE = "complete.json"
SPLITS = ("train", "valid")
CHUNK_DOCS = 1024
TOKEN_TOLERANCE = 0.01

_worker_tok: TextTokenizer | None = None


def _init_worker(tok: TextTokenizer) -> None:
    global _worker_tok
    # one thread per worker process: the pool already uses every core, threads would oversubscribe
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tok = tok


def _encode_chunk(args: tuple[list[int], list[str]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    splits, texts = args
    return _encode(_worker_tok, splits, texts)


def _encode(tok: TextTokenizer, splits: list[int], texts: list[str]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(split of each doc, flat token ids, document lengths) for one chunk."""
    ids = tok.encode_batch(texts)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=tok.token_dtype, count=int(lengths.sum()))
    return splits, flat, lengths


def _chunks(docs: Iterator[tuple[int, str]], size: int) -> Iterator[tuple[list[int], list[str]]]:
    splits: list[int] = []
    texts: list[str] = []
    for split, text in docs:
        splits.append(split)
        texts.append(text)
        if len(texts) >= size:
            yield splits, texts
            splits, texts = [], []
    if texts:
        yield splits, texts


class Builder:
    """Builds the shards of every source of a plan; `workers` > 1 uses a process pool."""

    def __init__(self, recipe: Recipe, workers: int | None = None, log=print):
        self.recipe = recipe
        self.log = log
        self.auto_workers = not (workers or recipe.mix.workers)  # auto: a pool only when a source is large
        self.workers = workers or recipe.mix.workers or (os.cpu_count() or 1)
        if recipe.data.tokenizer is None:
            raise PlanError("[data] tokenizer is not set: `mix build` needs the tokenizer the model will use")
        self.tok = load_tokenizer(recipe.data.tokenizer)
        self.mix_dir = mix_dir(recipe)
        self.plan_path = self.mix_dir / PLAN_NAME
        if not self.plan_path.exists():
            raise PlanError(f"{self.plan_path}: no plan; run `mix plan` first")
        self.plan_fp = fp.fingerprint(self.plan_path)
        self.plan = read_json(self.plan_path)
        self.plan_hash = self.plan_fp["hash"]
        sel_path = self.mix_dir / self.plan["selection"]
        if not sel_path.exists() or fp.hash_file(sel_path) != self.plan.get("selection_hash"):
            raise fp.StaleInputError(f"{sel_path} is missing or changed since {self.plan_path} was written: "
                                     f"run `mix plan` again")
        self.selection = pl.read_parquet(sel_path)
        if "text_hash" not in self.selection.columns or "source_files" not in self.plan:
            raise fp.StaleInputError(f"{self.plan_path}: made by an older `mix plan` without fingerprints; run "
                                     f"`mix plan` again")
        self.out = shards_dir(recipe)
        self.seed = recipe.run.seed
        self._pool = None

    # ------------------------------------------------------------------ public

    def run(self) -> Path:
        missing = [n for n in self.plan["sources"] if n not in self.recipe.data.sources]
        if missing:
            raise PlanError(f"the plan names source(s) {', '.join(missing)} that the recipe does not have; "
                            f"run `mix plan` again")
        entries: dict[str, SourceEntry] = {}
        inputs = list(self.plan["inputs"])
        warnings: list[str] = []
        try:
            for name, planned in self.plan["sources"].items():
                self._check_source(name, self.recipe.data.sources[name])  # complete shards too: never a stale plan
                done = self._completed(name)
                if done is None:
                    done = self._build_source(name, self.recipe.data.sources[name], planned)
                else:
                    self.log(f"{name}: shards complete for this plan, skipped")
                entries[name] = SourceEntry(
                    role=planned["role"], epochs=planned["epochs"], target_tokens=planned["target_tokens"],
                    share=planned["share"], train=SplitEntry(**done["train"]), valid=SplitEntry(**done["valid"]),
                    resample=planned["resample"], group=planned.get("group"), epoch_tokens=planned["epoch_tokens"])
                inputs.extend(done["inputs"])
                warnings.extend(done["warnings"])
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool.join()
        manifest = Manifest(tokenizer=self.tok.describe(), seed=self.seed, sources=entries,
                            plan=self._plan_record(), inputs=inputs,
                            total_target_tokens=sum(e.target_tokens for e in entries.values()), warnings=warnings)
        return manifest.save(self.out)

    def _plan_record(self) -> dict:
        """The plan's fingerprint, its path relative to the shards folder: a copied or moved experiment
        folder checks its own plan, never the original's."""
        return self.plan_fp | {"path": os.path.relpath(self.plan_path.absolute(), self.out.absolute())}

    # ------------------------------------------------------------------ per source

    def _check_source(self, name: str, cfg: SourceConfig) -> list[dict]:
        """The source holds the files `curate score` scored, as they were (a file added, removed or
        edited since is named); returns their fingerprints."""
        recorded = self.plan["source_files"].get(name, [])
        rerun = f"{fp.RESCORE}, `mix plan` and `mix build`"
        fp.check_listing([r["path"] for r in recorded], [p for p, _, _ in expand_inputs(cfg)], "`curate score`", rerun)
        fp.check(recorded, "`curate score` read it", rerun)
        return recorded

    def _completed(self, name: str) -> dict | None:
        marker = self.out / name / COMPLETE
        if not marker.exists():
            return None
        done = read_json(marker)
        if (done.get("plan_hash"), done.get("tokenizer"), done.get("shard_tokens"), done.get("seed")) != (
                self.plan_hash, str(self.tok.path), self.recipe.mix.shard_tokens, self.seed):
            return None
        shards = done.get("shard_files")  # a changed or missing shard rebuilds the source
        if shards is None or any(fp.changed(r | {"path": str(self.out / r["path"])}) for r in shards):
            return None
        return done

    def _build_source(self, name: str, cfg: SourceConfig, planned: dict) -> dict:
        from tqdm import tqdm

        folder = self.out / name
        recorded = self._check_source(name, cfg)
        if folder.exists():
            shutil.rmtree(folder)  # stale or partial outputs of another plan
        sel = self.selection.filter(pl.col("source") == name)
        split_of = dict(zip(sel["doc_id"].to_list(),
                            zip((sel["split"] == "valid").cast(pl.Int8).to_list(), sel["text_hash"].to_list())))
        work = folder / ".work"
        writers = [ShardWriter(work / f"{s}.ds", self.tok.token_dtype, str(self.tok.path)) for s in SPLITS]
        planned_docs = len(split_of)
        bar = tqdm(total=planned_docs, desc=f"tokenize {name}", unit="doc", leave=False)

        def wanted() -> Iterator[tuple[int, str]]:
            for rec in iter_documents(name, cfg):
                planned = split_of.pop(rec.doc_id, None)  # each planned document once, even if an id repeats
                if planned is not None:
                    s, want = planned
                    if text_hash(rec.text) != want:  # the text `curate score` scored, or nothing
                        raise fp.StaleInputError(
                            f"{rec.path} line {rec.row + 1}: document {rec.doc_id} is not the text `curate score` "
                            f"scored (the file changed since); re-run {fp.RESCORE}, `mix plan` and "
                            f"`mix build`")
                    yield s, rec.text
                    if not split_of:
                        return

        try:
            small = self.auto_workers and planned_docs <= 4 * CHUNK_DOCS  # a pool costs more than it saves
            for splits, flat, lengths in self._encoded(_chunks(wanted(), CHUNK_DOCS), 1 if small else self.workers):
                ends = np.cumsum(lengths)
                starts = ends - lengths
                for s, a, b in zip(splits, starts.tolist(), ends.tolist()):
                    writers[s].write(flat[a:b])
                bar.update(len(splits))
        except BaseException:
            for w in writers:
                w.abort()
            raise
        finally:
            bar.close()
        for w in writers:
            w.close()
        if split_of:
            raise fp.StaleInputError(f"source '{name}': {len(split_of)} planned document(s) were not found in its files (first: "
                            f"{next(iter(split_of))}); the files changed since `curate score`: run `curate score` and "
                            f"`mix plan` again")
        result: dict = {"plan_hash": self.plan_hash, "tokenizer": str(self.tok.path),
                        "shard_tokens": self.recipe.mix.shard_tokens, "seed": self.seed, "warnings": []}
        for i, split in enumerate(SPLITS):
            result[split] = self._shuffle_into(work / f"{split}.ds", folder / split, name, i)
        shutil.rmtree(work)
        planned_tokens = {"train": planned["selected"]["tokens"], "valid": planned["valid"]["tokens"]}
        for split in SPLITS:
            got, want = result[split]["tokens"], planned_tokens[split]
            if want and abs(got - want) > TOKEN_TOLERANCE * want:
                result["warnings"].append(
                    f"{name}/{split}: {got:,} tokens in the shards vs {want:,} in the plan's score table: the score "
                    f"table was counted with another tokenizer than {self.tok.path}")
        # checked against their content above (fp.check) and every text against its hash while reading
        result["inputs"] = [{"source": name, "kind": "source"} | r for r in recorded]
        result["shard_files"] = [fp.fingerprint(self.out / f) | {"path": f} for s in SPLITS for p in result[s]["shards"]
                                 for f in (p, f"{p}.index", f"{p}.metadata")]
        write_json(folder / COMPLETE, result)
        self.log(f"{name}: train {result['train']['docs']:,} docs / {result['train']['tokens']:,} tokens, "
                 f"valid {result['valid']['docs']:,} docs / {result['valid']['tokens']:,} tokens")
        return result

    def _encoded(self, chunks: Iterator[tuple[list[int], list[str]]], workers: int):
        if workers <= 1:
            # the tokenizer releases the GIL: encode chunk i on a thread while chunk i+1 is read
            with ThreadPoolExecutor(1) as ex:
                pending = None
                for splits, texts in chunks:
                    nxt = ex.submit(_encode, self.tok, splits, texts)
                    if pending is not None:
                        yield pending.result()
                    pending = nxt
                if pending is not None:
                    yield pending.result()
            return
        if self._pool is None:
            # spawn: forking a process that already runs polars' and the tokenizer's threads can deadlock
            ctx = mp.get_context("spawn")
            self._pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(self.tok,))
        yield from self._pool.imap(_encode_chunk, chunks, chunksize=1)

    def _shuffle_into(self, work_shard: Path, folder: Path, name: str, split_index: int) -> dict:
        """Copy the work shard's documents in a seeded random order into shards of <= shard_tokens tokens."""
        src = Shard(work_shard, np.dtype(self.tok.token_dtype).newbyteorder("<"))
        n = src.num_docs
        folder.mkdir(parents=True, exist_ok=True)
        if n == 0:
            return {"docs": 0, "tokens": 0, "shards": []}
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), split_index])
        order = rng.permutation(n)
        ends = src.ends
        starts = np.concatenate([[0], ends[:-1]])
        tokens = src.tokens
        limit = self.recipe.mix.shard_tokens
        paths: list[Path] = []
        writer: ShardWriter | None = None
        try:
            for i in order.tolist():
                a, b = int(starts[i]), int(ends[i])
                if writer is None or (writer.num_tokens and writer.num_tokens + (b - a) > limit):
                    if writer is not None:
                        writer.close()
                    paths.append(folder / f"{len(paths):05d}.ds")
                    writer = ShardWriter(paths[-1], self.tok.token_dtype, str(self.tok.path))
                writer.write(tokens[a:b])
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        assert writer is not None
        writer.close()
        return {"docs": n, "tokens": int(ends[-1]), "shards": [str(p.relative_to(self.out)) for p in paths]}


def build_recipe(recipe: Recipe, workers: int | None = None, log=print) -> Path:
    """Build all shards of the recipe's plan and write the manifest; returns the manifest path."""
    return Builder(recipe, workers, log).run()

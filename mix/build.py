"""`mix build`: tokenize the planned documents into shards, one set per source and split.

The work is cut along the sources' pieces (continua.partition: whole files, byte ranges of large
JSON Lines files, Parquet row groups): each piece is re-read, its planned documents (matched by
doc_id against the plan's selection, checked against the text hash `curate score` took) are
tokenized in chunks and appended, in input order, to the piece's own work shards
(`SOURCE/.work/NNNNN/{train,valid}.ds` + `docs.parquet`, the documents it found). The merge step
then takes every piece's documents in input order (the first copy of a repeated id) and copies
them in a seeded random order into shards of at most `shard_tokens` tokens, and writes the
manifest. Each unique document is stored once; epochs and shares go to the manifest for the
sampler. Pieces run in this process (a pool of `workers` tokenizer processes, one per core by
default; with one worker, in-process on the tokenizer's own threads) or one task per piece on
the recipe's executor (mix.build_stages); the shards are the same bytes either way, since the
merge sees the same documents in the same order.

Resumable: every shard appears under its final name only when complete (ShardWriter); a piece is
done when its `done.json` names the plan's hash, and a source when its `complete.json` does; a
re-run skips both and rebuilds anything else.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import multiprocessing as mp
import os
import shutil
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from continua import fingerprint as fp
from continua.documents import Record, expand_inputs, iter_source
from continua.partition import Piece, plan_pieces
from continua.io import read_json, write_json
from continua.layout import mix_dir, shards_dir
from continua.recipe import Recipe, SourceConfig
from continua.score_table import text_hash
from continua.tokenizer import TextTokenizer, load_tokenizer
from mix.manifest import Manifest, SourceEntry, SplitEntry
from mix.planfile import read_plan
from mix.planner import PLAN_NAME
from mix.shards import Shard, ShardWriter
from mix.tables import PlanError

COMPLETE = "complete.json"
WORK = ".work"  # SOURCE/.work/NNNNN/: one piece's work shards, docs.parquet and done.json
DOCS = "docs.parquet"  # the planned documents a piece found, in order: doc_id, split, matches (text hash), path, row
PIECE_DONE = "done.json"
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


@dataclass(frozen=True)
class PieceJob:
    """One piece of one source to tokenize; `key` names its work folder (the piece's position)."""

    source: str
    key: str
    piece: Piece


class Builder:
    """Builds the shards of every source of a plan: pieces (here or as executor tasks), then the merge.

    Pickles without its process pool, so executor tasks can carry it."""

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
        self.plan = read_plan(self.plan_path)
        self.plan_hash = self.plan_fp["hash"]
        self.selection_path = self.mix_dir / self.plan["selection"]
        self._check_selection()
        if "source_files" not in self.plan or "text_hash" not in pl.read_parquet_schema(self.selection_path):
            raise fp.StaleInputError(f"{self.plan_path}: made by an older `mix plan` without fingerprints; run "
                                     f"`mix plan` again")
        self.out = shards_dir(recipe)
        self.seed = recipe.run.seed
        self._pool = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pool"] = None
        state["log"] = print
        return state

    # ------------------------------------------------------------------ public

    def run(self) -> Path:
        """Tokenize every piece still to do in this process, then merge: the local build."""
        try:
            for job in self.prepare():
                self.tokenize_piece(job)
        finally:
            self.close_pool()
        return self.finish()

    def prepare(self) -> list[PieceJob]:
        """Check the plan against the recipe and the source files; the pieces still to tokenize.

        Outputs of another plan are removed; pieces already done for this plan are kept."""
        missing = [n for n in self.plan["sources"] if n not in self.recipe.data.sources]
        if missing:
            raise PlanError(f"the plan names source(s) {', '.join(missing)} that the recipe does not have; "
                            f"run `mix plan` again")
        jobs: list[PieceJob] = []
        for name in self.plan["sources"]:
            self._check_source(name, self.recipe.data.sources[name])  # complete shards too: never a stale plan
            if self._completed(name) is not None:
                continue
            folder = self.out / name
            pieces = {f"{i:05d}": p for i, p in enumerate(plan_pieces(self.recipe.data.sources[name]))}
            if folder.exists():  # stale or partial outputs: keep only pieces done for this plan and these files
                for child in folder.iterdir():
                    if child.name != WORK:
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                for child in (folder / WORK).iterdir() if (folder / WORK).is_dir() else ():
                    if child.name not in pieces or not self._piece_done(child, pieces[child.name]):
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            jobs += [PieceJob(name, k, p) for k, p in pieces.items() if not self._piece_done(folder / WORK / k, p)]
        return jobs

    def finish(self) -> Path:
        """Merge every source's pieces into its shards (sources already complete are kept), write the manifest."""
        entries: dict[str, SourceEntry] = {}
        inputs = list(self.plan["inputs"])
        warnings: list[str] = []
        self._check_selection()
        for name, planned in self.plan["sources"].items():
            recorded = self._check_source(name, self.recipe.data.sources[name])  # complete shards too
            done = self._completed(name)
            if done is None:
                done = self._merge_source(name, self.recipe.data.sources[name], planned, recorded)
            else:
                self.log(f"{name}: shards complete for this plan, skipped")
            entries[name] = SourceEntry(
                role=planned["role"], epochs=planned["epochs"], target_tokens=planned["target_tokens"],
                share=planned["share"], train=SplitEntry(**done["train"]), valid=SplitEntry(**done["valid"]),
                resample=planned["resample"], group=planned.get("group"), epoch_tokens=planned["epoch_tokens"])
            inputs.extend(done["inputs"])
            warnings.extend(done["warnings"])
        manifest = Manifest(tokenizer=self.tok.describe(), seed=self.seed, sources=entries,
                            plan=self._plan_record(), inputs=inputs,
                            total_target_tokens=sum(e.target_tokens for e in entries.values()), warnings=warnings)
        return manifest.save(self.out)

    def close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    # ------------------------------------------------------------------ checks

    def _check_selection(self) -> None:
        """The plan file and its selection are the ones this build started from (a task may run much later)."""
        if fp.hash_file(self.plan_path) != self.plan_hash:
            raise fp.StaleInputError(f"{self.plan_path}: changed since this `mix build` started; run `mix build` "
                                     f"again")
        sel = self.selection_path
        if not sel.exists() or fp.hash_file(sel) != self.plan.get("selection_hash"):
            raise fp.StaleInputError(f"{sel} is missing or changed since {self.plan_path} was written: "
                                     f"run `mix plan` again")

    def _stamp(self, piece: Piece) -> dict:
        """What a piece's work depends on: the plan, the tokenizer and its file as it was read."""
        st = Path(piece.path).stat()
        return {"plan_hash": self.plan_hash, "tokenizer": str(self.tok.path), "file": [st.st_size, st.st_mtime_ns]}

    def _piece_done(self, folder: Path, piece: Piece) -> bool:
        marker = folder / PIECE_DONE
        return marker.exists() and read_json(marker) == self._stamp(piece)

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

    # ------------------------------------------------------------------ one piece

    def _wanted(self, job: PieceJob) -> dict[str, tuple[int, str]]:
        """doc_id -> (split index, text hash) of the planned documents that can be in this piece."""
        frame = pl.scan_parquet(self.selection_path).filter(pl.col("source") == job.source)
        piece = job.piece
        if self.recipe.data.sources[job.source].id_field is None:  # ids name their file: read only this file's
            prefix = f"{job.source}/{piece.name}"
            if piece.by_offset:  # ... and, in a file read by byte ranges, only this range's (FILE@OFFSET)
                prefix += "@"
                offset = pl.col("doc_id").str.slice(len(prefix)).cast(pl.Int64, strict=False)
                frame = frame.filter(pl.col("doc_id").str.starts_with(prefix),
                                     offset.is_between(piece.start, piece.stop, closed="left"))
            else:
                frame = frame.filter(pl.col("doc_id").str.starts_with(prefix))
        sel = frame.select("doc_id", (pl.col("split") == "valid").cast(pl.Int8), "text_hash").collect()
        return dict(zip(sel["doc_id"].to_list(), zip(sel["split"].to_list(), sel["text_hash"].to_list())))

    def tokenize_piece(self, job: PieceJob, workers: int | None = None) -> None:
        """Tokenize the planned documents of one piece into its work folder; `done.json` last."""
        from continua.progress import progress

        folder = self.out / job.source / WORK / job.key
        if self._piece_done(folder, job.piece):
            return
        shutil.rmtree(folder, ignore_errors=True)
        cfg = self.recipe.data.sources[job.source]
        want = self._wanted(job)
        found: dict[str, list] = {"doc_id": [], "split": [], "matches": [], "path": [], "row": []}
        writers = [ShardWriter(folder / f"{s}.ds", self.tok.token_dtype, str(self.tok.path)) for s in SPLITS]
        bar = progress(total=len(want), desc=f"tokenize {job.source} piece {job.key}", unit="doc", leave=False,
                   disable=len(want) == 0)

        def wanted() -> Iterator[tuple[int, str]]:
            for rec in iter_source(job.source, cfg, pieces=[job.piece]):
                if not isinstance(rec, Record):
                    continue
                planned = want.pop(rec.doc_id, None)  # each planned document once, even if an id repeats
                if planned is None:
                    continue
                s, expected = planned
                ok = text_hash(rec.text) == expected  # the text `curate score` scored, or nothing (see merge)
                for k, v in zip(found, (rec.doc_id, s, ok, rec.path, rec.row)):
                    found[k].append(v)
                if ok:
                    yield s, rec.text
                if not want:
                    return

        if workers is None:
            small = self.auto_workers and len(want) <= 4 * CHUNK_DOCS  # a pool costs more than it saves
            workers = 1 if small else self.workers
        try:
            for splits, flat, lengths in self._encoded(_chunks(wanted(), CHUNK_DOCS), workers):
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
        pl.DataFrame(found, schema={"doc_id": pl.String, "split": pl.Int8, "matches": pl.Boolean, "path": pl.String,
                                    "row": pl.Int64}).write_parquet(folder / DOCS)
        write_json(folder / PIECE_DONE, self._stamp(job.piece))

    # ------------------------------------------------------------------ merge

    def _merge_source(self, name: str, cfg: SourceConfig, planned: dict, recorded: list[dict]) -> dict:
        pieces = plan_pieces(cfg)
        keys = [f"{i:05d}" for i in range(len(pieces))]
        not_done = [k for k, p in zip(keys, pieces) if not self._piece_done(self.out / name / WORK / k, p)]
        if not_done:
            raise fp.StaleInputError(f"source '{name}': piece(s) {', '.join(not_done[:5])} were not tokenized for "
                                     f"this plan and files (their tasks did not finish); run `mix build` again")
        try:
            return self._merge(name, cfg, keys, planned, recorded)
        except fp.StaleInputError:
            shutil.rmtree(self.out / name / WORK, ignore_errors=True)  # the files changed: read them again next time
            raise

    def _merge(self, name: str, cfg: SourceConfig, keys: list[str], planned: dict, recorded: list[dict]) -> dict:
        folder = self.out / name
        work = folder / WORK
        found = pl.concat([pl.read_parquet(work / k / DOCS).with_columns(piece=pl.lit(i, pl.Int32))
                           for i, k in enumerate(keys)])
        # the first copy of an id in input order is the planned document, as in a single pass over the files
        found = found.with_columns(keep=pl.col("doc_id").is_first_distinct())
        bad = found.filter(pl.col("keep") & ~pl.col("matches"))
        if bad.height:
            b = bad.row(0, named=True)
            raise fp.StaleInputError(
                f"{b['path']} line {b['row'] + 1}: document {b['doc_id']} is not the text `curate score` "
                f"scored (the file changed since); re-run {fp.RESCORE}, `mix plan` and `mix build`")
        sel = pl.scan_parquet(self.selection_path).filter(pl.col("source") == name).select("doc_id").collect()
        got = found.filter("keep")
        if got.height < sel.height:
            lost = sel.join(got.select("doc_id"), on="doc_id", how="anti", maintain_order="left")
            raise fp.StaleInputError(f"source '{name}': {lost.height} planned document(s) were not found in its files "
                                     f"(first: {lost['doc_id'][0]}); the files changed since `curate score`: run "
                                     f"`curate score` and `mix plan` again")
        result: dict = {"plan_hash": self.plan_hash, "tokenizer": str(self.tok.path),
                        "shard_tokens": self.recipe.mix.shard_tokens, "seed": self.seed, "warnings": []}
        # each piece's work shard of a split holds its matching documents of that split, in order
        stored = found.filter("matches").partition_by(["piece", "split"], as_dict=True, maintain_order=True)
        empty = np.zeros(0, dtype=bool)
        for i, split in enumerate(SPLITS):
            parts = [(work / key / f"{split}.ds", stored[(k, i)]["keep"].to_numpy() if (k, i) in stored else empty)
                     for k, key in enumerate(keys)]
            result[split] = self._shuffle_into(parts, folder / split, name, i)
        shutil.rmtree(work, ignore_errors=True)
        planned_tokens = {"train": planned["selected"]["tokens"], "valid": planned["valid"]["tokens"]}
        for split in SPLITS:
            got_tokens, want = result[split]["tokens"], planned_tokens[split]
            if want and abs(got_tokens - want) > TOKEN_TOLERANCE * want:
                result["warnings"].append(
                    f"{name}/{split}: {got_tokens:,} tokens in the shards vs {want:,} in the plan's score table: the "
                    f"score table was counted with another tokenizer than {self.tok.path}")
        # checked against their content (fp.check) and every text against its hash while reading
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

    def _shuffle_into(self, parts: list[tuple[Path, np.ndarray]], folder: Path, name: str, split_index: int) -> dict:
        """Copy the kept documents of the pieces' work shards (in input order: piece by piece) in a seeded
        random order into shards of <= shard_tokens tokens."""
        dtype = np.dtype(self.tok.token_dtype).newbyteorder("<")
        shards, starts, ends, owner = [], [], [], []
        for path, keep in parts:
            src = Shard(path, dtype)
            e = src.ends
            if e.size != keep.size:
                raise fp.StaleInputError(f"{path}: holds {e.size} documents, its docs.parquet lists {keep.size}; "
                                         f"run `mix build` again")
            s = np.concatenate([[0], e[:-1]]).astype(np.int64)
            owner.append(np.full(int(keep.sum()), len(shards), dtype=np.int32))
            starts.append(s[keep])
            ends.append(e[keep])
            shards.append(src)
        folder.mkdir(parents=True, exist_ok=True)
        n = int(sum(x.size for x in owner))
        if n == 0:
            return {"docs": 0, "tokens": 0, "shards": []}
        owner_a, starts_a, ends_a = np.concatenate(owner), np.concatenate(starts), np.concatenate(ends)
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), split_index])
        order = rng.permutation(n)
        limit = self.recipe.mix.shard_tokens
        paths: list[Path] = []
        writer: ShardWriter | None = None
        total = 0
        try:
            for i in order.tolist():
                a, b = int(starts_a[i]), int(ends_a[i])
                if writer is None or (writer.num_tokens and writer.num_tokens + (b - a) > limit):
                    if writer is not None:
                        writer.close()
                    paths.append(folder / f"{len(paths):05d}.ds")
                    writer = ShardWriter(paths[-1], self.tok.token_dtype, str(self.tok.path))
                writer.write(shards[owner_a[i]].tokens[a:b])
                total += b - a
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        assert writer is not None
        writer.close()
        return {"docs": n, "tokens": total, "shards": [str(p.relative_to(self.out)) for p in paths]}


def build_recipe(recipe: Recipe, workers: int | None = None, log=print) -> Path:
    """Build all shards of the recipe's plan in this process and write the manifest; returns its path."""
    return Builder(recipe, workers, log).run()

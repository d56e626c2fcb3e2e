"""`mix plan`: turn score tables and a token budget into a mixture, with every decision explained.

Order of work (each step recorded in the plan with its reason):
1. hold out validation documents per source (seeded hash of doc_id), before anything else;
2. drop training candidates that are exact copies of any validation document, or duplicates;
3. resolve the budget (a percentage refers to one epoch over the filtered domain corpus);
4. split the budget into a domain share and replay shares (preset mixture or compute-equivalent);
5. choose the domain subset and its epochs together so subset x epochs fills the budget (an epoch is
   subset-size tokens of the mixture, the domain drawing its share of them from the subset);
6. draw replay documents per general source (random or DSIR);
7. write plan.json (for people) and selection.parquet (for `mix build`).

Each step is a small function over numbers and tables; the words of every decision and warning are
made from its numbers in mix/explain.py.
"""

from __future__ import annotations

import datetime
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from continua import fingerprint as fp
from continua.documents import expand_inputs, iter_documents
from continua.io import DamagedFileError, atomic_path, read_json, write_json
from continua.layout import curate_dir, mix_dir
from continua.recipe import Recipe, SourceConfig
from continua.schema import RecipeError, to_dict
from continua.score_formula import score_columns, score_expr
from mix import explain
from mix.band import domain_band
from mix.budget import Amount, human_tokens, parse_amount
from mix.explain import Notes
from mix.presets import Preset, get_preset
from mix.stream import DiskPool, LazyRanked, PoolFolder, hold_out, partitions, plan_columns, write_candidates
from mix.tables import KEY, SRC, PlanError, Ranked, SourceTable, describe_inputs, fetch_ids, open_table

PLAN_VERSION = 1
SELECTION_NAME = "selection.parquet"
PLAN_NAME = "plan.json"
HASH_CACHE = ".input_hashes.json"  # fingerprints of the score tables last planned from (hashes reused)


@dataclass
class Picked:
    """Documents chosen for training from one source (or the pooled domain sources)."""

    docs: pl.DataFrame  # _i (row in its source's table), n_tokens, ... (+ _src, score for the domain pool)
    epochs: float
    target_tokens: int
    epoch_tokens: int  # tokens one epoch draws (== unique tokens when resample is fixed)
    resample: str
    method: str

    @property
    def tokens(self) -> int:
        return int(self.docs["n_tokens"].sum()) if self.docs.height else 0


@dataclass
class PlanResult:
    plan: dict
    selection: pl.DataFrame


# ---------------------------------------------------------------- shares of the budget


def budget_shares(domain: list[str], general: dict[str, SourceConfig], pool_tokens: dict[str, int],
                  preset: Preset | None, replay: float, notes: Notes,
                  weights: dict[str, float] | None = None) -> tuple[float, dict[str, float]]:
    """(domain share, {general source: share}) of the budget, shares summing to 1."""
    if preset is not None:
        return _preset_shares(general, pool_tokens, preset, notes)
    if replay > 0:
        if not general:
            raise PlanError(f"[mix] replay = {replay} needs at least one source with role = \"general\"")
        shares = _split(replay, _replay_weights(general, pool_tokens, weights or {}))
        notes.decide(*explain.replay_shares(replay, list(general), bool(weights)))
        return 1.0 - replay, shares
    if general:
        notes.warn(explain.unused_general(list(general)))
    notes.decide(*explain.domain_only())
    return 1.0, {n: 0.0 for n in general}


def _replay_weights(general: dict[str, SourceConfig], pool_tokens: dict[str, int],
                    weights: dict[str, float]) -> dict[str, float]:
    """[mix] replay_weights when given (every key a general source of the plan), else the pools' sizes."""
    if not weights:
        return {n: pool_tokens[n] for n in general}
    unknown = sorted(set(weights) - set(general))
    if unknown:
        raise PlanError(f"[mix] replay_weights names {', '.join(unknown)}, not a replayed (role = \"general\") source "
                        f"of this plan (replayed: {', '.join(general) or 'none'})")
    return {n: float(weights.get(n, 0.0)) for n in general}


def _split(total: float, weights: dict[str, float]) -> dict[str, float]:
    s = sum(weights.values())
    if s <= 0:
        return {n: total / len(weights) for n in weights}
    return {n: total * w / s for n, w in weights.items()}


def _preset_shares(general: dict[str, SourceConfig], pool_tokens: dict[str, int], preset: Preset,
                   notes: Notes) -> tuple[float, dict[str, float]]:
    """Web share -> domain; the other groups -> general sources by `group`, missing groups redistributed."""
    replay_groups = preset.replay_weights()
    by_group: dict[str, list[str]] = {}
    shares = {n: 0.0 for n in general}
    for name, cfg in general.items():
        if cfg.group is None:
            notes.warn(explain.source_without_group(name, preset))
            continue
        g = preset.find_group(cfg.group)
        if g is None or g in preset.web:
            notes.warn(explain.group_not_replayed(name, cfg.group, preset))
            continue
        by_group.setdefault(g, []).append(name)
    if not by_group:
        raise PlanError(f"preset '{preset.name}' keeps {1 - preset.web_share:.1%} of the budget as replay of "
                        f"{', '.join(replay_groups)}, but no general source maps to those groups: add "
                        f"[data.sources.NAME] role = \"general\", group = \"Wikipedia\" (for example)")
    present = {g: replay_groups[g] for g in by_group}
    missing = {g: w for g, w in replay_groups.items() if g not in by_group}
    replay_total = 1.0 - preset.web_share
    scale = replay_total / sum(present.values())
    for g, names in by_group.items():
        shares.update(_split(present[g] * scale, {n: pool_tokens[n] for n in names}))
    if missing:
        notes.warn(explain.groups_redistributed(preset, missing, list(present)))
    notes.decide(*explain.preset_shares(preset, {g: present[g] * scale for g in by_group}, by_group))
    return preset.web_share, shares


# ---------------------------------------------------------------- domain subset x epochs


@dataclass(frozen=True)
class SubsetSize:
    """The domain subset's requested size and the rule that fixed it."""

    rule: str  # "top" (its size is set), "epochs" (set), "auto" (a score: aim at auto_epochs), "fresh" (no ranking)
    tokens: float  # tokens asked of the pool, best documents first
    ranked: bool  # a score, top or epochs makes the subset a quality pick repeated over epochs
    top: Amount | None = None


def subset_size(pool_tokens: int, domain_tokens: int, basis: int, mix, has_score: bool) -> SubsetSize:
    """How many tokens of the ranked pool the subset takes (`basis`: the tokens an epoch count refers to)."""
    avail, b = pool_tokens, max(basis, 1)
    top = parse_amount(mix.top, "[mix] top") if mix.top else None
    ranked = top is not None or mix.epochs is not None or has_score
    if top is not None:
        s_req = top.resolve(avail)
        if s_req > avail:
            raise PlanError(f"[mix] top = {mix.top!r} asks for {s_req:,} tokens but the domain pool holds {avail:,}")
        if mix.epochs is not None and abs(s_req * mix.epochs - b) > 0.01 * b:
            raise PlanError(f"[mix] top = {mix.top!r} ({s_req:,} tokens) x epochs = {mix.epochs:g} gives "
                            f"{s_req * mix.epochs:,.0f} tokens, but the budget is {b:,}: set only one of top and epochs")
        return SubsetSize("top", s_req, ranked, top)
    if mix.epochs is not None:
        s_req = b / mix.epochs
        if s_req > avail:
            raise PlanError(f"[mix] epochs = {mix.epochs:g} over a budget of {b:,} tokens needs a subset of "
                            f"{s_req:,.0f} tokens, but the domain pool holds {avail:,}: raise epochs to at least "
                            f"{b / avail:.3g} or lower the budget")
        return SubsetSize("epochs", s_req, ranked)
    if has_score:
        e = mix.auto_epochs
        floor = mix.min_subset_fraction * avail
        if b / e < floor:
            e = max(1.0, b / floor) if floor > 0 else e
        return SubsetSize("auto", min(b / e, avail), ranked)
    return SubsetSize("fresh", min(float(domain_tokens), avail), ranked)


def subset_epochs(size: SubsetSize, subset_tokens: int, domain_tokens: int, basis: int, mix) -> tuple[float, int]:
    """(epochs over the subset, domain tokens each epoch draws from it)."""
    if not size.ranked:  # fresh data: the whole subset once, more only when the budget exceeds the pool
        return domain_tokens / subset_tokens, subset_tokens
    epochs = float(mix.epochs) if size.rule == "epochs" else max(basis, 1) / subset_tokens
    return epochs, min(subset_tokens, int(round(domain_tokens / epochs)))


def resample_mode(size: SubsetSize, epochs: float, per_epoch: int, subset_tokens: int, resample: str) -> str:
    """"dynamic" (a fresh draw of the subset each epoch), "sample" (one sample read every epoch) or "whole"."""
    partial = size.ranked and per_epoch < subset_tokens
    if resample == "dynamic" and partial and epochs > 1:
        return "dynamic"
    return "sample" if partial else "whole"


def choose_domain(pool: Ranked, domain_tokens: int, total_tokens: int, mix, has_score: bool,
                  notes: Notes) -> Picked:
    """Subset size and epochs together, as the studies count them.

    With a quality ranking (a score, `top` or `epochs`), an epoch is a pass of subset-size S in
    training tokens (Guo et al. 2024: HQ-5B x 4 epochs = 20B = 40% of the 50B corpus), and
    S x epochs = the whole budget. Each epoch draws the domain's share of S from the subset (82%
    with the LLaMA-1 preset) and fills the rest with replay: afresh every epoch when resample is
    "dynamic" ("rate fixed, data dynamic", their better variant), or one sample read every epoch
    when "fixed". Without a preset or replay the domain share is 1 and both modes read the whole
    subset every epoch. Without any ranking the planner takes a random subset as large as the
    domain share, seen once (fresh data beats repeats). `pool` ranks candidates best first.
    """
    avail, d = pool.total_tokens, domain_tokens
    size = subset_size(avail, d, total_tokens, mix, has_score)
    subset = pool.prefix(size.tokens)
    s_act = int(subset["n_tokens"].sum())
    if s_act == 0:
        raise PlanError(f"the domain subset is empty (budget share {d:,} tokens, pool {avail:,} tokens)")
    epochs, per_epoch = subset_epochs(size, s_act, d, total_tokens, mix)
    if epochs > mix.max_epochs:
        raise PlanError(f"the budget asks for {epochs:.2f} epochs over the domain subset ({s_act:,} tokens of a pool "
                        f"of {avail:,}), above max_epochs = {mix.max_epochs:g}: the data cannot give {d:,} "
                        f"tokens; lower the budget, enlarge the subset (top), or raise max_epochs")
    why = explain.subset_rule(size.rule, mix, size.top, avail)
    notes.decide(*explain.domain_subset(subset.height, s_act, avail, epochs, per_epoch, d / max(total_tokens, 1), d, why))
    for warning in explain.domain_subset_warnings(mix, subset.height, s_act, avail, epochs):
        notes.warn(warning)
    mode = resample_mode(size, epochs, per_epoch, s_act, mix.resample)
    if mode == "dynamic":
        picked = Picked(subset, epochs, d, per_epoch, "dynamic", "")
    elif mode == "sample":
        sample = subset.sort(KEY).filter(pl.col("n_tokens").cum_sum().shift(1, fill_value=0) < per_epoch)
        picked = Picked(sample, epochs, d, int(sample["n_tokens"].sum()), "fixed", "")
    else:
        picked = Picked(subset, epochs, d, s_act, "fixed", "")
    notes.decide(*explain.domain_resampling(mode, mix.resample, per_epoch, s_act, picked.docs.height, picked.tokens))
    return picked


# ---------------------------------------------------------------- replay


def choose_general(name: str, pool: Ranked, target: int, mix, method: str, notes: Notes) -> Picked:
    """Documents of one general source, best first in `pool`'s order (DSIR or seeded random), until `target` tokens."""
    avail = pool.total_tokens
    if target <= 0:
        return Picked(pool.frame.head(0), 0.0, 0, 0, "fixed", method)
    if avail == 0:
        raise PlanError(f"general source '{name}' has no documents left for training after validation and dedup")
    picked = pool.prefix(target)
    tokens = int(picked["n_tokens"].sum())
    epochs = target / tokens
    if epochs > mix.max_epochs:
        raise PlanError(f"general source '{name}' would be repeated {epochs:.2f} times ({target:,} tokens from "
                        f"{avail:,}), above max_epochs = {mix.max_epochs:g}: lower the budget or the replay share, "
                        f"or add general data")
    if epochs > mix.warn_epochs:
        notes.warn(explain.replay_repeated(name, epochs, mix.warn_epochs))
    notes.decide(*explain.replay_pick(name, picked.height, tokens, epochs, target, method, target > avail))
    return Picked(picked, epochs, target, tokens, "fixed", method)


def dsir_keys(name: str, cfg: SourceConfig, pool_keys: np.ndarray, seed: int, target_counts: np.ndarray,
              buckets: int) -> np.ndarray:
    """Gumbel keys (log importance weight + Gumbel noise) of the pool's documents toward the reference
    sample: the k largest keys are a weighted sample of k documents without replacement. The raw
    distribution p_raw is fitted on the whole source as it is read."""
    from continua.progress import progress
    from mix.dsir import featurize, gumbel_keys, log_importance_weights

    docs = ((r.doc_id, r.text) for r in progress(iter_documents(name, cfg), desc=f"dsir features {name}", unit="doc",
                                              leave=False))
    feats = featurize(docs, buckets)
    logw = log_importance_weights(feats, target_counts)
    keys = pl.Series(feats.doc_ids, dtype=pl.String).hash(seed).to_numpy()
    order = np.argsort(keys)
    at = np.minimum(np.searchsorted(keys[order], pool_keys), keys.size - 1)
    missing = int((keys[order][at] != pool_keys).sum())
    if missing:
        raise PlanError(f"general source '{name}': {missing} scored document(s) were not found in its files; the "
                        f"files changed since `curate score`")
    return gumbel_keys(logw[order][at], seed)


def reference_counts(recipe: Recipe, buckets: int) -> tuple[np.ndarray, str]:
    """Hashed feature counts of the DSIR reference sample (a recipe source or a file)."""
    from mix.dsir import featurize

    target = recipe.mix.dsir_target
    if target in recipe.data.sources:
        cfg, name, what = recipe.data.sources[target], target, f"recipe source '{target}'"
    else:
        path = Path(target)
        if not path.is_absolute() and recipe.path is not None:
            path = recipe.path.parent.resolve() / path
        if not path.exists():
            raise PlanError(f"[mix] dsir_target {target!r} is neither a recipe source "
                            f"({', '.join(recipe.data.sources)}) nor an existing file ({path})")
        cfg, name, what = SourceConfig(paths=[path], text_field=recipe.mix.dsir_text_field), "reference", f"file {path}"
    feats = featurize(((r.doc_id, r.text) for r in iter_documents(name, cfg)), buckets)
    if feats.num_docs == 0:
        raise PlanError(f"[mix] dsir_target {what} holds no documents")
    return feats.totals(), f"{what} ({feats.num_docs:,} documents)"


# ---------------------------------------------------------------- the plan


def make_plan(recipe: Recipe, log=print) -> PlanResult:
    """Compute the plan for a recipe (only a temporary folder of candidates is written, then removed)."""
    with PoolFolder(mix_dir(recipe)) as tmp:
        return _make_plan(recipe, tmp, log)


def _make_plan(recipe: Recipe, tmp: Path, log=print) -> PlanResult:
    mix = recipe.mix
    notes = Notes()
    amount: Amount = parse_amount(mix.budget)
    preset = get_preset(mix.preset, mix.preset_weights, mix.preset_web)
    cdir = curate_dir(recipe)
    names, domain, general = _roles(recipe, notes)

    tables: dict[str, SourceTable] = {n: open_table(cdir, n, recipe.data.sources[n]) for n in names}
    source_files = {n: fp.check_scored(cdir / n, [p for p, _, _ in expand_inputs(recipe.data.sources[n])],
                                       tables[n].files, recipe.curate.dedup if mix.dedup else []) for n in names}
    score = None
    if mix.score:
        for n in domain:  # names the source, the missing column and the available ones
            try:
                score = score_expr(mix.score, score_columns(tables[n].schema))
            except RecipeError as e:
                raise PlanError(f"domain source '{n}': {e}") from e

    # input hashes are computed beside the planning (xxhash releases the GIL), reused while a file's stat is unchanged
    cache_path = mix_dir(recipe) / HASH_CACHE
    try:
        cache = read_json(cache_path) if cache_path.exists() else {}
    except DamagedFileError:  # a cache: a damaged one is only rebuilt
        cache = {}
    hasher = ThreadPoolExecutor(1)
    hashing = hasher.submit(lambda: [e for n in names for e in describe_inputs(tables[n], cache)])
    hasher.shutdown(wait=False)

    log("reading score tables ...")
    cands = _candidates(tables, domain, list(general), score, mix, recipe.run.seed, tmp, notes)
    budget_tokens, domain_tokens, general_targets = _targets(amount, cands, domain, general, preset, mix, notes)
    dom = _pick_domain(cands.domain, domain_tokens, budget_tokens, mix, notes)
    picks = _pick_replay(recipe, cands.general, general_targets, log, notes)

    log("writing the selection ...")
    plan, selection = _assemble(recipe, amount, budget_tokens, domain, general, tables, cands.sizes, cands.valid,
                                cands.counts, dom, picks, notes, cands.removed)
    plan["inputs"] = hashing.result()
    plan["source_files"] = source_files  # what `mix build` checks before reading a source
    write_json(cache_path, cache)
    if mix.score:  # the kept band beside the rest, for people (mix.band)
        plan["band"] = domain_band(recipe, selection)
    return PlanResult(plan, selection)


def _roles(recipe: Recipe, notes: Notes) -> tuple[list[str], list[str], dict[str, SourceConfig]]:
    """(sources planned, the domain ones, the general ones); a DSIR reference source is none of them."""
    mix, sources = recipe.mix, recipe.data.sources
    reference_source = mix.dsir_target if (mix.dsir_target in sources) else None
    if mix.dsir_target and mix.replay_select != "dsir":
        notes.warn(explain.dsir_target_ignored(mix.dsir_target, mix.replay_select))
        reference_source = None
    if reference_source:
        notes.decide(*explain.dsir_reference_only(reference_source))
    names = [n for n in sources if n != reference_source]
    domain = [n for n in names if sources[n].role == "domain"]
    general = {n: sources[n] for n in names if sources[n].role == "general"}
    if not domain:
        raise PlanError("the recipe has no source with role = \"domain\" ([data.sources.NAME] role = \"domain\")")
    return names, domain, general


@dataclass
class Candidates:
    """What each source can train on once validation is held out and duplicates are gone."""

    valid: dict  # source -> its held-out validation documents (mix.stream.hold_out)
    domain: DiskPool  # the domain sources pooled: a text in two of them counts once
    general: dict[str, DiskPool]
    counts: dict[str, tuple[int, int]]  # source -> (docs, tokens) of its candidates
    sizes: dict[str, tuple[int, int]]  # source -> (docs, tokens) of its score table
    removed: dict[str, tuple[int, int, int]]  # source -> (copies of validation docs, marked by curate, exact dups)


def _candidates(tables: dict[str, SourceTable], domain: list[str], general: list[str], score, mix, seed: int,
                tmp: Path, notes: Notes) -> Candidates:
    """Validation first, then the deduplicated candidates, streamed to disk in partitions by text hash."""
    names = list(tables)
    for n in names:
        for m in plan_columns(tables[n], seed, score if n in domain else None, mix.dedup):
            notes.decide(*explain.marked_duplicates(n, m))
    valid = {n: hold_out(tables[n], mix.valid_fraction, mix.valid_max_docs, mix.min_valid_docs, mix.dedup)
             for n in names}
    notes.decide(*explain.validation({n: valid[n].size for n in names}, seed, mix.valid_fraction,
                                     mix.valid_max_docs, mix.min_valid_docs))
    for n in names:
        if valid[n].size < valid[n].asked:
            notes.warn(explain.validation_short(n, valid[n].asked, valid[n].size, tables[n].docs, mix.min_valid_docs))
    valid_th = np.unique(np.concatenate([valid[n].th for n in names]))
    n_parts = partitions(sum(tables[n].num_docs for n in names))
    elig = {n: write_candidates(tables[n], i, valid[n], valid_th, n_parts, tmp) for i, n in enumerate(names)}
    dpool = DiskPool.build(tmp, tmp / "domain", [names.index(n) for n in domain], n_parts, score is not None,
                           mix.dedup)
    pools = {n: DiskPool.build(tmp, tmp / f"general-{n}", [names.index(n)], n_parts, False, mix.dedup)
             for n in general}
    dups = dict(zip(domain, dpool.duplicates)) | {n: pools[n].duplicates[0] for n in general}
    if dpool.size == 0 or dpool.total_tokens == 0:
        raise PlanError(f"domain source(s) {', '.join(domain)}: no documents left for training after holding out "
                        f"validation documents and removing duplicates")
    counts = {n: (int(dpool.docs[i]), int(dpool.tokens[i])) for i, n in enumerate(domain)}
    counts.update({n: (pools[n].size, pools[n].total_tokens) for n in general})
    removed = {n: (elig[n][0], elig[n][1], dups[n]) for n in names}
    notes.decide(*explain.dedup(removed))
    if dpool.has_score and dpool.nan:
        notes.warn(explain.unscored(dpool.nan, mix.score))
    sizes = {n: (tables[n].num_docs, tables[n].token_sum) for n in names}
    return Candidates(valid, dpool, pools, counts, sizes, removed)


def _targets(amount: Amount, cands: Candidates, domain: list[str], general: dict[str, SourceConfig],
             preset: Preset | None, mix, notes: Notes) -> tuple[int, int, dict[str, int]]:
    """(training tokens in all, domain tokens, {general source: tokens}): the budget split by the shares."""
    domain_avail = cands.domain.total_tokens
    budget_tokens = amount.resolve(domain_avail)
    notes.decide(*explain.budget(amount, domain_avail))
    domain_share, general_shares = budget_shares(domain, general, {n: cands.counts[n][1] for n in general}, preset,
                                                 mix.replay, notes, mix.replay_weights)
    if mix.budget_covers == "domain" and domain_share < 1.0:
        total = budget_tokens / domain_share  # the budget is the domain's; replay comes on top
        general_targets = {n: int(round(total * s)) for n, s in general_shares.items()}
        notes.decide(*explain.budget_covers_domain(budget_tokens, sum(general_targets.values())))
        return budget_tokens + sum(general_targets.values()), budget_tokens, general_targets
    general_targets = {n: int(round(budget_tokens * s)) for n, s in general_shares.items()}
    return budget_tokens, budget_tokens - sum(general_targets.values()), general_targets


def _pick_domain(dpool: DiskPool, domain_tokens: int, budget_tokens: int, mix, notes: Notes) -> Picked:
    """The domain pool ranked (by score, else seeded random) and its subset x epochs."""
    if not dpool.has_score:
        notes.decide(*explain.domain_random_order())
        ranked = LazyRanked(dpool, "key")
    else:
        notes.decide(*explain.domain_ranking(mix.score, mix.prefer))
        ranked = LazyRanked(dpool, "score_desc" if mix.prefer == "high" else "score_asc")
    # budget_covers = "domain": the budget is the domain's own (subset x epochs), replay comes on top
    epoch_basis = domain_tokens if mix.budget_covers == "domain" else budget_tokens
    dom = choose_domain(ranked, domain_tokens, epoch_basis, mix, dpool.has_score, notes)
    if dpool.has_score and dom.docs.height:
        sub = dom.docs["score"].drop_nans()
        cut = sub.min() if mix.prefer == "high" else sub.max()
        notes.decide(*explain.score_cutoff(mix.score, mix.prefer, cut, sub.mean(), dpool.score_mean))
    return dom


def _pick_replay(recipe: Recipe, pools: dict[str, DiskPool], targets: dict[str, int], log, notes: Notes
                 ) -> dict[str, Picked]:
    """Replay documents of each general source: seeded random order, or DSIR toward a reference sample."""
    mix, seed = recipe.mix, recipe.run.seed
    target_counts = None
    picks: dict[str, Picked] = {}
    for n, pool in pools.items():
        ranked, method = LazyRanked(pool, "key"), "seeded random order"
        if targets[n] > 0 and mix.replay_select == "dsir":
            if target_counts is None:
                log("DSIR: reading the reference sample ...")
                target_counts, what = reference_counts(recipe, mix.dsir_buckets)
                notes.decide(*explain.dsir_selection(what, mix.dsir_buckets))
            every = pool.load()  # DSIR weighs every candidate of the source
            cfg = recipe.data.sources[n]
            ranked = Ranked(every, -dsir_keys(n, cfg, every.key, seed, target_counts, mix.dsir_buckets))
            method = "DSIR (Gumbel top-k by importance weight)"
        picks[n] = choose_general(n, ranked, targets[n], mix, method, notes)
    return picks


def _assemble(recipe: Recipe, amount: Amount, budget_tokens: int, domain: list[str], general: dict,
              tables: dict[str, SourceTable], sizes: dict, valid: dict, cand: dict, dom: Picked,
              picks: dict[str, Picked], notes: Notes, removed: dict[str, tuple[int, int, int]]
              ) -> tuple[dict, pl.DataFrame]:
    mix, train = recipe.mix, recipe.train
    tps = train.seq_len * train.batch_size
    sources: dict[str, dict] = {}
    sel_parts = []
    for n in [*domain, *general]:
        p = picks[n] if n in picks else _domain_part(dom, domain.index(n), mix.score)
        repeats = p.target_tokens / p.tokens if p.tokens else 0.0
        ids = fetch_ids(tables[n], p.docs[KEY].to_numpy(), valid[n].key)
        sel_parts.append(ids.select("doc_id", pl.lit(n).alias("source"), "split",
                                    pl.when(pl.col("split") == "valid").then(1.0).otherwise(repeats).alias("repeats"),
                                    "text_hash"))
        sources[n] = _source_entry(recipe.data.sources[n], p, valid[n], sizes[n], cand[n], removed[n], tps)
    total = sum(s["target_tokens"] for s in sources.values())
    for s in sources.values():
        s["share"] = round(s["target_tokens"] / total, 6) if total else 0.0
    steps = total / tps
    if train.steps and abs(train.steps - steps) > 0.1 * steps:
        notes.warn(explain.steps_mismatch(train.steps, steps, train.seq_len, train.batch_size, tps, math.ceil(steps)))
    selection = pl.concat(sel_parts)
    plan = {
        "version": PLAN_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "recipe": str(Path(recipe.path).resolve()) if recipe.path else None,
        "name": recipe.run.name,
        "seed": recipe.run.seed,
        "budget": {"given": amount.given, "covers": mix.budget_covers, "tokens": budget_tokens,
                   "human": human_tokens(budget_tokens),
                   "reference_tokens": sum(cand[n][1] for n in domain),
                   "reference": "one epoch over the filtered domain corpus (after validation hold-out and dedup)"},
        "total_target_tokens": total,
        "train": {"seq_len": train.seq_len, "batch_size": train.batch_size, "tokens_per_step": tps,
                  "expected_steps": round(steps, 2), "recipe_steps": train.steps},
        "tokenizer": str(recipe.data.tokenizer) if recipe.data.tokenizer else None,
        "mix": to_dict(mix),
        "hashing": f"polars {pl.__version__} Expr.hash (stable within a polars version)",
        "inputs": [],
        "decisions": notes.decisions,
        "warnings": notes.warnings,
        "sources": sources,
        "selection": SELECTION_NAME,
    }
    return plan, selection


def _domain_part(dom: Picked, index: int, score: str | None) -> Picked:
    """One domain source's part of the pooled domain pick: its documents and its share of the tokens."""
    docs = dom.docs.filter(pl.col(SRC) == index)
    frac = int(docs["n_tokens"].sum()) / dom.tokens if dom.tokens else 0.0
    target = int(round(dom.target_tokens * frac))
    epoch_tokens = int(round(dom.epoch_tokens * frac))
    epochs = target / epoch_tokens if epoch_tokens else 0.0
    return Picked(docs, epochs, target, epoch_tokens, dom.resample, explain.domain_method(score, dom.resample))


def _source_entry(cfg: SourceConfig, p: Picked, valid, size: tuple[int, int], cand: tuple[int, int],
                  removed: tuple[int, int, int], tokens_per_step: int) -> dict:
    """plan.json's `sources.NAME` (its `share` is added once every source's target is known)."""
    return {
        "role": cfg.role, "group": cfg.group, "method": p.method if p.target_tokens else "unused (no share)",
        "available": {"docs": size[0], "tokens": size[1]},
        "valid": {"docs": valid.size, "tokens": int(valid.tokens.sum())},
        "candidates": {"docs": cand[0], "tokens": cand[1]},
        "removed": dict(zip(("valid_copies", "marked", "duplicates"), removed)),
        "selected": {"docs": p.docs.height, "tokens": p.tokens},
        "epochs": round(p.epochs, 6), "epoch_tokens": p.epoch_tokens, "target_tokens": p.target_tokens,
        "resample": p.resample, "expected_steps": round(p.target_tokens / tokens_per_step, 2),
    }


def write_plan(result: PlanResult, folder: Path) -> Path:
    """selection.parquet first, then plan.json naming its hash: a plan never points at a missing selection."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sel_path = folder / SELECTION_NAME
    with atomic_path(sel_path) as tmp:
        result.selection.write_parquet(tmp, compression="lz4", statistics=False)
    result.plan["selection_hash"] = fp.hash_file(sel_path)
    plan_path = folder / PLAN_NAME
    write_json(plan_path, result.plan)
    return plan_path


def plan_recipe(recipe: Recipe, log=print) -> tuple[Path, PlanResult]:
    result = make_plan(recipe, log=log)
    return write_plan(result, mix_dir(recipe)), result

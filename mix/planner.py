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
"""

from __future__ import annotations

import datetime
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from continua import fingerprint as fp
from continua.documents import expand_inputs, iter_documents
from continua.io import atomic_path, read_json, write_json
from continua.layout import curate_dir, mix_dir
from continua.recipe import Recipe, SourceConfig
from continua.schema import RecipeError, to_dict
from mix.band import domain_band
from mix.budget import Amount, human_tokens, parse_amount
from mix.presets import Preset, get_preset
from mix.score import score_columns, score_expr
from mix.stream import DiskPool, LazyRanked, PoolFolder, hold_out, partitions, plan_columns, write_candidates
from mix.tables import KEY, SRC, PlanError, Ranked, SourceTable, describe_inputs, fetch_ids, open_table

PLAN_VERSION = 1
SELECTION_NAME = "selection.parquet"
PLAN_NAME = "plan.json"
HASH_CACHE = ".input_hashes.json"  # fingerprints of the score tables last planned from (hashes reused)


@dataclass
class Notes:
    """The plan's log: decisions with their reasons, and warnings a person should read."""

    decisions: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def decide(self, step: str, decision: str, reason: str) -> None:
        self.decisions.append({"step": step, "decision": decision, "reason": reason})

    def warn(self, message: str) -> None:
        self.warnings.append(message)


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
                  preset: Preset | None, replay: float, notes: Notes) -> tuple[float, dict[str, float]]:
    """(domain share, {general source: share}) of the budget, shares summing to 1."""
    if preset is not None:
        return _preset_shares(general, pool_tokens, preset, notes)
    if replay > 0:
        if not general:
            raise PlanError(f"[mix] replay = {replay} needs at least one source with role = \"general\"")
        shares = _split(replay, {n: pool_tokens[n] for n in general})
        notes.decide("shares", f"domain {1 - replay:.1%}, replay {replay:.1%} over {', '.join(general)}",
                     f"compute-equivalent replay (Ibrahim et al. 2024): {replay:.1%} of every batch comes from "
                     f"general data and the domain tokens are cut by the same amount; several general sources "
                     f"split the replay share in proportion to their available tokens")
        return 1.0 - replay, shares
    if general:
        notes.warn(f"general source(s) {', '.join(general)} get no training tokens (neither [mix] replay nor preset "
                   f"is set); they still give validation sets")
    notes.decide("shares", "domain 100%", "no replay and no preset mixture: the whole budget is domain data")
    return 1.0, {n: 0.0 for n in general}


def _split(total: float, weights: dict[str, int]) -> dict[str, float]:
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
            notes.warn(f"general source '{name}' has no group; preset '{preset.name}' gives it no tokens "
                       f"(set [data.sources.{name}] group = one of {', '.join(replay_groups)})")
            continue
        g = preset.find_group(cfg.group)
        if g is None or g in preset.web:
            notes.warn(f"general source '{name}' has group '{cfg.group}', which is not a replay group of preset "
                       f"'{preset.name}' ({', '.join(replay_groups)}): it gets no tokens")
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
        notes.warn(f"preset '{preset.name}' groups without a source: {', '.join(f'{g} ({w:.1%})' for g, w in missing.items())}; "
                   f"their share is redistributed proportionally over {', '.join(present)}")
    notes.decide("shares", f"domain {preset.web_share:.1%} (web groups {', '.join(preset.web)}), replay "
                 + ", ".join(f"{g} {present[g] * scale:.2%} -> {', '.join(by_group[g])}" for g in by_group),
                 f"mixture like the original pre-training (Guo et al. 2024, strategy 3; {preset.reference}): the web "
                 f"share goes to domain data, the other groups stay as replay in their original proportions")
    return preset.web_share, shares


# ---------------------------------------------------------------- domain subset x epochs


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
    avail = pool.total_tokens
    d, b = domain_tokens, max(total_tokens, 1)
    share = d / b
    top = parse_amount(mix.top, "[mix] top") if mix.top else None
    ranked = top is not None or mix.epochs is not None or has_score
    if top is not None:
        s_req = top.resolve(avail)
        if s_req > avail:
            raise PlanError(f"[mix] top = {mix.top!r} asks for {s_req:,} tokens but the domain pool holds {avail:,}")
        if mix.epochs is not None and abs(s_req * mix.epochs - b) > 0.01 * b:
            raise PlanError(f"[mix] top = {mix.top!r} ({s_req:,} tokens) x epochs = {mix.epochs:g} gives "
                            f"{s_req * mix.epochs:,.0f} tokens, but the budget is {b:,}: set only one of top and epochs")
        why = (f"top = {mix.top!r} fixes the subset ({top.describe(avail, 'the domain pool')}); epochs = budget / "
               f"subset (each epoch the size of the subset, as in Guo et al. 2024)")
    elif mix.epochs is not None:
        s_req = b / mix.epochs
        if s_req > avail:
            raise PlanError(f"[mix] epochs = {mix.epochs:g} over a budget of {b:,} tokens needs a subset of "
                            f"{s_req:,.0f} tokens, but the domain pool holds {avail:,}: raise epochs to at least "
                            f"{b / avail:.3g} or lower the budget")
        why = f"epochs = {mix.epochs:g} is fixed; the subset is budget / epochs"
    elif has_score:
        e = mix.auto_epochs
        floor = mix.min_subset_fraction * avail
        if b / e < floor:
            e = max(1.0, b / floor) if floor > 0 else e
        s_req = min(b / e, avail)
        why = (f"a score ranks quality, so the planner keeps the best documents and repeats them: it aims at "
               f"{mix.auto_epochs:g} epochs (Guo et al. 2024 best at 4; Muennighoff et al. 2023: up to ~4 epochs "
               f"cost almost nothing), fewer when the subset would fall below min_subset_fraction = "
               f"{mix.min_subset_fraction:g} of the pool, more when the pool is too small")
    else:
        s_req = min(float(d), avail)
        why = ("no score and neither top nor epochs: fresh data beats repeated data, so the planner takes a random "
               "subset as large as the domain share (one epoch), repeating only when the budget exceeds the pool")
    subset = pool.prefix(s_req)
    s_act = int(subset["n_tokens"].sum())
    if s_act == 0:
        raise PlanError(f"the domain subset is empty (budget share {d:,} tokens, pool {avail:,} tokens)")
    if ranked:
        epochs = float(mix.epochs) if (mix.epochs is not None and top is None) else b / s_act
        per_epoch = min(s_act, int(round(d / epochs)))  # domain tokens each epoch draws from the subset
    else:
        epochs, per_epoch = d / s_act, s_act
    if epochs > mix.max_epochs:
        raise PlanError(f"the budget asks for {epochs:.2f} epochs over the domain subset ({s_act:,} tokens of a pool "
                        f"of {avail:,}), above max_epochs = {mix.max_epochs:g}: the data cannot give {d:,} "
                        f"tokens; lower the budget, enlarge the subset (top), or raise max_epochs")
    notes.decide("domain subset", f"{subset.height:,} documents, {s_act:,} tokens ({s_act / avail:.1%} of the pool) "
                 f"x {epochs:.3g} epochs; each epoch {per_epoch:,} domain tokens ({share:.1%} of the mixture), "
                 f"{d:,} domain tokens in all", why)
    if epochs > mix.warn_epochs:
        notes.warn(f"domain subset is repeated {epochs:.2f} times (> {mix.warn_epochs:g}): returns fall fast beyond "
                   f"~4 epochs (Muennighoff et al. 2023)")
    if epochs < 0.99:  # token rounding leaves ordinary one-epoch plans at 0.99x
        notes.warn(f"domain epochs {epochs:.2f} < 1: only part of the subset will be seen; a smaller top would "
                   f"keep only the best documents")
    if subset.height < mix.min_subset_docs or s_act < mix.min_subset_fraction * avail:
        notes.warn(f"domain subset of {subset.height:,} documents / {s_act:,} tokens may be too small to be "
                   f"representative (min_subset_docs = {mix.min_subset_docs}, min_subset_fraction = "
                   f"{mix.min_subset_fraction:g} of the pool = {mix.min_subset_fraction * avail:,.0f} tokens)")
    redraw = ranked and per_epoch < s_act and epochs > 1
    if mix.resample == "dynamic" and redraw:
        notes.decide("domain resampling", f"dynamic: each epoch draws a fresh {per_epoch:,}-token sample of the "
                     f"{s_act:,}-token subset",
                     "resample = \"dynamic\" (Guo et al. 2024, 'rate fixed, data dynamic', their better variant): the "
                     "domain rate in the mixture stays fixed while its documents are re-drawn from the subset every "
                     "epoch (seeded by the epoch)")
        return Picked(subset, epochs, d, per_epoch, "dynamic", "")
    if ranked and per_epoch < s_act:
        sample = subset.sort(KEY).filter(pl.col("n_tokens").cum_sum().shift(1, fill_value=0) < per_epoch)
        notes.decide("domain resampling", f"fixed: one seeded sample of {sample.height:,} documents "
                     f"({int(sample['n_tokens'].sum()):,} tokens) of the subset, read every epoch",
                     "resample = \"fixed\" ('rate fixed, data fixed'): the domain share of an epoch is sampled "
                     "from the subset once and the same sample is read every epoch")
        return Picked(sample, epochs, d, int(sample["n_tokens"].sum()), "fixed", "")
    reason = ("every epoch reads the whole subset (the domain share is 1, or there is at most one epoch), so "
              "there is nothing to re-draw" if mix.resample == "dynamic" else "resample = \"fixed\": every epoch "
              "re-reads the same subset")
    notes.decide("domain resampling", "fixed", reason)
    return Picked(subset, epochs, d, s_act, "fixed", "")


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
        notes.warn(f"general source '{name}' is repeated {epochs:.2f} times (> {mix.warn_epochs:g})")
    notes.decide(f"replay {name}", f"{picked.height:,} documents, {tokens:,} tokens x {epochs:.3g} epochs = "
                 f"{target:,} tokens", f"{method}: " + ("the pool is smaller than the share, so all of it is "
                                                        "repeated" if target > avail else "documents taken in "
                                                        "that order until the share is filled"))
    return Picked(picked, epochs, target, tokens, "fixed", method)


def dsir_keys(name: str, cfg: SourceConfig, pool_keys: np.ndarray, seed: int, target_counts: np.ndarray,
              buckets: int) -> np.ndarray:
    """Gumbel keys (log importance weight + Gumbel noise) of the pool's documents toward the reference
    sample: the k largest keys are a weighted sample of k documents without replacement. The raw
    distribution p_raw is fitted on the whole source as it is read."""
    from tqdm import tqdm

    from mix.dsir import featurize, gumbel_keys, log_importance_weights

    docs = ((r.doc_id, r.text) for r in tqdm(iter_documents(name, cfg), desc=f"dsir features {name}", unit="doc",
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
    seed = recipe.run.seed
    notes = Notes()
    amount: Amount = parse_amount(mix.budget)
    preset = get_preset(mix.preset, mix.preset_weights, mix.preset_web)
    cdir = curate_dir(recipe)

    reference_source = mix.dsir_target if (mix.dsir_target in recipe.data.sources) else None
    if mix.dsir_target and mix.replay_select != "dsir":
        notes.warn(f"[mix] dsir_target = {mix.dsir_target!r} is ignored: replay_select is {mix.replay_select!r}")
        reference_source = None
    if reference_source:
        notes.decide("sources", f"'{reference_source}' is the DSIR reference sample only",
                     "named by [mix] dsir_target: it describes the distribution replay should resemble, so it is "
                     "neither trained on nor held out")
    names = [n for n in recipe.data.sources if n != reference_source]
    domain = [n for n in names if recipe.data.sources[n].role == "domain"]
    general = {n: recipe.data.sources[n] for n in names if recipe.data.sources[n].role == "general"}
    if not domain:
        raise PlanError("the recipe has no source with role = \"domain\" ([data.sources.NAME] role = \"domain\")")

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
    cache = read_json(cache_path) if cache_path.exists() else {}
    hasher = ThreadPoolExecutor(1)
    hashing = hasher.submit(lambda: [e for n in names for e in describe_inputs(tables[n], cache)])
    hasher.shutdown(wait=False)

    log("reading score tables ...")
    for n in names:
        for m in plan_columns(tables[n], seed, score if n in domain else None, mix.dedup):
            notes.decide(f"duplicates {n}", m, "curate marked these documents as duplicates")

    # 1. validation first
    valid = {n: hold_out(tables[n], mix.valid_fraction, mix.valid_max_docs, mix.min_valid_docs) for n in names}
    notes.decide("validation", ", ".join(f"{n}: {valid[n].size:,} docs" for n in names),
                 f"held out per source before any selection: the documents with the smallest hash of (doc_id, seed "
                 f"{seed}), {mix.valid_fraction:g} of the documents, at most {mix.valid_max_docs}, at least "
                 f"{mix.min_valid_docs}; they are never trained on, nor is any exact copy of them (text_hash) in any source")
    valid_th = np.unique(np.concatenate([valid[n].th for n in names]))

    # 2. candidates, deduplicated (domain sources pooled: a text in two domain sources counts once), streamed
    #    to disk in partitions by text hash (mix.stream)
    n_parts = partitions(sum(tables[n].num_docs for n in names))
    elig = {n: write_candidates(tables[n], i, valid[n], valid_th, n_parts, tmp) for i, n in enumerate(names)}
    dpool = DiskPool.build(tmp, tmp / "domain", [names.index(n) for n in domain], n_parts, score is not None,
                           mix.dedup)
    pools = {n: DiskPool.build(tmp, tmp / f"general-{n}", [names.index(n)], n_parts, False, mix.dedup)
             for n in general}
    dups = dict(zip(domain, dpool.duplicates)) | {n: pools[n].duplicates[0] for n in general}
    domain_avail = dpool.total_tokens
    if dpool.size == 0 or domain_avail == 0:
        raise PlanError(f"domain source(s) {', '.join(domain)}: no documents left for training after holding out "
                        f"validation documents and removing duplicates")
    cand = {n: (int(dpool.docs[i]), int(dpool.tokens[i])) for i, n in enumerate(domain)}
    cand.update({n: (pools[n].size, pools[n].total_tokens) for n in general})
    sizes = {n: (tables[n].num_docs, tables[n].token_sum) for n in names}
    notes.decide("dedup", "; ".join(f"{n}: {elig[n][0]:,} copies of validation documents, {elig[n][1]:,} marked by "
                                    f"curate, {dups[n]:,} exact duplicates removed" for n in names),
                 "copies of validation documents (same text_hash, in any source) never train; with dedup = true also "
                 "documents curate marked as duplicates and exact duplicates (also across domain sources) go, so no "
                 "text counts twice; of several copies, the one with the smallest seeded key stays")
    if dpool.has_score and dpool.nan:
        notes.warn(f"{dpool.nan:,} domain documents have no value for score {mix.score!r}: they rank last")

    # 3. budget
    budget_tokens = amount.resolve(domain_avail)
    notes.decide("budget", amount.describe(domain_avail, "one epoch over the filtered domain corpus"),
                 "a percentage refers to the 'original training budget' of the studies: one epoch over the domain "
                 "corpus after validation hold-out and dedup")

    # 4. shares
    domain_share, general_shares = budget_shares(domain, general, {n: cand[n][1] for n in general}, preset,
                                                 mix.replay, notes)
    if mix.budget_covers == "domain" and domain_share < 1.0:
        domain_tokens = budget_tokens
        total = domain_tokens / domain_share
        general_targets = {n: int(round(total * s)) for n, s in general_shares.items()}
        notes.decide("budget covers", f"domain tokens = {domain_tokens:,}; replay adds "
                     f"{sum(general_targets.values()):,} tokens on top",
                     "budget_covers = \"domain\": the budget sets the domain tokens (e.g. subset x epochs of the "
                     "studies) and the replay shares are added so that the domain keeps its share of the total")
        budget_tokens = domain_tokens + sum(general_targets.values())
    else:
        general_targets = {n: int(round(budget_tokens * s)) for n, s in general_shares.items()}
        domain_tokens = budget_tokens - sum(general_targets.values())

    # 5. domain subset and epochs
    if not dpool.has_score:
        notes.decide("domain ranking", "seeded random order", "no [mix] score: every domain document is equally good")
        ranked = LazyRanked(dpool, "key")
    else:
        notes.decide("domain ranking", f"by {mix.score} ({'higher' if mix.prefer == 'high' else 'lower'} is better)",
                     "quality subset (Guo et al. 2024, strategy 2): the best documents by the chosen score; ties are "
                     "ordered by the seeded key, missing scores rank last")
        ranked = LazyRanked(dpool, "score_desc" if mix.prefer == "high" else "score_asc")
    # budget_covers = "domain": the budget is the domain's own (subset x epochs), replay comes on top
    epoch_basis = domain_tokens if mix.budget_covers == "domain" else budget_tokens
    dom = choose_domain(ranked, domain_tokens, epoch_basis, mix, dpool.has_score, notes)
    if dpool.has_score and dom.docs.height:
        sub = dom.docs["score"].drop_nans()
        cut = sub.min() if mix.prefer == "high" else sub.max()
        notes.decide("score cutoff", f"{mix.score} {'>=' if mix.prefer == 'high' else '<='} {cut:.6g}",
                     f"mean in the subset {sub.mean():.6g} vs {dpool.score_mean:.6g} in the pool")

    # 6. replay
    target_counts = None
    picks: dict[str, Picked] = {}
    for n, cfg in general.items():
        ranked_n, method = LazyRanked(pools[n], "key"), "seeded random order"
        if general_targets[n] > 0 and mix.replay_select == "dsir":
            if target_counts is None:
                log("DSIR: reading the reference sample ...")
                target_counts, what = reference_counts(recipe, mix.dsir_buckets)
                notes.decide("replay selection", f"DSIR toward {what}",
                             f"importance resampling (Xie et al. 2023): hashed unigram+bigram features in "
                             f"{mix.dsir_buckets} buckets, log w = sum of (log p_target - log p_raw), Gumbel top-k "
                             f"so replay resembles the reference")
            every = pools[n].load()  # DSIR weighs every candidate of the source
            ranked_n = Ranked(every, -dsir_keys(n, cfg, every.key, seed, target_counts, mix.dsir_buckets))
            method = "DSIR (Gumbel top-k by importance weight)"
        picks[n] = choose_general(n, ranked_n, general_targets[n], mix, method, notes)

    log("writing the selection ...")
    plan, selection = _assemble(recipe, amount, budget_tokens, domain, general, tables, sizes, valid, cand, dom,
                                picks, notes, {n: (elig[n][0], elig[n][1], dups[n]) for n in names})
    plan["inputs"] = hashing.result()
    plan["source_files"] = source_files  # what `mix build` checks before reading a source
    write_json(cache_path, cache)
    if mix.score:  # the kept band beside the rest, for people (mix.band)
        plan["band"] = domain_band(recipe, selection)
    return PlanResult(plan, selection)


def _assemble(recipe: Recipe, amount: Amount, budget_tokens: int, domain: list[str], general: dict,
              tables: dict[str, SourceTable], sizes: dict, valid: dict, cand: dict, dom: Picked,
              picks: dict[str, Picked], notes: Notes, removed: dict[str, tuple[int, int, int]]
              ) -> tuple[dict, pl.DataFrame]:
    mix, train = recipe.mix, recipe.train
    tps = train.seq_len * train.batch_size
    sources: dict[str, dict] = {}
    sel_parts = []
    dom_tokens = dom.tokens
    for n in [*domain, *general]:
        cfg, t = recipe.data.sources[n], tables[n]
        if n in picks:
            p = picks[n]
            docs = p.docs
            target, epochs, epoch_tokens, resample, method = p.target_tokens, p.epochs, p.epoch_tokens, "fixed", p.method
        else:
            docs = dom.docs.filter(pl.col(SRC) == domain.index(n))
            part = int(docs["n_tokens"].sum())
            frac = part / dom_tokens if dom_tokens else 0.0
            target = int(round(dom.target_tokens * frac))
            epoch_tokens = int(round(dom.epoch_tokens * frac))
            epochs = target / epoch_tokens if epoch_tokens else 0.0
            resample = dom.resample
            method = (f"quality subset by {mix.score}" if mix.score else "random subset") + (
                ", re-drawn each epoch" if resample == "dynamic" else "")
        sel_tokens = int(docs["n_tokens"].sum())
        repeats = target / sel_tokens if sel_tokens else 0.0
        v = valid[n]
        ids = fetch_ids(t, docs[KEY].to_numpy(), v.key)
        sel_parts.append(ids.select("doc_id", pl.lit(n).alias("source"), "split",
                                    pl.when(pl.col("split") == "valid").then(1.0).otherwise(repeats).alias("repeats"),
                                    "text_hash"))
        sources[n] = {
            "role": cfg.role, "group": cfg.group, "method": method if target else "unused (no share)",
            "available": {"docs": sizes[n][0], "tokens": sizes[n][1]},
            "valid": {"docs": v.size, "tokens": int(v.tokens.sum())},
            "candidates": {"docs": cand[n][0], "tokens": cand[n][1]},
            "removed": dict(zip(("valid_copies", "marked", "duplicates"), removed[n])),
            "selected": {"docs": docs.height, "tokens": sel_tokens},
            "epochs": round(epochs, 6), "epoch_tokens": epoch_tokens, "target_tokens": target,
            "resample": resample, "expected_steps": round(target / tps, 2),
        }
    total = sum(s["target_tokens"] for s in sources.values())
    for s in sources.values():
        s["share"] = round(s["target_tokens"] / total, 6) if total else 0.0
    steps = total / tps
    if train.steps and abs(train.steps - steps) > 0.1 * steps:
        notes.warn(f"[train] steps = {train.steps} but the budget fills {steps:,.1f} steps of "
                   f"{train.seq_len} x {train.batch_size} = {tps:,} tokens; set train.steps = {math.ceil(steps)} "
                   f"(or 0: derived from the plan) to train on the whole plan")
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

"""What `mix plan` tells people: every decision's wording and every warning, made from the decision's numbers.

The planner (mix/planner.py) computes; this module only words what it computed, so the arithmetic reads
without prose beside it and the texts can change without touching a number. Each `decide`-style
function returns `(step, decision, reason)` for `Notes.decide`; the `*_warnings` functions return
the warnings that apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mix.budget import Amount
    from mix.presets import Preset

Decision = tuple[str, str, str]


@dataclass
class Notes:
    """The plan's log: decisions with their reasons, and warnings a person should read."""

    decisions: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def decide(self, step: str, decision: str, reason: str) -> None:
        self.decisions.append({"step": step, "decision": decision, "reason": reason})

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# ---------------------------------------------------------------- sources and candidates


def dsir_reference_only(source: str) -> Decision:
    return ("sources", f"'{source}' is the DSIR reference sample only",
            "named by [mix] dsir_target: it describes the distribution replay should resemble, so it is "
            "neither trained on nor held out")


def dsir_target_ignored(target: str, replay_select: str) -> str:
    return f"[mix] dsir_target = {target!r} is ignored: replay_select is {replay_select!r}"


def marked_duplicates(source: str, message: str) -> Decision:
    return f"duplicates {source}", message, "curate marked these documents as duplicates"


def validation(sizes: dict[str, int], seed: int, fraction: float, max_docs: int, min_docs: int) -> Decision:
    return ("validation", ", ".join(f"{n}: {size:,} docs" for n, size in sizes.items()),
            f"held out per source before any selection: the documents with the smallest hash of (doc_id, seed "
            f"{seed}), {fraction:g} of the documents, at most {max_docs}, at least "
            f"{min_docs}; they are never trained on, nor is any exact copy of them (text_hash) in any source")


def validation_short(source: str, asked: int, got: int, docs: int, min_docs: int) -> str:
    """A deduplicated validation set smaller than asked: the source holds only `got` distinct texts."""
    low = f", below min_valid_docs = {min_docs}" if got < min_docs else ""
    return (f"source '{source}': validation set of {got:,} documents, {asked:,} asked{low}: its {docs:,} documents "
            f"hold only {got:,} distinct texts after dedup, all held out, so none of its documents is left to train "
            f"on and its validation loss rests on {got:,} texts; a smaller [mix] valid_fraction or valid_max_docs "
            f"(below {got:,}) leaves some of them to train on")


def dedup(removed: dict[str, tuple[int, int, int]]) -> Decision:
    """`removed`: per source (copies of validation documents, marked by curate, exact duplicates)."""
    return ("dedup", "; ".join(f"{n}: {copies:,} copies of validation documents, {marked:,} marked by "
                               f"curate, {dups:,} exact duplicates removed" for n, (copies, marked, dups) in removed.items()),
            "copies of validation documents (same text_hash, in any source) never train; with dedup = true also "
            "documents curate marked as duplicates and exact duplicates (also across domain sources) go, so no "
            "text counts twice; of several copies, the one with the smallest seeded key stays")


def unscored(count: int, score: str) -> str:
    return f"{count:,} domain documents have no value for score {score!r}: they rank last"


# ---------------------------------------------------------------- budget and shares


def budget(amount: Amount, domain_tokens: int) -> Decision:
    return ("budget", amount.describe(domain_tokens, "one epoch over the filtered domain corpus"),
            "a percentage refers to the 'original training budget' of the studies: one epoch over the domain "
            "corpus after validation hold-out and dedup")


def replay_shares(replay: float, general: list[str], weighted: bool = False) -> Decision:
    split = ("split the replay share by [mix] replay_weights" if weighted else
             "split the replay share in proportion to their available tokens")
    return ("shares", f"domain {1 - replay:.1%}, replay {replay:.1%} over {', '.join(general)}",
            f"compute-equivalent replay (Ibrahim et al. 2024): {replay:.1%} of every batch comes from "
            f"general data and the domain tokens are cut by the same amount; several general sources {split}")


def unused_general(general: list[str]) -> str:
    return (f"general source(s) {', '.join(general)} get no training tokens (neither [mix] replay nor preset "
            f"is set); they still give validation sets")


def domain_only() -> Decision:
    return "shares", "domain 100%", "no replay and no preset mixture: the whole budget is domain data"


def source_without_group(source: str, preset: Preset) -> str:
    return (f"general source '{source}' has no group; preset '{preset.name}' gives it no tokens "
            f"(set [data.sources.{source}] group = one of {', '.join(preset.replay_weights())})")


def group_not_replayed(source: str, group: str, preset: Preset) -> str:
    return (f"general source '{source}' has group '{group}', which is not a replay group of preset "
            f"'{preset.name}' ({', '.join(preset.replay_weights())}): it gets no tokens")


def groups_redistributed(preset: Preset, missing: dict[str, float], present: list[str]) -> str:
    return (f"preset '{preset.name}' groups without a source: {', '.join(f'{g} ({w:.1%})' for g, w in missing.items())}; "
            f"their share is redistributed proportionally over {', '.join(present)}")


def preset_shares(preset: Preset, group_shares: dict[str, float], by_group: dict[str, list[str]]) -> Decision:
    return ("shares", f"domain {preset.web_share:.1%} (web groups {', '.join(preset.web)}), replay "
            + ", ".join(f"{g} {group_shares[g]:.2%} -> {', '.join(by_group[g])}" for g in by_group),
            f"mixture like the original pre-training (Guo et al. 2024, strategy 3; {preset.reference}): the web "
            f"share goes to domain data, the other groups stay as replay in their original proportions")


def budget_covers_domain(domain_tokens: int, replay_tokens: int) -> Decision:
    return ("budget covers", f"domain tokens = {domain_tokens:,}; replay adds {replay_tokens:,} tokens on top",
            "budget_covers = \"domain\": the budget sets the domain tokens (e.g. subset x epochs of the "
            "studies) and the replay shares are added so that the domain keeps its share of the total")


# ---------------------------------------------------------------- the domain subset


def domain_random_order() -> Decision:
    return "domain ranking", "seeded random order", "no [mix] score: every domain document is equally good"


def domain_ranking(score: str, prefer: str) -> Decision:
    return ("domain ranking", f"by {score} ({'higher' if prefer == 'high' else 'lower'} is better)",
            "quality subset (Guo et al. 2024, strategy 2): the best documents by the chosen score; ties are "
            "ordered by the seeded key, missing scores rank last")


def subset_rule(rule: str, mix, top: Amount | None, pool_tokens: int) -> str:
    """Why the subset has its size: `top`, `epochs`, the score's auto epochs, or fresh data."""
    if rule == "top":
        return (f"top = {mix.top!r} fixes the subset ({top.describe(pool_tokens, 'the domain pool')}); epochs = budget / "
                f"subset (each epoch the size of the subset, as in Guo et al. 2024)")
    if rule == "epochs":
        return f"epochs = {mix.epochs:g} is fixed; the subset is budget / epochs"
    if rule == "auto":
        return (f"a score ranks quality, so the planner keeps the best documents and repeats them: it aims at "
                f"{mix.auto_epochs:g} epochs (Guo et al. 2024 best at 4; Muennighoff et al. 2023: up to ~4 epochs "
                f"cost almost nothing), fewer when the subset would fall below min_subset_fraction = "
                f"{mix.min_subset_fraction:g} of the pool, more when the pool is too small")
    return ("no score and neither top nor epochs: fresh data beats repeated data, so the planner takes a random "
            "subset as large as the domain share (one epoch), repeating only when the budget exceeds the pool")


def domain_subset(docs: int, tokens: int, pool_tokens: int, epochs: float, per_epoch: int, share: float,
                  domain_tokens: int, why: str) -> Decision:
    return ("domain subset", f"{docs:,} documents, {tokens:,} tokens ({tokens / pool_tokens:.1%} of the pool) "
            f"x {epochs:.3g} epochs; each epoch {per_epoch:,} domain tokens ({share:.1%} of the mixture), "
            f"{domain_tokens:,} domain tokens in all", why)


def domain_subset_warnings(mix, docs: int, tokens: int, pool_tokens: int, epochs: float) -> list[str]:
    out = []
    if epochs > mix.warn_epochs:
        out.append(f"domain subset is repeated {epochs:.2f} times (> {mix.warn_epochs:g}): returns fall fast beyond "
                   f"~4 epochs (Muennighoff et al. 2023)")
    if epochs < 0.99:  # token rounding leaves ordinary one-epoch plans at 0.99x
        out.append(f"domain epochs {epochs:.2f} < 1: only part of the subset will be seen; a smaller top would "
                   f"keep only the best documents")
    if docs < mix.min_subset_docs or tokens < mix.min_subset_fraction * pool_tokens:
        out.append(f"domain subset of {docs:,} documents / {tokens:,} tokens may be too small to be "
                   f"representative (min_subset_docs = {mix.min_subset_docs}, min_subset_fraction = "
                   f"{mix.min_subset_fraction:g} of the pool = {mix.min_subset_fraction * pool_tokens:,.0f} tokens)")
    return out


def domain_resampling(mode: str, resample: str, per_epoch: int, subset_tokens: int, sample_docs: int,
                      sample_tokens: int) -> Decision:
    """`mode`: "dynamic" (fresh draw each epoch), "sample" (one fixed sample), "whole" (the whole subset)."""
    if mode == "dynamic":
        return ("domain resampling", f"dynamic: each epoch draws a fresh {per_epoch:,}-token sample of the "
                f"{subset_tokens:,}-token subset",
                "resample = \"dynamic\" (Guo et al. 2024, 'rate fixed, data dynamic', their better variant): the "
                "domain rate in the mixture stays fixed while its documents are re-drawn from the subset every "
                "epoch (seeded by the epoch)")
    if mode == "sample":
        return ("domain resampling", f"fixed: one seeded sample of {sample_docs:,} documents "
                f"({sample_tokens:,} tokens) of the subset, read every epoch",
                "resample = \"fixed\" ('rate fixed, data fixed'): the domain share of an epoch is sampled "
                "from the subset once and the same sample is read every epoch")
    return ("domain resampling", "fixed",
            "every epoch reads the whole subset (the domain share is 1, or there is at most one epoch), so "
            "there is nothing to re-draw" if resample == "dynamic" else "resample = \"fixed\": every epoch "
            "re-reads the same subset")


def domain_method(score: str | None, resample: str) -> str:
    """How a domain source's documents were chosen, for plan.json's `method`."""
    return (f"quality subset by {score}" if score else "random subset") + (
        ", re-drawn each epoch" if resample == "dynamic" else "")


def score_cutoff(score: str, prefer: str, cut: float, subset_mean: float, pool_mean: float) -> Decision:
    return ("score cutoff", f"{score} {'>=' if prefer == 'high' else '<='} {cut:.6g}",
            f"mean in the subset {subset_mean:.6g} vs {pool_mean:.6g} in the pool")


# ---------------------------------------------------------------- replay


def dsir_selection(what: str, buckets: int) -> Decision:
    return ("replay selection", f"DSIR toward {what}",
            f"importance resampling (Xie et al. 2023): hashed unigram+bigram features in "
            f"{buckets} buckets, log w = sum of (log p_target - log p_raw), Gumbel top-k "
            f"so replay resembles the reference")


def replay_pick(source: str, docs: int, tokens: int, epochs: float, target: int, method: str,
                pool_smaller: bool) -> Decision:
    return (f"replay {source}", f"{docs:,} documents, {tokens:,} tokens x {epochs:.3g} epochs = {target:,} tokens",
            f"{method}: " + ("the pool is smaller than the share, so all of it is repeated" if pool_smaller
                             else "documents taken in that order until the share is filled"))


def replay_repeated(source: str, epochs: float, warn_epochs: float) -> str:
    return f"general source '{source}' is repeated {epochs:.2f} times (> {warn_epochs:g})"


def steps_mismatch(recipe_steps: int, steps: float, seq_len: int, batch_size: int, tokens_per_step: int,
                   steps_needed: int) -> str:
    return (f"[train] steps = {recipe_steps} but the budget fills {steps:,.1f} steps of "
            f"{seq_len} x {batch_size} = {tokens_per_step:,} tokens; set train.steps = {steps_needed} "
            f"(or 0: derived from the plan) to train on the whole plan")

"""Pre-training mixtures of base models, for replay "like the original pre-training" (Guo et al. 2024).

A preset is a set of group weights (summing to 1) and the list of groups that are web text. The
planner gives the web share to domain data and keeps the other groups as general replay in their
original proportions, mapped onto recipe sources through `[data.sources.X] group = "..."`.
"""

from __future__ import annotations

from dataclasses import dataclass

from continua.schema import RecipeError

SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Preset:
    name: str
    weights: dict[str, float]  # group -> share of the pre-training tokens, summing to 1
    web: tuple[str, ...]  # groups replaced by domain data
    reference: str = ""

    @property
    def web_share(self) -> float:
        return sum(self.weights[g] for g in self.web)

    def replay_weights(self) -> dict[str, float]:
        """The non-web groups with their original (un-normalized) weights."""
        return {g: w for g, w in self.weights.items() if g not in self.web}

    def find_group(self, name: str) -> str | None:
        """The preset's spelling of a group name given case-insensitively."""
        for g in self.weights:
            if g.lower() == name.lower():
                return g
        return None


def _normalized(counts: dict[str, float]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}


PRESETS: dict[str, Preset] = {
    # LLaMA-1 (Touvron et al. 2023, Table 1), as quoted by Guo et al. 2024 for strategy 3
    "llama1": Preset(
        "llama1",
        {"CommonCrawl": 0.67, "C4": 0.15, "GitHub": 0.045, "Wikipedia": 0.045, "Books": 0.045,
         "ArXiv": 0.025, "StackExchange": 0.02},
        ("CommonCrawl", "C4"),
        "Touvron et al. 2023 (LLaMA), Table 1; used by Guo et al. 2024",
    ),
    # RedPajama-1T (the OpenLLaMA training data, a LLaMA-1 reproduction): token counts per slice, normalized
    "redpajama": Preset(
        "redpajama",
        _normalized({"CommonCrawl": 878, "C4": 175, "GitHub": 59, "Books": 26, "ArXiv": 28, "Wikipedia": 24,
                     "StackExchange": 20}),
        ("CommonCrawl", "C4"),
        "Together RedPajama-1T token counts (billions): CC 878, C4 175, GitHub 59, Books 26, ArXiv 28, Wikipedia 24, StackExchange 20",
    ),
}


def get_preset(name: str | None, custom_weights: dict[str, float], custom_web: list[str]) -> Preset | None:
    """The preset a [mix] section asks for: a named one, a custom `[mix.preset_weights]`, or none."""
    if custom_weights:
        if name not in (None, "custom"):
            raise RecipeError(f"[mix] sets both preset = {name!r} and [mix.preset_weights]: choose one "
                              f"(or preset = \"custom\")")
        bad = {g: w for g, w in custom_weights.items() if not w >= 0}
        if bad:
            raise RecipeError(f"[mix.preset_weights]: weights must be >= 0, got {bad}")
        total = sum(custom_weights.values())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise RecipeError(f"[mix.preset_weights]: proportions must sum to 1, they sum to {total:.6g} "
                              f"({', '.join(f'{g}={w}' for g, w in custom_weights.items())})")
        if not custom_web:
            raise RecipeError("[mix] preset_weights needs preset_web = [...] naming the web groups that domain data replaces")
        unknown = [g for g in custom_web if g not in custom_weights]
        if unknown:
            raise RecipeError(f"[mix] preset_web names {unknown} which are not in [mix.preset_weights] "
                              f"(groups: {', '.join(custom_weights)})")
        return Preset("custom", dict(custom_weights), tuple(custom_web), "[mix.preset_weights] of the recipe")
    if name is None:
        return None
    if name == "custom":
        raise RecipeError("[mix] preset = \"custom\" needs a [mix.preset_weights] table and preset_web = [...]")
    key = name.lower()
    if key not in PRESETS:
        raise RecipeError(f"[mix] preset {name!r} is unknown (known: {', '.join(PRESETS)}, or \"custom\" "
                          f"with [mix.preset_weights])")
    preset = PRESETS[key]
    if custom_web:
        raise RecipeError("[mix] preset_web applies to custom [mix.preset_weights] only")
    return preset

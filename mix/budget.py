"""Token amounts as people write them: `40%` of a reference, or absolute counts like `500M`, `2B`, `1.5K`.

The studies state budgets relative to "the original training budget" (one epoch over the whole
domain corpus), so a percentage is kept as a fraction until the planner knows what it is a
percentage *of*; absolute counts are resolved at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from continua.schema import RecipeError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
MAX_TOKENS = 1e18  # far beyond any corpus; larger amounts are typos (1e400) that would overflow the arithmetic
BARE_MIN = 1000  # a bare number below this is an error: it is almost surely a percentage without its sign
_AMOUNT = re.compile(r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[+-]?\d+))?\s*(?P<unit>[kKmMbBgGtT%]?)\s*$")


class BudgetError(RecipeError):
    """A token amount that cannot be read; the message shows what was given and what is expected."""


@dataclass(frozen=True)
class Amount:
    """Either a fraction of a reference number of tokens (`percent`) or an absolute token count."""

    given: str
    fraction: float | None = None  # set for "40%" (0.4)
    tokens: int | None = None  # set for "500M"

    @property
    def is_relative(self) -> bool:
        return self.fraction is not None

    def resolve(self, reference_tokens: int) -> int:
        """Tokens this amount stands for, given the reference a percentage refers to."""
        if self.tokens is not None:
            return self.tokens
        assert self.fraction is not None
        return int(round(self.fraction * reference_tokens))

    def describe(self, reference_tokens: int, reference: str) -> str:
        if self.tokens is not None:
            return f"{self.given} = {self.tokens:,} tokens"
        return f"{self.given} of {reference} ({reference_tokens:,} tokens) = {self.resolve(reference_tokens):,} tokens"


def parse_amount(text: str | int | float, what: str = "budget") -> Amount:
    """Parse `40%`, `500M`, `2B`, `1.5K`, `123456` (also `1_000_000`, `2e9`); junk raises BudgetError."""
    if isinstance(text, bool):
        raise BudgetError(f"{what} {text!r}: expected a percentage like '40%' or a token count like 500M, 2B, 1.5K, 123456")
    if isinstance(text, (int, float)):
        text = repr(text)
    given = str(text)
    m = _AMOUNT.match(given.replace("_", ""))
    if not m:
        raise BudgetError(f"{what} {given!r}: expected a percentage like '40%' or a token count like "
                          f"500M, 2B, 1.5K, 123456 (suffixes K, M, B/G, T)")
    try:  # 1e400 overflows the power; 1e-400 underflows to 0 below
        value = float(m.group("num")) * (10.0 ** int(m.group("exp") or 0))
    except OverflowError:
        value = math.inf
    unit = m.group("unit").upper()
    if not math.isfinite(value) or value * _SUFFIX.get(unit, 1) > MAX_TOKENS:
        raise BudgetError(f"{what} {given!r}: is larger than any corpus or budget (at most {MAX_TOKENS:.0e} tokens, "
                          f"or a percentage up to {MAX_TOKENS:.0e}%)")
    if value <= 0:
        raise BudgetError(f"{what} {given!r}: must be greater than zero")
    if unit == "%":
        return Amount(given=given.strip(), fraction=value / 100.0)
    tokens = value * _SUFFIX[unit]
    if tokens < 1:
        raise BudgetError(f"{what} {given!r}: is less than one token")
    if not unit and tokens < BARE_MIN:  # `--budget 40` is a forgotten percent sign, not a 40-token plan
        raise BudgetError(f"{what} {given!r}: a bare number counts tokens, and {given.strip()} tokens is not a "
                          f"training budget; did you mean '{given.strip()}%'? (token counts: 40K, 500M, 2B)")
    return Amount(given=given.strip(), tokens=int(round(tokens)))


def human_tokens(n: float) -> str:
    """1234567 -> '1.23M': short token counts for tables."""
    n = float(n)
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"

"""Quality scores as expressions over score-table columns: `fasttext_q` or `0.5*fasttext_q - 0.5*ppl_ngram_med`.

One parser for every place a score is named (`[mix] score`, `curate select --by`). The expression
is parsed with `ast` (numbers, column names, + - * /, parentheses, unary minus), never evaluated
as Python, and turned into a polars expression, so ranking stays inside polars.
"""

from __future__ import annotations

import ast
import operator
from typing import Iterable

import polars as pl

from continua.schema import RecipeError

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
NON_SCORE_COLUMNS = {"doc_id", "source", "path", "row", "text_hash"}


def score_columns(schema: dict[str, pl.DataType]) -> list[str]:
    """Columns usable in a score expression: numeric or boolean ones, minus the bookkeeping ones."""
    return [c for c, t in schema.items() if c not in NON_SCORE_COLUMNS and (t.is_numeric() or t == pl.Boolean)]


def columns_in(expression: str) -> list[str]:
    """Column names an expression refers to (in order of appearance)."""
    names: list[str] = []
    for node in ast.walk(_parse(expression)):
        if isinstance(node, ast.Name) and node.id not in names:
            names.append(node.id)
    return names


def _parse(expression: str, label: str = "[mix] score") -> ast.expr:
    try:
        return ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as e:
        raise RecipeError(f"{label} {expression!r}: not an expression over score columns ({e.msg})") from e


def score_expr(expression: str, available: Iterable[str], label: str = "[mix] score") -> pl.Expr:
    """A polars expression for `expression`; unknown columns raise RecipeError listing the available ones.

    `label` names where the expression came from in the errors (the recipe key or the option)."""
    available = list(available)

    def build(node: ast.AST) -> pl.Expr | float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in available:
                raise RecipeError(f"{label} {expression!r}: no score column {node.id!r} "
                                  f"(available: {', '.join(available) or 'none'})")
            return pl.col(node.id).cast(pl.Float64)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](build(node.left), build(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = build(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        raise RecipeError(f"{label} {expression!r}: only numbers, column names, + - * / and parentheses "
                          f"are allowed (found {type(node).__name__})")

    out = build(_parse(expression, label))
    if not isinstance(out, pl.Expr):
        raise RecipeError(f"{label} {expression!r}: names no score column")
    return out

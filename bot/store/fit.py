"""Values made to fit their columns before they reach the database.

What a call log row holds comes partly from strangers (numbers, stream parameters, media
timestamps, transcripts, a provider's usage figures). A value the database refuses would
cost the whole batch, so each one is fitted to its column first: strings are cut to the
column's length and lose NUL bytes (PostgreSQL refuses them), integers are clamped to the
32-bit range both databases accept, JSON loses NULs and non-finite numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import JSON, Boolean, Integer, String, Table, Text

__all__ = ["INT_MAX", "INT_MIN", "MAX_TEXT_CHARS", "fit_int", "fit_row", "fit_text"]

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
MAX_TEXT_CHARS: Final = 64 * 1024  # a turn's transcript is a few kB; more is not a turn
_MAX_JSON_DEPTH: Final = 16


def fit_int(value: object) -> int | None:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if not isinstance(value, int):  # bool is an int
        return None
    return min(max(int(value), INT_MIN), INT_MAX)


def fit_text(value: object, limit: int = MAX_TEXT_CHARS) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if "\0" in text:
        text = text.replace("\0", "")
    # Lone surrogates cannot be encoded as UTF-8, which both databases need.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


def _fit_json(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_JSON_DEPTH:
        return None
    match value:
        case None | bool():
            return value
        case int():
            return value
        case float():
            return value if math.isfinite(value) else None
        case str():
            return fit_text(value)
        case Mapping():
            return {fit_text(str(k), 256): _fit_json(v, depth + 1) for k, v in value.items()}
        case list() | tuple():
            return [_fit_json(v, depth + 1) for v in value]
        case _:
            return fit_text(str(value))


def fit_row(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` with every value fitted to its column of `table`; unknown keys are kept."""
    fitted: dict[str, Any] = {}
    for name, value in row.items():
        column = table.c.get(name)
        if column is None or value is None:
            fitted[name] = value
            continue
        kind = column.type
        if isinstance(kind, Boolean):
            fitted[name] = bool(value)
        elif isinstance(kind, Integer):
            fitted[name] = fit_int(value)
        elif isinstance(kind, String):  # Text is a String without a length
            limit = kind.length if kind.length and not isinstance(kind, Text) else MAX_TEXT_CHARS
            fitted[name] = fit_text(value, limit)
        elif isinstance(kind, JSON):
            fitted[name] = _fit_json(value)
        else:
            fitted[name] = value
    return fitted

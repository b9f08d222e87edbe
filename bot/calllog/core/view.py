"""How a stored call is shown: JSON-safe values, and turns and events as one timeline."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

__all__ = ["jsonable", "timeline"]


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def timeline(call: dict[str, Any]) -> list[dict[str, Any]]:
    """Turns and events in call order, with each interrupted turn split into heard/unheard."""
    entries: list[dict[str, Any]] = []
    for turn in call["turns"]:
        text = turn["text"] or ""
        heard = turn["heard_text"] if turn["interrupted"] else None
        entry = {"kind": "turn", "at_ms": turn["started_ms"], **turn}
        if heard is not None:
            entry["heard"] = heard
            entry["unheard"] = text[len(heard) :] if text.startswith(heard) else text
        entries.append(entry)
    for event in call["events"]:
        entries.append({**event, "kind": event["kind"], "event": True})
    entries.sort(key=lambda e: e["at_ms"] if e["at_ms"] is not None else math.inf)
    return entries

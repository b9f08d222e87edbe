"""What a summary model is asked after a call, and how its answer is read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["INSTRUCTIONS", "MAX_TRANSCRIPT_CHARS", "Summary", "read_summary", "transcript"]

MAX_TRANSCRIPT_CHARS: Final = 24_000  # about 6,000 tokens: the newest turns are kept
MAX_ITEMS: Final = 10
INSTRUCTIONS: Final = (
    "You summarise phone calls for a business. Reply with JSON only, in this shape: "
    '{"summary": "two to four sentences", "action_items": ["short imperative", ...]}. '
    "Action items are what the business must do after the call; use an empty list if there "
    "are none. Use only what the transcript says."
)
_NAMES: Final = {"caller": "Caller", "agent": "Agent", "assistant": "Bot"}
_FENCE: Final = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True, slots=True)
class Summary:
    summary: str
    action_items: tuple[str, ...]


def transcript(turns: Iterable[Mapping[str, Any]]) -> str:
    """The call as lines of "Speaker: words", what the caller heard of cut answers."""
    lines = []
    for turn in turns:
        text = turn.get("heard_text") if turn.get("interrupted") else turn.get("text")
        if text:
            lines.append(f"{_NAMES.get(str(turn.get('speaker')), 'Speaker')}: {text}")
    joined = "\n".join(lines)
    if len(joined) > MAX_TRANSCRIPT_CHARS:
        joined = "[…]\n" + joined[-MAX_TRANSCRIPT_CHARS:].split("\n", 1)[-1]
    return joined


def read_summary(answer: str) -> Summary:
    """The model's JSON (in a code fence or not); plain text is taken as the summary."""
    text = _FENCE.sub("", answer.strip())
    try:
        data = json.loads(text)
    except ValueError:
        return Summary(text[:2000], ())
    if not isinstance(data, dict):
        return Summary(text[:2000], ())
    summary = data.get("summary")
    items = data.get("action_items")
    return Summary(
        str(summary)[:2000] if summary else "",
        tuple(str(item)[:300] for item in items[:MAX_ITEMS] if item)
        if isinstance(items, list)
        else (),
    )

"""The live view of a call in progress: its turns as server-sent events.

The call log is the source, polled a few times a second, so the view works wherever the
call runs (another worker or instance writes the same log) and shows exactly what review
shows afterwards. The writer flushes every 250 ms; with the poll, a turn reaches the page
well within a second of its transcript.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from bot.store.calls import CallRecords

__all__ = ["POLL_S", "live_events"]

POLL_S: Final = 0.3
KEEPALIVE_S: Final = 15.0  # a comment line keeps proxies from closing a quiet stream
MAX_VIEW_S: Final = 6 * 3600


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def live_events(records: CallRecords, call_sid: str) -> AsyncIterator[bytes]:
    """`turn` for each new or changed turn, then `ended` once the call is over."""
    shown: dict[str, str] = {}
    started = last_sent = time.monotonic()
    yield b"retry: 2000\n\n"
    while time.monotonic() - started < MAX_VIEW_S:
        call = await records.get_call(call_sid)
        if call is None:
            yield _event("ended", {"reason": "no such call"})
            return
        for turn in call["turns"]:
            text = turn["text"] or ""
            if text and shown.get(turn["item_id"]) != text:
                shown[turn["item_id"]] = text
                last_sent = time.monotonic()
                yield _event(
                    "turn",
                    {
                        "item_id": turn["item_id"],
                        "speaker": turn["speaker"],
                        "text": text,
                        "started_ms": turn["started_ms"],
                    },
                )
        if call["ended_at"] is not None:
            yield _event("ended", {"ended_by": call["ended_by"]})
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            last_sent = time.monotonic()
            yield b": still live\n\n"
        await asyncio.sleep(POLL_S)

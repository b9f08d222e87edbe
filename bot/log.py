"""Logging: set-up (once, by the CLI), and per call, lines that carry the call's sids."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["CallLogger", "FrameErrors", "configure_logging"]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # The websockets library logs every frame at DEBUG: far too much on an audio path.
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations say enough when they fail


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the call's sids so one call's story can be grepped."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[{extra.get('call_sid', '-')} {extra.get('stream_sid', '-')}] {msg}", kwargs


class FrameErrors:
    """Malformed frames from a peer: each kind is logged once per call, then only counted."""

    def __init__(self, log: CallLogger) -> None:
        self.log = log
        self.counts: dict[str, int] = {}

    def report(self, side: str, problem: Exception) -> None:
        key = f"{side}: {problem}"
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if not seen:
            self.log.warning("skipped malformed %s frame: %s", side, problem)

    def summary(self) -> str:
        """The kinds seen more than once, for the call's last log line."""
        return "".join(f"; {n} x {key}" for key, n in self.counts.items() if n > 1)

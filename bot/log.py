"""Logging: set-up (once, by the CLI), and per call, lines that carry the call's sids."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import MutableMapping
from typing import Any, Final

__all__ = [
    "CallLogger",
    "FrameErrors",
    "StrangerNoise",
    "ThrottledLog",
    "configure_logging",
    "quiet_stranger_noise",
]

_NUMBERS: Final = re.compile(r"[0-9]+")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # The websockets library logs every frame at DEBUG: far too much on an audio path.
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLevelName(level)))
    # picows says "accepted" and "disconnected" for every media socket at INFO.
    logging.getLogger("bot.call.media_socket").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migrations say enough when they fail


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the call's sids so one call's story can be grepped."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"[{extra.get('call_sid', '-')} {extra.get('stream_sid', '-')}] {msg}", kwargs


class FrameErrors:
    """Malformed frames from a peer: each kind is logged once per call, then only counted.

    The kind is the message with its numbers taken out: a peer that varies a size or a
    position must not get a warning line per frame. Kinds are few; past `MAX_KINDS` the
    rest share one count, so the peer cannot grow this either.
    """

    MAX_KINDS: Final = 32

    def __init__(self, log: CallLogger, strangers: ThrottledLog | None = None) -> None:
        self.log = log
        # Before a stream has shown its token anyone may be sending: its warnings go
        # through a log shared by every such socket, at most once a minute per kind.
        self.strangers = strangers
        self.counts: dict[str, int] = {}

    def report(self, side: str, problem: Exception) -> None:
        kind = _NUMBERS.sub("N", str(problem))[:200]
        key = f"{side}: {kind}"
        if key not in self.counts and len(self.counts) >= self.MAX_KINDS:
            key = f"{side}: other malformed frames"
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if self.strangers is not None:
            self.strangers.note(f"skipped malformed {side} frame: {problem}", key=key)
        elif not seen:
            self.log.warning("skipped malformed %s frame: %s", side, problem)

    def summary(self) -> str:
        """The kinds seen more than once, for the call's last log line."""
        return "".join(f"; {n} x {key}" for key, n in self.counts.items() if n > 1)


class StrangerNoise(logging.Filter):
    """For uvicorn's and picows' own lines about bad input ("Invalid HTTP request
    received.", "Invalid UTF-8 sequence…", "WS parser error…", some with a traceback): at
    most one a minute of each, as a warning without the traceback. Anyone can send such
    input; it must not flood the log."""

    NOISY: Final = ("Invalid HTTP request", "Invalid UTF-8 sequence", "WS parser error")

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        kind = next((noisy for noisy in self.NOISY if message.startswith(noisy)), None)
        if kind is None:
            return True
        now = time.monotonic()
        if now - self._last.get(kind, -ThrottledLog.INTERVAL_S) < ThrottledLog.INTERVAL_S:
            return False
        self._last[kind] = now
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_stranger_noise() -> None:
    """Install `StrangerNoise` on uvicorn's error log and the media socket's, once."""
    for name in ("uvicorn.error", "bot.call.media_socket"):
        log = logging.getLogger(name)
        if not any(isinstance(f, StrangerNoise) for f in log.filters):
            log.addFilter(StrangerNoise())


class ThrottledLog:
    """Warnings that strangers can cause: each message at most once a minute, with a count
    of the repeats, so a flood of bad requests cannot flood the log."""

    INTERVAL_S: Final = 60.0

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self._logger = logger
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}

    def note(self, message: str, key: str | None = None) -> None:
        """Log `message` unless one of the same `key` (default: the message) was logged in
        the last minute."""
        key = message if key is None else key
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.INTERVAL_S:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            return
        if len(self._last) > 1000:  # keys are few; a flood of distinct ones is cut short
            self._last.clear()
        self._last[key] = now
        repeats = self._repeats.pop(key, 0)
        suffix = f" ({repeats} more since the last report)" if repeats else ""
        self._logger.warning("%s%s", message, suffix)

"""Logging set-up (once, by the CLI) and the per-call logger that carries the call's sids."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["CallLogger", "configure_logging"]


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

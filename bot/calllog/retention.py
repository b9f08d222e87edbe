"""Retention: recordings older than the configured number of days are deleted."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

from bot.store.calls import CallRecords
from bot.store.schema import utcnow

__all__ = ["prune_recordings"]

logger = logging.getLogger(__name__)


async def prune_recordings(records: CallRecords, retention_days: int) -> int:
    """Delete recordings of calls older than the retention period; returns how many."""
    if retention_days <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    removed = 0
    for call_sid, path in await records.recordings_older_than(cutoff):
        try:
            await asyncio.to_thread(Path(path).unlink, missing_ok=True)
        except OSError as exc:
            logger.warning("could not delete recording of %s: %s", call_sid, exc.strerror)
            continue
        await records.clear_recording(call_sid)
        removed += 1
    if removed:
        logger.info("deleted %d recording(s) older than %d days", removed, retention_days)
    return removed

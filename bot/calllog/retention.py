"""Retention: recordings older than the configured number of days are deleted: those the call
log points to, and any other file in the recordings folder (a stream refused after it
began, a log row that was never written)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

from bot.store.calls import CallRecords
from bot.store.schema import utcnow

__all__ = ["prune_recordings"]

logger = logging.getLogger(__name__)


async def prune_recordings(
    records: CallRecords, retention_days: int, directory: Path | None = None
) -> int:
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
    if directory is not None:
        removed += await asyncio.to_thread(_prune_folder, directory, cutoff.timestamp())
    if removed:
        logger.info("deleted %d recording(s) older than %d days", removed, retention_days)
    return removed


def _prune_folder(directory: Path, cutoff: float) -> int:
    """Files the call log does not know of, by their modification time."""
    removed = 0
    try:
        entries = list(directory.glob("*.wav"))
    except OSError:
        return 0
    for path in entries:
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError as exc:
            logger.warning("could not delete recording %s: %s", path.name, exc.strerror)
    return removed

"""Stereo WAV recordings of calls (caller left, bot right as heard), and their retention."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import wave
from pathlib import Path
from typing import Final

from bot.sansio.recording import StereoTimeline
from bot.storage import CallStore, utcnow

__all__ = ["CallRecorder", "prune_recordings"]

logger = logging.getLogger(__name__)

_WRITE_EVERY_FRAMES: Final = 50  # hand audio to the file once a second


class CallRecorder:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._timeline = StereoTimeline()
        self._wav = wave.open(str(path), "wb")
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(8000)
        self._frames = 0

    def caller(self, ulaw: bytes, at_ms: int) -> None:
        self._timeline.add_caller(ulaw, at_ms)
        self._frames += 1
        if self._frames % _WRITE_EVERY_FRAMES == 0:
            self._wav.writeframesraw(self._timeline.take_ready(at_ms))

    def bot(self, ulaw: bytes, ended_ms: int) -> None:
        self._timeline.add_bot(ulaw, ended_ms)

    def close(self) -> None:
        self._wav.writeframes(self._timeline.take_all())  # also fixes the header's sizes
        self._wav.close()


async def prune_recordings(store: CallStore, retention_days: int) -> int:
    """Delete recordings of calls older than the retention period; returns how many."""
    if retention_days <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    removed = 0
    for call_sid, path in await store.recordings_older_than(cutoff):
        try:
            await asyncio.to_thread(Path(path).unlink, missing_ok=True)
        except OSError as exc:
            logger.warning("could not delete recording of %s: %s", call_sid, exc.strerror)
            continue
        await store.clear_recording(call_sid)
        removed += 1
    if removed:
        logger.info("deleted %d recording(s) older than %d days", removed, retention_days)
    return removed

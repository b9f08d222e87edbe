"""Writes a call's stereo WAV as the call happens: caller left, bot right as heard."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Final

from bot.calllog.core.timeline import StereoTimeline

__all__ = ["CallRecorder"]

_WRITE_EVERY_MS: Final = 1000  # hand audio to the file once a second of call time


class CallRecorder:
    """At most `max_ms` of call time is recorded: memory holds a few seconds, whatever the
    caller's timestamps say (the session's clock moves at most 2 s a frame)."""

    def __init__(self, path: Path, max_ms: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_ms = max_ms
        self._timeline = StereoTimeline()
        self._wav = wave.open(str(path), "wb")
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(8000)
        self._write_at_ms = _WRITE_EVERY_MS

    def caller(self, ulaw: bytes, at_ms: int) -> None:
        if at_ms >= self.max_ms:
            return
        self._timeline.add_caller(ulaw, at_ms)
        if at_ms >= self._write_at_ms:
            self._wav.writeframesraw(self._timeline.take_ready(at_ms))
            self._write_at_ms = at_ms + _WRITE_EVERY_MS

    def bot(self, ulaw: bytes, ended_ms: int) -> None:
        if ended_ms < self.max_ms:
            self._timeline.add_bot(ulaw, ended_ms)

    def close(self) -> None:
        self._wav.writeframes(self._timeline.take_all())  # also fixes the header's sizes
        self._wav.close()

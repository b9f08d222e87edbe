"""Writes a call's stereo WAV as the call happens: caller left, bot right as heard."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Final

from bot.calllog.core.timeline import StereoTimeline

__all__ = ["CallRecorder"]

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

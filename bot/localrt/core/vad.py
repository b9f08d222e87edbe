"""Server VAD: where the caller's speech starts and ends, frame by frame, in audio time.

A speech detector says whether one 20 ms frame is speech. Speech starts once it lasts 60 ms
(its start moved back by `prefix_padding_ms`) and ends after `silence_duration_ms` of quiet,
as the hosted API's `server_vad` does. Times are milliseconds of input audio, never clocks.

A noise gate comes first: a frame less than `GATE_OVER_FLOOR` above the line's noise floor
is quiet whatever the detector thinks, so a steady hum or a fan does not start a turn once
the line has carried it for a few seconds. The floor goes down at once and up slowly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bot.core.codec import rms
from bot.core.realtime.events import TurnDetection

__all__ = [
    "FRAME_MS",
    "NoiseGate",
    "SpeechDetector",
    "SpeechEnded",
    "SpeechStarted",
    "TurnTracker",
    "energy_speech",
]

FRAME_MS: Final = 20
START_FRAMES: Final = 3  # 60 ms of speech before we call it speech
GATE_OVER_FLOOR: Final = 2.5  # about 8 dB over the noise floor, or it is not a voice
_FLOOR_RISE: Final = 0.002  # per frame: a steady sound becomes the floor in about 10 s

# One 20 ms frame of PCM16, its sample rate, and the session's VAD threshold (0-1) -> speech?
SpeechDetector = Callable[[bytes, int, float], bool]


def energy_speech(frame: bytes, rate_hz: int, threshold: float) -> bool:
    """The simplest detector: loudness above -60 + 40 x threshold dBFS (0.5 -> -40 dBFS)."""
    level = rms(frame)
    dbfs = 20 * math.log10(level * math.sqrt(2) / 32767) if level else -120.0
    return dbfs > -60 + 40 * threshold


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    audio_end_ms: int


class NoiseGate:
    """The line's noise floor, from its quiet frames; what is not well above it is quiet."""

    __slots__ = ("floor",)

    def __init__(self) -> None:
        self.floor = 0.0

    def open(self, frame: bytes) -> bool:
        level = rms(frame)
        above = level >= self.floor * GATE_OVER_FLOOR
        # Down at once (speech has gaps, so the floor finds the line between words), up
        # slowly: only a sound that never stops, such as a fan, becomes the floor.
        if level < self.floor:
            self.floor = float(level)
        else:
            self.floor += (level - self.floor) * _FLOOR_RISE
        return above


class TurnTracker:
    def __init__(self, detector: SpeechDetector = energy_speech) -> None:
        self._is_speech = detector
        self._gate = NoiseGate()
        self._loud_frames = 0
        self._quiet_ms = 0
        self.speaking = False

    @property
    def quiet_ms(self) -> int:
        """Silence since the caller's last speech frame, while they have the turn."""
        return self._quiet_ms if self.speaking else 0

    def frame(
        self,
        frame: bytes,
        rate_hz: int,
        end_ms: int,
        vad: TurnDetection,
        silence_ms: int | None = None,
    ) -> SpeechStarted | SpeechEnded | None:
        """One frame, ending `end_ms` into the session's input audio. The turn ends after
        `silence_ms` of quiet (the VAD's `silence_duration_ms` unless given)."""
        loud = self._gate.open(frame) and self._is_speech(frame, rate_hz, vad.threshold)
        if not self.speaking:
            self._loud_frames = self._loud_frames + 1 if loud else 0
            if self._loud_frames < START_FRAMES:
                return None
            self.speaking, self._quiet_ms = True, 0
            start = end_ms - FRAME_MS * START_FRAMES
            return SpeechStarted(max(0, start - vad.prefix_padding_ms))
        self._quiet_ms = 0 if loud else self._quiet_ms + FRAME_MS
        if self._quiet_ms < (vad.silence_duration_ms if silence_ms is None else silence_ms):
            return None
        return self.end(end_ms)

    def end(self, end_ms: int) -> SpeechEnded:
        """End the caller's turn now (it sounds finished): speech ended where quiet began."""
        self.speaking, self._loud_frames = False, 0
        return SpeechEnded(end_ms - self._quiet_ms)

    def reset(self) -> None:
        self._loud_frames = self._quiet_ms = 0
        self.speaking = False

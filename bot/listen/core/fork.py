"""A listened call's fork, free of I/O: Twilio's one-way frames of both tracks in, audio for
each track's transcription session and speaker-labelled turns out.

With `<Start><Stream track="both_tracks">` every media frame says whose audio it carries:
`inbound` is the caller, `outbound` the person the `<Dial>` reached (the agent). Each track
has its own transcription session, so a turn's speaker is known from where its audio came
from, even when both talk at once. A frame with no track, or one the start did not
announce, is skipped and counted. Times are milliseconds of the track's own audio, which
is the call's clock: Twilio sends a frame every 20 ms, silence included.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final, Literal

from bot.call.core.messages import TurnRecord
from bot.core.realtime import events as rt

__all__ = ["SPEAKERS", "Fork", "ManualTurns", "Speaker", "TrackAudio", "TrackTurns"]

Speaker = Literal["caller", "agent", "assistant"]
SPEAKERS: Final[dict[str, Speaker]] = {"inbound": "caller", "outbound": "agent"}


@dataclass(frozen=True, slots=True)
class TrackAudio:
    """μ-law for one track's transcription session."""

    track: str
    ulaw: bytes


@dataclass(slots=True)
class TrackTurns:
    """The turns of one track, from its transcription session's events."""

    speaker: Speaker
    started: dict[str, int] = field(default_factory=dict)  # item -> audio_start_ms
    ended: dict[str, int] = field(default_factory=dict)  # item -> audio_end_ms
    partial: dict[str, str] = field(default_factory=dict)  # item -> words so far
    manual: ManualTurns | None = None  # the bridge commits: it knows the times

    def event(self, event: rt.ServerEvent) -> TurnRecord | None:
        """A turn to record (again: the newest replaces the older), or None."""
        match event:
            case rt.AudioCommitted(item_id) if self.manual is not None and self.manual.pending:
                self.started[item_id], self.ended[item_id] = self.manual.pending.popleft()
            case rt.SpeechStarted(audio_start_ms, item_id) if item_id is not None:
                self.started[item_id] = audio_start_ms
            case rt.SpeechStopped(audio_end_ms, item_id) if item_id is not None:
                self.ended[item_id] = audio_end_ms
            case rt.InputTranscriptDelta(item_id, delta):
                self.partial[item_id] = self.partial.get(item_id, "") + delta
            case rt.InputTranscriptCompleted(item_id, transcript):
                self.partial.pop(item_id, None)
                text = transcript.strip()
                if not text:
                    return None
                return TurnRecord(
                    item_id,
                    self.speaker,
                    self.started.pop(item_id, None),
                    self.ended.pop(item_id, None),
                    text,
                )
        return None


class Fork:
    """Routes a fork's frames to its tracks; counts what it skips."""

    def __init__(self, tracks: tuple[str, ...]) -> None:
        self.tracks = tuple(track for track in tracks if track in SPEAKERS) or ("inbound",)
        self.skipped: Counter[str] = Counter()  # frames skipped, by reason
        self.frames: Counter[str] = Counter()  # frames taken, by track

    def media(self, ulaw: bytes, track: str | None) -> TrackAudio | None:
        if track is None:
            self.skipped["no track"] += 1
            return None
        if track not in self.tracks:
            self.skipped["unknown track"] += 1
            return None
        if not ulaw or len(ulaw) > 8000:  # empty, or more than a second in one frame
            self.skipped["bad payload"] += 1
            return None
        self.frames[track] += 1
        return TrackAudio(track, ulaw)


class ManualTurns:
    """Turns for a session without turn detection (`TRANSCRIBE_TURNS=manual`): the bridge
    commits once a track has spoken and then paused, or after `MAX_TURN_MS` of speech."""

    SPEECH_RMS: Final = 600  # PCM16; a quiet phone line is a few hundred
    START_FRAMES: Final = 3  # 60 ms of sound starts a turn
    PAUSE_MS: Final = 600
    MAX_TURN_MS: Final = 15_000

    def __init__(self) -> None:
        self._loud_run = 0
        self._started_ms: int | None = None
        self._quiet_ms = 0
        self.pending: deque[tuple[int, int]] = deque()  # committed turns: (start, end) ms

    def frame(self, level: float, end_ms: int) -> bool:
        """One 20 ms frame's loudness, ending at `end_ms`: True when the turn is to be
        committed now."""
        loud = level >= self.SPEECH_RMS
        if self._started_ms is None:
            self._loud_run = self._loud_run + 1 if loud else 0
            if self._loud_run >= self.START_FRAMES:
                self._started_ms, self._quiet_ms = end_ms - 20 * self.START_FRAMES, 0
            return False
        self._quiet_ms = 0 if loud else self._quiet_ms + 20
        long = end_ms - self._started_ms >= self.MAX_TURN_MS
        if self._quiet_ms < self.PAUSE_MS and not long:
            return False
        self.pending.append((self._started_ms, end_ms - self._quiet_ms))
        self._started_ms, self._loud_run = None, 0
        return True

"""Turns of the conversation as the caller experienced them, for the call log.

The clock is Twilio's `media.timestamp` (ms since the stream started), which the Realtime
server's `audio_start_ms`/`audio_end_ms` share because every frame is appended. Caller turns
come from VAD and transcription events. An assistant turn starts when Twilio acknowledges
its first mark (latency counts from the end of the caller's speech) and ends at its last.
An interrupted answer keeps its full text and gets `heard_text`; the answer's transcript
deltas, each with the audio that followed it, place the cut (see `bot.core.heard`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from bot.call.core.messages import TurnRecord
from bot.core.heard import heard_text

__all__ = ["Turns"]

_MAX_OPEN: Final = 64  # e.g. transcription is off, so caller turns never close


@dataclass(slots=True)
class _Turn:
    item_id: str
    speaker: Literal["caller", "assistant"]
    started_ms: int | None = None
    ended_ms: int | None = None
    text: str | None = None
    heard_ms: int | None = None  # set when interrupted
    received_ms: int = 0
    latency_ms: int | None = None
    speech_end_ms: int | None = None  # the caller speech this answer follows
    audio_done: bool = False
    # Transcript deltas, each with the ms of audio that arrived after it.
    pieces: list[list[str | int]] = field(default_factory=list)
    lead_ms: int = 0  # audio before the first transcript delta

    def record(self) -> TurnRecord:
        heard = None
        if self.heard_ms is not None:
            # Cut before its transcript was done (the session dropped): the deltas so far.
            text = self.text if self.text is not None else "".join(str(p[0]) for p in self.pieces)
            if text:
                heard = heard_text(self._pieces(text), self.heard_ms)
        return TurnRecord(
            self.item_id,
            self.speaker,
            self.started_ms,
            self.ended_ms,
            self.text,
            heard,
            self.heard_ms is not None,
            self.latency_ms,
        )

    def _pieces(self, full_text: str) -> list[tuple[str, int]]:
        pieces = [(str(text), int(ms)) for text, ms in self.pieces]
        if not pieces or "".join(text for text, _ in pieces).split() != full_text.split():
            return [(full_text, self.received_ms)]  # no usable deltas: proportional overall
        first_text, first_ms = pieces[0]
        pieces[0] = (first_text, first_ms + self.lead_ms)
        return pieces


class Turns:
    def __init__(self) -> None:
        self._open: dict[str, _Turn] = {}
        self._speech_end_ms: int | None = None

    def _turn(self, item_id: str, speaker: Literal["caller", "assistant"]) -> _Turn:
        turn = self._open.get(item_id)
        if turn is None:
            if len(self._open) >= _MAX_OPEN:
                del self._open[next(iter(self._open))]
            turn = self._open[item_id] = _Turn(item_id, speaker)
        return turn

    def _close(self, turn: _Turn) -> TurnRecord:
        record = turn.record()
        if turn.text is not None:
            del self._open[turn.item_id]
        return record

    # ---- the caller ------------------------------------------------------------------------

    def caller_started(self, item_id: str, at_ms: int) -> TurnRecord:
        turn = self._turn(item_id, "caller")
        turn.started_ms = at_ms
        return turn.record()

    def caller_stopped(self, item_id: str | None, at_ms: int) -> TurnRecord | None:
        self._speech_end_ms = at_ms
        if item_id is None:
            return None
        turn = self._turn(item_id, "caller")
        turn.ended_ms = at_ms
        return turn.record()

    def caller_said(self, item_id: str, text: str) -> TurnRecord:
        turn = self._turn(item_id, "caller")
        turn.text = text
        return self._close(turn) if turn.ended_ms is not None else turn.record()

    # ---- the assistant ---------------------------------------------------------------------

    def answer_started(self, item_id: str) -> None:
        """An answer item: its latency counts from the caller speech that came before it."""
        turn = self._turn(item_id, "assistant")
        turn.speech_end_ms, self._speech_end_ms = self._speech_end_ms, None

    def answer_audio(self, item_id: str, added_ms: int, received_ms: int) -> None:
        turn = self._open.get(item_id)
        if turn is None:
            return
        turn.received_ms = received_ms
        if turn.pieces:
            last = turn.pieces[-1]
            last[1] = int(last[1]) + added_ms
        else:
            turn.lead_ms += added_ms

    def answer_text(self, item_id: str, delta: str) -> None:
        turn = self._open.get(item_id)
        if turn is not None:
            turn.pieces.append([delta, 0])

    def answer_said(self, item_id: str, text: str) -> TurnRecord:
        turn = self._turn(item_id, "assistant")
        turn.text = text
        return self._close(turn) if turn.ended_ms is not None else turn.record()

    def answer_heard(
        self, item_id: str, first: bool, fully_heard: bool, now_ms: int, played_ms: int
    ) -> list[TurnRecord]:
        """Twilio played `played_ms` more of an answer (its first audio, if `first`)."""
        turn = self._open.get(item_id)
        if turn is None:
            return []
        records = []
        if first:
            # The mark comes back when its audio has played: it began that much earlier.
            turn.started_ms = max(0, now_ms - played_ms)
            if turn.speech_end_ms is not None:
                turn.latency_ms = max(0, now_ms - turn.speech_end_ms)
            records.append(turn.record())
        if turn.audio_done and fully_heard:
            turn.ended_ms = now_ms
            records.append(self._close(turn))
        return records

    def answer_audio_done(self, item_id: str, fully_heard: bool, now_ms: int) -> TurnRecord | None:
        turn = self._open.get(item_id)
        if turn is None:
            return None
        turn.audio_done = True
        if not fully_heard:
            return None
        turn.ended_ms = now_ms
        return self._close(turn)

    def answer_cut(
        self, item_id: str, heard_ms: int, received_ms: int, now_ms: int
    ) -> TurnRecord | None:
        turn = self._open.get(item_id)
        if turn is None:
            return None
        turn.heard_ms, turn.received_ms = heard_ms, received_ms
        turn.ended_ms = now_ms
        if turn.started_ms is None:
            turn.started_ms = now_ms  # interrupted before a single chunk played
        return self._close(turn)

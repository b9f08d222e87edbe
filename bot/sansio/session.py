"""The call session: events from Twilio and the Realtime server in, commands out.

Theory of operation
-------------------
A session exists once Twilio's `start` has been verified; it is STREAMING until Twilio
says `stop` or the Realtime side fails, then ENDED (every later event is ignored).

Caller audio: each Twilio `media` frame is transcoded and appended to the Realtime input
buffer at once (no batching: latency matters more than the 20 ms JSON overhead).

Model audio: each delta is counted on the model's side of the codec (`received_bytes` of
its item), transcoded to μ-law and cut into ~20 ms chunks. Every chunk goes to Twilio as
`media` followed by a uniquely named `mark`. The ledger remembers, per pending mark, which
item it belongs to and how much of that item's μ-law audio ends with it.

Heard position: Twilio echoes a mark when the audio before it has played. Only marks still
in the ledger count; `clear` removes every pending mark, so the echoes Twilio sends back
for flushed audio find nothing and change nothing. The heard position of an item
therefore never includes audio the caller did not hear.

Barge-in (`input_audio_buffer.speech_started`):
  * if audio is still queued at Twilio (marks pending), send `clear`;
  * for each item the caller has not heard completely (or whose response is still
    generating), send `conversation.item.truncate` with `audio_end_ms` = heard position,
    clamped to the audio received for the item (the server rejects longer ones);
  * drop every later delta of the interrupted response, discard the partial chunk and
    reset the output codec so no stale filter history leaks into the next answer.
The server cancels the response itself (`interrupt_response: true`); its
`response.done` with status `cancelled` is expected, not an error.

The session never awaits, sleeps, reads a clock or touches a socket.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Literal

from bot.sansio import realtime as rt
from bot.sansio import twilio as tw
from bot.sansio.codec import (
    ULAW_BYTES_PER_MS,
    InboundTranscoder,
    OutboundTranscoder,
    PassthroughInbound,
    PassthroughOutbound,
    Pcm16ToUlaw,
    UlawToPcm16,
)

__all__ = [
    "CHUNK_ULAW_BYTES",
    "CallSession",
    "CallState",
    "CallStats",
    "Command",
    "DigitPressed",
    "EndCall",
    "Interrupted",
    "Notice",
    "ResponseFinished",
    "SendToRealtime",
    "SendToTwilio",
    "TranscriptTurn",
]

CHUNK_ULAW_BYTES: Final = 160  # 20 ms: the heard position is known to within one chunk
_PASSTHROUGH_CHUNK_B64: Final = 216  # 162 bytes; a multiple of 4 chars slices base64 cleanly

# Error codes after which the Realtime session is of no further use for this call.
FATAL_ERROR_CODES: Final = frozenset(
    {
        "session_expired",
        "beta_api_shape_disabled",
        "invalid_api_key",
        "insufficient_quota",
        "model_not_found",
    }
)
_QUIET_ERROR_CODES: Final = frozenset({"response_cancel_not_active"})


class CallState(Enum):
    STREAMING = "streaming"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class SendToTwilio:
    text: str


@dataclass(frozen=True, slots=True)
class SendToRealtime:
    text: str


@dataclass(frozen=True, slots=True)
class EndCall:
    """Stop the call: close both sockets. `by` says which side ended it."""

    by: Literal["caller", "realtime"]
    reason: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    item_id: str
    audio_end_ms: int
    received_ms: int
    cleared: bool


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    speaker: Literal["caller", "assistant"]
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class DigitPressed:
    digit: str


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    status: str
    reason: str | None
    usage: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth a log line that needs no action."""

    level: Literal["debug", "info", "warning"]
    message: str


Command = (
    SendToTwilio
    | SendToRealtime
    | EndCall
    | Interrupted
    | TranscriptTurn
    | DigitPressed
    | ResponseFinished
    | Notice
)


@dataclass(slots=True)
class _Item:
    """Playback ledger of one assistant item."""

    item_id: str
    response_id: str
    received_bytes: int = 0  # model-side audio received, in the session's format
    sent_ulaw_bytes: int = 0  # μ-law sent to Twilio
    heard_ulaw_bytes: int = 0  # μ-law Twilio confirmed as played


@dataclass(slots=True)
class CallStats:
    frames_in: int = 0
    ulaw_bytes_in: int = 0
    frames_out: int = 0
    ulaw_bytes_out: int = 0
    marks_sent: int = 0
    marks_played: int = 0
    clears: int = 0
    interruptions: int = 0
    deltas_dropped: int = 0
    responses: int = 0
    usage_total_tokens: int = 0


@dataclass(slots=True)
class _Mark:
    item: _Item
    end_ulaw_bytes: int


@dataclass
class CallSession:
    """One call's bridge logic. Feed events to `handle_*`, execute the commands returned."""

    stream_sid: str
    call_sid: str
    audio: rt.AudioFormat
    greeting: str | None = None
    # Another codec for PCM16 sessions (the benchmark swaps in audioop.ratecv this way).
    transcoders: tuple[InboundTranscoder, OutboundTranscoder] | None = None
    state: CallState = CallState.STREAMING
    stats: CallStats = field(default_factory=CallStats)

    def __post_init__(self) -> None:
        self._passthrough = self.audio is rt.AudioFormat.G711_ULAW
        self._inbound: InboundTranscoder
        self._outbound: OutboundTranscoder
        if self._passthrough:
            self._inbound, self._outbound = PassthroughInbound(), PassthroughOutbound()
        elif self.transcoders is not None:
            self._inbound, self._outbound = self.transcoders
        else:
            self._inbound, self._outbound = UlawToPcm16(), Pcm16ToUlaw()
        self._bytes_per_ms = self.audio.bytes_per_ms
        self._items: dict[str, _Item] = {}
        self._pending_marks: OrderedDict[str, _Mark] = OrderedDict()
        self._mark_seq = 0
        self._partial_chunk = b""
        self._partial_item: _Item | None = None
        self._active_response: str | None = None
        self._dropped_responses: set[str] = set()

    # ---- lifecycle ------------------------------------------------------------------------

    def begin(self) -> list[Command]:
        """Commands to run once both sockets are up: the greeting, if any."""
        if not self.greeting:
            return []
        return [
            SendToRealtime(
                rt.create_response(
                    "Greet the caller now by saying exactly this, then wait for them: "
                    + self.greeting
                )
            )
        ]

    @property
    def playing(self) -> bool:
        """True while audio we sent is still queued or playing at Twilio."""
        return bool(self._pending_marks)

    # ---- from Twilio ----------------------------------------------------------------------

    def handle_twilio(self, event: tw.TwilioEvent) -> list[Command]:
        if self.state is CallState.ENDED:
            return []
        if isinstance(event, tw.TwilioMedia):
            self.stats.frames_in += 1
            self.stats.ulaw_bytes_in += len(event.ulaw)
            audio = self._inbound.process(event.ulaw)
            return [SendToRealtime(rt.append_audio(base64.b64encode(audio).decode("ascii")))]
        if isinstance(event, tw.TwilioMark):
            self._mark_played(event.name)
            return []
        if isinstance(event, tw.TwilioDtmf):
            return [DigitPressed(event.digit)]
        if isinstance(event, tw.TwilioStop):
            self.state = CallState.ENDED
            return [EndCall("caller", "caller hung up")]
        # A repeated `connected`/`start` changes nothing: the stream is already bound.
        return [Notice("debug", f"ignored {type(event).__name__} after start")]

    def _mark_played(self, name: str) -> None:
        if name not in self._pending_marks:
            return  # flushed by a clear, or not ours
        # Twilio plays in order: marks before this one have played too.
        while self._pending_marks:
            pending_name, mark = self._pending_marks.popitem(last=False)
            mark.item.heard_ulaw_bytes = mark.end_ulaw_bytes
            self.stats.marks_played += 1
            if pending_name == name:
                break

    # ---- from the Realtime server ---------------------------------------------------------

    def handle_realtime(self, event: rt.RealtimeEvent) -> list[Command]:
        if self.state is CallState.ENDED:
            return []
        if isinstance(event, rt.RealtimeAudioDelta):
            return self._audio_delta(event)
        if isinstance(event, rt.RealtimeSpeechStarted):
            return self._barge_in()
        if isinstance(event, rt.RealtimeAudioDone):
            item = self._items.get(event.item_id)
            if item is None or event.response_id in self._dropped_responses:
                return []
            return self._flush_partial_chunk()
        if isinstance(event, rt.RealtimeResponseCreated):
            self._active_response = event.response_id
            self.stats.responses += 1
            return []
        if isinstance(event, rt.RealtimeResponseDone):
            return self._response_done(event)
        if isinstance(event, rt.RealtimeTranscriptDone):
            return [TranscriptTurn("assistant", event.item_id, event.transcript)]
        if isinstance(event, rt.RealtimeInputTranscript):
            return [TranscriptTurn("caller", event.item_id, event.transcript)]
        if isinstance(event, rt.RealtimeError):
            return self._error(event)
        if isinstance(event, rt.RealtimeTruncated):
            return [Notice("debug", f"item {event.item_id} truncated at {event.audio_end_ms} ms")]
        return []

    def _audio_delta(self, event: rt.RealtimeAudioDelta) -> list[Command]:
        if event.response_id in self._dropped_responses:
            self.stats.deltas_dropped += 1
            return []
        item = self._items.get(event.item_id)
        if item is None:
            item = self._items[event.item_id] = _Item(event.item_id, event.response_id)
        try:
            audio = base64.b64decode(event.audio_b64, validate=True)
        except binascii.Error:
            return [Notice("warning", f"skipped audio delta with invalid base64 ({event.item_id})")]
        commands: list[Command] = []
        if self._partial_item is not None and self._partial_item is not item:
            commands += self._flush_partial_chunk()
        if self._passthrough:
            item.received_bytes += len(audio)
            payload = event.audio_b64
            for start in range(0, len(payload), _PASSTHROUGH_CHUNK_B64):
                piece = payload[start : start + _PASSTHROUGH_CHUNK_B64]
                commands += self._send_chunk(item, piece, _b64_decoded_length(piece))
            return commands
        item.received_bytes += len(audio)
        ulaw = self._outbound.process(audio)
        if self._partial_chunk:
            ulaw = self._partial_chunk + ulaw
        full = len(ulaw) - len(ulaw) % CHUNK_ULAW_BYTES
        for start in range(0, full, CHUNK_ULAW_BYTES):
            chunk = ulaw[start : start + CHUNK_ULAW_BYTES]
            commands += self._send_chunk(
                item, base64.b64encode(chunk).decode("ascii"), CHUNK_ULAW_BYTES
            )
        self._partial_chunk = ulaw[full:]
        self._partial_item = item if self._partial_chunk else None
        return commands

    def _flush_partial_chunk(self) -> list[Command]:
        item, chunk = self._partial_item, self._partial_chunk
        self._partial_chunk, self._partial_item = b"", None
        if item is None or not chunk:
            return []
        return self._send_chunk(item, base64.b64encode(chunk).decode("ascii"), len(chunk))

    def _send_chunk(self, item: _Item, ulaw_b64: str, n_bytes: int) -> list[Command]:
        item.sent_ulaw_bytes += n_bytes
        self._mark_seq += 1
        name = f"m{self._mark_seq}"
        self._pending_marks[name] = _Mark(item, item.sent_ulaw_bytes)
        self.stats.frames_out += 1
        self.stats.ulaw_bytes_out += n_bytes
        self.stats.marks_sent += 1
        return [
            SendToTwilio(tw.serialize_media(self.stream_sid, ulaw_b64)),
            SendToTwilio(tw.serialize_mark(self.stream_sid, name)),
        ]

    def _barge_in(self) -> list[Command]:
        commands: list[Command] = []
        cleared = bool(self._pending_marks)
        if cleared:
            commands.append(SendToTwilio(tw.serialize_clear(self.stream_sid)))
            self.stats.clears += 1
        unheard = [
            item
            for item in self._items.values()
            if item.heard_ulaw_bytes < item.sent_ulaw_bytes
            or item.response_id == self._active_response
            or item is self._partial_item
        ]
        for item in unheard:
            received_ms = item.received_bytes // self._bytes_per_ms
            audio_end_ms = min(item.heard_ulaw_bytes // ULAW_BYTES_PER_MS, received_ms)
            commands.append(SendToRealtime(rt.truncate(item.item_id, audio_end_ms)))
            commands.append(Interrupted(item.item_id, audio_end_ms, received_ms, cleared))
            self._dropped_responses.add(item.response_id)
        if self._active_response is not None:
            self._dropped_responses.add(self._active_response)
        if unheard:
            self.stats.interruptions += 1
        self._pending_marks.clear()
        self._partial_chunk, self._partial_item = b"", None
        self._outbound.reset()
        # Items are kept only while they may need truncating; heard ones are done.
        self._items.clear()
        return commands

    def _response_done(self, event: rt.RealtimeResponseDone) -> list[Command]:
        if self._active_response == event.response_id:
            self._active_response = None
        self._dropped_responses.discard(event.response_id)
        usage = event.usage or {}
        total = usage.get("total_tokens")
        if isinstance(total, int):
            self.stats.usage_total_tokens += total
        # Items fully played need no further bookkeeping once their response is over.
        for item_id in [
            item_id
            for item_id, item in self._items.items()
            if item.response_id == event.response_id
            and item.heard_ulaw_bytes >= item.sent_ulaw_bytes
            and item is not self._partial_item
        ]:
            del self._items[item_id]
        return [ResponseFinished(event.response_id, event.status, event.reason, event.usage)]

    def _error(self, event: rt.RealtimeError) -> list[Command]:
        if event.code in _QUIET_ERROR_CODES:
            return [Notice("debug", f"realtime: {event.code}")]
        if event.code in FATAL_ERROR_CODES:
            self.state = CallState.ENDED
            return [EndCall("realtime", f"realtime error {event.code}: {event.message}")]
        return [Notice("warning", f"realtime error {event.code}: {event.message}")]


def _b64_decoded_length(b64: str) -> int:
    return len(b64) * 3 // 4 - b64.count("=", -2)

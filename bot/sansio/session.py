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

Call log: the session's clock is Twilio's `media.timestamp` (ms since the stream started),
which the Realtime server's `audio_start_ms`/`audio_end_ms` share because every frame is
appended. Turns are reported as `TurnRecord` snapshots whenever they change: caller turns
from VAD and transcription events, assistant turns from the first mark Twilio acknowledges
(start, latency from the end of the caller's speech) to the last one (end). An interrupted
assistant turn keeps its full text and gets `heard_text`: the text cut at the heard
position, in proportion to the audio heard (an estimate: speech rate is not uniform).

Actions: `end_call` and `transfer_call` from the model are not carried out at once. The
goodbye (or "let me transfer you") is usually still playing, so the session waits until the
response is done and Twilio has acknowledged every mark, then returns `HangUp` or
`Transfer` (or at a deadline, should marks stop coming back). Other tools run in the shell
(`RunTool`); their result goes back to the model with `tool_finished`. A `response.create`
asked for while a response is active waits for its `response.done`.

Outbound calls with answering-machine detection start holding: caller audio is not sent to
the model and the greeting waits, until `answered()` says a human picked up (or a machine:
then `LeaveVoicemail`), or until the detection deadline passes.

The session never awaits, sleeps, reads a clock or touches a socket.
"""

from __future__ import annotations

import base64
import binascii
import json
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
    "HangUp",
    "Interrupted",
    "LeaveVoicemail",
    "Notice",
    "PlayedAudio",
    "ResponseFinished",
    "RunTool",
    "ToolRecord",
    "Transfer",
    "SendToRealtime",
    "SendToTwilio",
    "TurnRecord",
    "cut_heard_text",
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
END_CALL: Final = "end_call"
TRANSFER_CALL: Final = "transfer_call"
ACTION_DEADLINE_MS: Final = 20_000  # act even if marks stop coming back
AMD_DEADLINE_MS: Final = 8_000  # no verdict by then: treat the callee as a person


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
    at_ms: int


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """The current state of one turn; the newest snapshot of an item replaces older ones."""

    item_id: str
    speaker: Literal["caller", "assistant"]
    started_ms: int | None
    ended_ms: int | None
    text: str | None
    heard_text: str | None = None
    interrupted: bool = False
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DigitPressed:
    digit: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class PlayedAudio:
    """μ-law the caller has heard, ending at `ended_ms` (only when recording)."""

    ulaw: bytes
    ended_ms: int


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    status: str
    reason: str | None
    usage: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a custom tool; report its result with `CallSession.tool_finished`."""

    call_id: str
    name: str
    arguments: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """A built-in tool the session handled itself, for the call log."""

    name: str
    arguments: str
    result: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str


@dataclass(frozen=True, slots=True)
class Transfer:
    reason: str


@dataclass(frozen=True, slots=True)
class LeaveVoicemail:
    answered_by: str


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
    | TurnRecord
    | DigitPressed
    | PlayedAudio
    | ResponseFinished
    | RunTool
    | ToolRecord
    | HangUp
    | Transfer
    | LeaveVoicemail
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

    def record(self) -> TurnRecord:
        heard = None
        if self.heard_ms is not None and self.text is not None:
            heard = cut_heard_text(self.text, self.heard_ms, self.received_ms)
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


_MAX_OPEN_TURNS: Final = 64


def cut_heard_text(text: str, heard_ms: int, received_ms: int) -> str:
    """The part of `text` the caller heard, cut at a word boundary in proportion to audio."""
    if received_ms <= 0 or heard_ms <= 0:
        return ""
    fraction = min(1.0, heard_ms / received_ms)
    if fraction >= 0.98:
        return text
    cut = int(len(text) * fraction)
    space = text.rfind(" ", 0, cut + 1)
    return text[: space if space > 0 else cut].rstrip()


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
    ulaw: bytes  # kept only when recording


@dataclass(eq=False)  # identity semantics: sessions live in sets
class CallSession:
    """One call's bridge logic. Feed events to `handle_*`, execute the commands returned."""

    stream_sid: str
    call_sid: str
    audio: rt.AudioFormat
    greeting: str | None = None
    record_audio: bool = False
    dialect: rt.Dialect = rt.Dialect.GA
    instructions: str | None = None  # per-call instructions, sent at the start
    hold_for_human: bool = False  # outbound with answering-machine detection
    forward_dtmf: bool = True
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
        self.now_ms = 0  # call time: the newest Twilio media timestamp
        self._turns: dict[str, _Turn] = {}
        self._speech_end_ms: int | None = None
        self._response_wanted = False
        self._pending_action: HangUp | Transfer | None = None
        self._action_deadline_ms = 0
        self._holding = self.hold_for_human

    # ---- lifecycle ------------------------------------------------------------------------

    def begin(self) -> list[Command]:
        """Commands to run once both sockets are up: per-call instructions and the greeting."""
        commands: list[Command] = []
        if self.instructions:
            commands.append(SendToRealtime(rt.instructions_update(self.instructions, self.dialect)))
        if self._holding:
            return commands  # the greeting waits for a person
        return commands + self._greet()

    def _greet(self) -> list[Command]:
        if not self.greeting:
            return []
        return self._respond(
            "Greet the caller now by saying exactly this, then wait for them: " + self.greeting
        )

    def _respond(self, instructions: str | None = None) -> list[Command]:
        """`response.create` now, or once the active response is done."""
        if self._active_response is not None:
            self._response_wanted = True
            return []
        return [SendToRealtime(rt.create_response(instructions))]

    def answered(self, answered_by: str) -> list[Command]:
        """Answering-machine detection's verdict (Twilio's `AnsweredBy`)."""
        if not self._holding:
            return []
        if answered_by.startswith("machine") or answered_by == "fax":
            return [LeaveVoicemail(answered_by)]
        self._holding = False
        return self._greet()

    def tool_finished(self, call_id: str, output: str) -> list[Command]:
        """The result of a `RunTool`, for the model, which then carries on."""
        if self.state is CallState.ENDED:
            return []
        return [SendToRealtime(rt.function_output(call_id, output)), *self._respond()]

    def _act_when_drained(self) -> list[Command]:
        action = self._pending_action
        if action is None:
            return []
        drained = (
            not self._pending_marks and self._active_response is None and not self._partial_chunk
        )
        if not drained and self.now_ms < self._action_deadline_ms:
            return []
        self._pending_action = None
        return [action]

    @property
    def playing(self) -> bool:
        """True while audio we sent is still queued or playing at Twilio."""
        return bool(self._pending_marks)

    # ---- from Twilio ----------------------------------------------------------------------

    def handle_twilio(self, event: tw.TwilioEvent) -> list[Command]:
        if self.state is CallState.ENDED:
            return []
        if isinstance(event, tw.TwilioMedia):
            self.now_ms = (
                event.timestamp_ms if event.timestamp_ms is not None else self.stats.frames_in * 20
            )
            self.stats.frames_in += 1
            self.stats.ulaw_bytes_in += len(event.ulaw)
            if self._pending_action is not None:
                action = self._act_when_drained()  # the deadline is measured in call time
                if action:
                    return action
            if self._holding:
                if self.now_ms < AMD_DEADLINE_MS:
                    return []  # the model must not answer a voicemail greeting
                self._holding = False
                notice = Notice("info", "no answering-machine verdict in time: greeting anyway")
                return [notice, *self._greet()]
            audio = self._inbound.process(event.ulaw)
            return [SendToRealtime(rt.append_audio(base64.b64encode(audio).decode("ascii")))]
        if isinstance(event, tw.TwilioMark):
            return self._mark_played(event.name)
        if isinstance(event, tw.TwilioDtmf):
            commands: list[Command] = [DigitPressed(event.digit, self.now_ms)]
            if self.forward_dtmf and not self._holding:
                text = f"[The caller pressed {event.digit} on the phone keypad]"
                commands += [SendToRealtime(rt.user_text(text)), *self._respond()]
            return commands
        if isinstance(event, tw.TwilioStop):
            self.state = CallState.ENDED
            return [EndCall("caller", "caller hung up")]
        # A repeated `connected`/`start` changes nothing: the stream is already bound.
        return [Notice("debug", f"ignored {type(event).__name__} after start")]

    def _mark_played(self, name: str) -> list[Command]:
        if name not in self._pending_marks:
            return []  # flushed by a clear, or not ours
        commands: list[Command] = []
        played = b""
        # Twilio plays in order: marks before this one have played too.
        while self._pending_marks:
            pending_name, mark = self._pending_marks.popitem(last=False)
            item = mark.item
            first = item.heard_ulaw_bytes == 0
            item.heard_ulaw_bytes = mark.end_ulaw_bytes
            played += mark.ulaw
            self.stats.marks_played += 1
            turn = self._turns.get(item.item_id)
            if turn is not None:
                if first:
                    # The mark comes back when its chunk has played: it began one chunk earlier.
                    turn.started_ms = max(
                        0, self.now_ms - len(mark.ulaw or b"x" * CHUNK_ULAW_BYTES) // 8
                    )
                    if turn.speech_end_ms is not None:
                        turn.latency_ms = max(0, self.now_ms - turn.speech_end_ms)
                    commands.append(turn.record())
                if turn.audio_done and item.heard_ulaw_bytes >= item.sent_ulaw_bytes:
                    turn.ended_ms = self.now_ms
                    commands.append(self._close_turn(turn))
            if pending_name == name:
                break
        if played:
            commands.append(PlayedAudio(played, self.now_ms))
        return commands + self._act_when_drained()

    def _close_turn(self, turn: _Turn) -> TurnRecord:
        record = turn.record()
        if turn.text is not None:
            del self._turns[turn.item_id]
        return record

    def _turn(self, item_id: str, speaker: Literal["caller", "assistant"]) -> _Turn:
        turn = self._turns.get(item_id)
        if turn is None:
            if len(self._turns) >= _MAX_OPEN_TURNS:  # e.g. transcription is off
                del self._turns[next(iter(self._turns))]
            turn = self._turns[item_id] = _Turn(item_id, speaker)
        return turn

    # ---- from the Realtime server ---------------------------------------------------------

    def handle_realtime(self, event: rt.RealtimeEvent) -> list[Command]:
        if self.state is CallState.ENDED:
            return []
        if isinstance(event, rt.RealtimeAudioDelta):
            return self._audio_delta(event)
        if isinstance(event, rt.RealtimeSpeechStarted):
            commands = self._barge_in()
            if event.item_id is not None:
                turn = self._turn(event.item_id, "caller")
                turn.started_ms = event.audio_start_ms
                commands.append(turn.record())
            return commands
        if isinstance(event, rt.RealtimeSpeechStopped):
            self._speech_end_ms = event.audio_end_ms
            if event.item_id is None:
                return []
            turn = self._turn(event.item_id, "caller")
            turn.ended_ms = event.audio_end_ms
            return [turn.record()]
        if isinstance(event, rt.RealtimeInputTranscript):
            turn = self._turn(event.item_id, "caller")
            turn.text = event.transcript
            return [self._close_turn(turn)] if turn.ended_ms is not None else [turn.record()]
        if isinstance(event, rt.RealtimeOutputItemAdded):
            if event.role == "assistant" and event.response_id not in self._dropped_responses:
                turn = self._turn(event.item_id, "assistant")
                turn.speech_end_ms, self._speech_end_ms = self._speech_end_ms, None
            return []
        if isinstance(event, rt.RealtimeAudioDone):
            item = self._items.get(event.item_id)
            if item is None or event.response_id in self._dropped_responses:
                return []
            commands = self._flush_partial_chunk()
            playing = self._turns.get(event.item_id)
            if playing is not None:
                playing.audio_done = True
                if item.heard_ulaw_bytes >= item.sent_ulaw_bytes:  # already all played
                    playing.ended_ms = self.now_ms
                    commands.append(self._close_turn(playing))
            return commands
        if isinstance(event, rt.RealtimeResponseCreated):
            self._active_response = event.response_id
            self.stats.responses += 1
            return []
        if isinstance(event, rt.RealtimeResponseDone):
            return self._response_done(event)
        if isinstance(event, rt.RealtimeTranscriptDone):
            turn = self._turn(event.item_id, "assistant")
            turn.text = event.transcript
            if turn.ended_ms is not None:
                return [self._close_turn(turn)]
            return [turn.record()]
        if isinstance(event, rt.RealtimeError):
            return self._error(event)
        if isinstance(event, rt.RealtimeFunctionCall):
            return self._function_call(event)
        if isinstance(event, rt.RealtimeTruncated):
            return [Notice("debug", f"item {event.item_id} truncated at {event.audio_end_ms} ms")]
        return []

    def _function_call(self, event: rt.RealtimeFunctionCall) -> list[Command]:
        if event.name not in (END_CALL, TRANSFER_CALL):
            return [RunTool(event.call_id, event.name, event.arguments, self.now_ms)]
        reason = _reason(event.arguments)
        action: HangUp | Transfer = (
            HangUp(reason or "the assistant ended the call")
            if event.name == END_CALL
            else Transfer(reason or "the caller asked for a person")
        )
        self._pending_action = action
        self._action_deadline_ms = self.now_ms + ACTION_DEADLINE_MS
        result = '{"ok": true, "note": "done once your last words have played; say nothing more"}'
        return [
            SendToRealtime(rt.function_output(event.call_id, result)),
            ToolRecord(event.name, event.arguments, result, self.now_ms),
            *self._act_when_drained(),
        ]

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
        turn = self._turns.get(event.item_id)
        if turn is not None:
            turn.received_ms = (item.received_bytes + len(audio)) // self._bytes_per_ms
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
        kept = base64.b64decode(ulaw_b64) if self.record_audio else b""
        self._pending_marks[name] = _Mark(item, item.sent_ulaw_bytes, kept)
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
            commands.append(
                Interrupted(item.item_id, audio_end_ms, received_ms, cleared, self.now_ms)
            )
            self._dropped_responses.add(item.response_id)
            turn = self._turns.get(item.item_id)
            if turn is not None:
                turn.heard_ms, turn.received_ms = audio_end_ms, received_ms
                turn.ended_ms = self.now_ms
                if turn.started_ms is None:
                    turn.started_ms = self.now_ms  # interrupted before a single chunk played
                commands.append(self._close_turn(turn))
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
        commands: list[Command] = [
            ResponseFinished(event.response_id, event.status, event.reason, event.usage)
        ]
        if self._response_wanted and self._pending_action is None:
            self._response_wanted = False
            commands.append(SendToRealtime(rt.create_response()))
        return commands + self._act_when_drained()

    def _error(self, event: rt.RealtimeError) -> list[Command]:
        if event.code in _QUIET_ERROR_CODES:
            return [Notice("debug", f"realtime: {event.code}")]
        if event.code in FATAL_ERROR_CODES:
            self.state = CallState.ENDED
            return [EndCall("realtime", f"realtime error {event.code}: {event.message}")]
        return [Notice("warning", f"realtime error {event.code}: {event.message}")]


def _reason(arguments: str) -> str | None:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return None
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return reason if isinstance(reason, str) and reason else None


def _b64_decoded_length(b64: str) -> int:
    return len(b64) * 3 // 4 - b64.count("=", -2)

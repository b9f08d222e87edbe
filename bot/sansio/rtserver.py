"""A Realtime-compatible server session, free of I/O: client events in, server events and
provider jobs out. The shell (`bot/localrt/`) runs the jobs (speech-to-text, a chat model,
text-to-speech) and feeds their results back.

Theory of operation
-------------------
Audio appended by the client is 24 kHz PCM16 (`audio/pcm`) or 8 kHz μ-law (`audio/pcmu`),
kept as 24 kHz PCM16. With `server_vad`, an energy detector marks speech in 20 ms frames:
`speech_started` once speech lasts 60 ms (its start moved back by `prefix_padding_ms`),
`speech_stopped` after `silence_duration_ms` of quiet. Then the buffer is committed as a
user audio item, a `Transcribe` job runs, and (with `create_response`) a response starts.
Speech during a response cancels it (`interrupt_response`): `response.done` with status
`cancelled`, reason `turn_detected`.

A response asks the chat model (`Generate`) with the conversation so far. Its text comes
back in pieces; each complete sentence becomes a `Synthesize` job as soon as it is ready,
and the speech comes back as audio deltas with the sentence as transcript delta. Function
calls become `function_call` items. `response.done` follows when the model and every
sentence are finished.

`conversation.item.truncate` cuts an assistant item's stored text to the sentences (and
words, in proportion) heard before `audio_end_ms`, so the next turn never contains words
the caller did not hear. Times are audio times (ms of input audio), never clocks.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from bot.sansio.codec import Pcm16ToUlaw, Upsampler

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "Cancel",
    "Emit",
    "Generate",
    "Output",
    "RealtimeServerSession",
    "SpeechDetector",
    "Synthesize",
    "Transcribe",
    "energy_speech",
]

PCM_BYTES_PER_MS: Final = 48
FRAME_MS: Final = 20
FRAME_BYTES: Final = FRAME_MS * PCM_BYTES_PER_MS
_SPEECH_START_FRAMES: Final = 3  # 60 ms of speech before we call it speech
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
Dialect = Literal["ga", "beta"]
# 20 ms of 24 kHz PCM16 and the session's VAD threshold (0-1) -> is it speech?
SpeechDetector = Callable[[bytes, float], bool]


def energy_speech(frame: bytes, threshold: float) -> bool:
    """The simplest detector: loudness above -60 + 40 x threshold dBFS (0.5 -> -40 dBFS)."""
    return _dbfs(frame) > -60 + 40 * threshold


@dataclass(frozen=True, slots=True)
class Emit:
    """A server event to send."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Transcribe:
    item_id: str
    pcm16_24k: bytes


@dataclass(frozen=True, slots=True)
class Generate:
    response_id: str
    instructions: str
    messages: list[dict[str, Any]]  # chat-completions style, tool calls included
    tools: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Synthesize:
    response_id: str
    sentence_index: int
    text: str
    voice: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the jobs of this response; their late results are ignored anyway."""

    response_id: str


Output = Emit | Transcribe | Generate | Synthesize | Cancel


@dataclass
class _Item:
    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None
    text: str = ""  # for audio messages: the transcript
    audio: bool = False
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    output: str = ""
    sentence_ms: list[tuple[str, int]] = field(default_factory=list)  # (sentence, audio ms)


@dataclass
class _Response:
    id: str
    item: _Item
    output_index: int = 0
    pending_text: str = ""  # model text not yet a whole sentence
    sentences: int = 0
    synthesized: int = 0
    generation_done: bool = False
    usage: dict[str, Any] = field(default_factory=dict)
    calls: list[_Item] = field(default_factory=list)
    audio_ms: int = 0
    waiting: Generate | None = None  # held until the caller's last words are transcribed
    speaking: bool = False  # the assistant message item is open (the model said something)
    outputs: int = 0  # output items so far


@dataclass
class _Config:
    instructions: str = "You are a helpful, concise voice assistant."
    voice: str = "alloy"
    input_format: str = "pcm16"  # pcm16 | g711_ulaw
    output_format: str = "pcm16"
    vad: bool = True
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    transcription: bool = True
    tools: list[dict[str, Any]] = field(default_factory=list)


class RealtimeServerSession:
    def __init__(
        self,
        session_id: str,
        model: str,
        dialect: Dialect,
        speech_detector: SpeechDetector | None = None,
    ) -> None:
        self._is_speech = speech_detector or energy_speech
        self.session_id = session_id
        self.model = model
        self.dialect = dialect
        self.config = _Config()
        self.items: list[_Item] = []
        self.response: _Response | None = None
        self._seq = 0
        self._input = bytearray()  # PCM16 24 kHz not yet committed
        self._input_ms = 0  # all audio appended this session
        self._speech_start_ms: int | None = None
        self._loud_frames = 0
        self._quiet_ms = 0
        self._frame = bytearray()
        self._user_item_id: str | None = None
        self._upsampler = Upsampler()
        self._transcribing: set[str] = set()

    # ---- ids and event shapes -------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}_{self.session_id[-8:]}{self._seq:06d}"

    def _emit(self, event: dict[str, Any]) -> Emit:
        return Emit({"event_id": self._id("event"), **event})

    def _name(self, ga: str, beta: str) -> str:
        return ga if self.dialect == "ga" else beta

    def error(self, message: str, code: str, client_event_id: str | None = None) -> Emit:
        return self._emit(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": client_event_id,
                },
            }
        )

    def session_object(self) -> dict[str, Any]:
        c = self.config
        vad = (
            {
                "type": "server_vad",
                "threshold": c.threshold,
                "prefix_padding_ms": c.prefix_padding_ms,
                "silence_duration_ms": c.silence_duration_ms,
                "create_response": c.create_response,
                "interrupt_response": c.interrupt_response,
            }
            if c.vad
            else None
        )
        if self.dialect == "beta":
            # No "model": beta clients only accept OpenAI's own model names there.
            return {
                "id": self.session_id,
                "object": "realtime.session",
                "modalities": ["text", "audio"],
                "instructions": c.instructions,
                "voice": c.voice,
                "input_audio_format": c.input_format,
                "output_audio_format": c.output_format,
                "turn_detection": vad,
                "tools": c.tools,
                "tool_choice": "auto",
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.session_id,
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": c.instructions,
            "audio": {
                "input": {"format": _ga_format(c.input_format), "turn_detection": vad},
                "output": {"format": _ga_format(c.output_format), "voice": c.voice},
            },
            "tools": c.tools,
            "tool_choice": "auto",
        }

    def _item_object(self, item: _Item, status: str = "completed") -> dict[str, Any]:
        base: dict[str, Any] = {"id": item.id, "type": item.type}
        if self.dialect == "ga":
            base["object"] = "realtime.item"
        if item.type == "function_call":
            return {
                **base,
                "status": status,
                "call_id": item.call_id,
                "name": item.name,
                "arguments": item.arguments,
            }
        if item.type == "function_call_output":
            return {**base, "call_id": item.call_id, "output": item.output}
        if item.role == "assistant":
            kind = (
                self._name("output_audio", "audio")
                if item.audio
                else self._name("output_text", "text")
            )
            part: dict[str, Any] = {"type": kind, "transcript" if item.audio else "text": item.text}
            return {**base, "status": status, "role": "assistant", "content": [part]}
        if item.audio:
            part = {"type": "input_audio", "transcript": item.text or None}
        else:
            part = {"type": "input_text", "text": item.text}
        return {**base, "status": status, "role": item.role or "user", "content": [part]}

    def _item_added(self, item: _Item, previous: str | None) -> list[Output]:
        if self.dialect == "beta":
            return [
                self._emit(
                    {
                        "type": "conversation.item.created",
                        "previous_item_id": previous,
                        "item": self._item_object(item),
                    }
                )
            ]
        return [
            self._emit(
                {
                    "type": "conversation.item.added",
                    "previous_item_id": previous,
                    "item": self._item_object(item),
                }
            ),
            self._emit(
                {
                    "type": "conversation.item.done",
                    "previous_item_id": previous,
                    "item": self._item_object(item),
                }
            ),
        ]

    def _append_item(self, item: _Item) -> list[Output]:
        previous = self.items[-1].id if self.items else None
        self.items.append(item)
        return self._item_added(item, previous)

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> list[Output]:
        return [self._emit({"type": "session.created", "session": self.session_object()})]

    def receive(self, text: str | bytes) -> list[Output]:
        """One client event. Bad input answers with an `error` event; the session goes on."""
        try:
            event = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return [self.error("The event is not valid JSON.", "invalid_json")]
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [self.error("The 'type' field is missing.", "invalid_event")]
        kind, client_id = event["type"], event.get("event_id")
        handler = _HANDLERS.get(kind)
        if handler is None:
            return [self.error(f"Unknown event type {kind!r}.", "invalid_event", client_id)]
        try:
            return handler(self, event)
        except (KeyError, TypeError, ValueError) as exc:
            return [self.error(f"Invalid {kind}: {exc}", "invalid_value", client_id)]

    # ---- client events ---------------------------------------------------------------------

    def _session_update(self, event: dict[str, Any]) -> list[Output]:
        session = event["session"]
        if not isinstance(session, dict):
            raise TypeError("session must be an object")
        c = self.config
        c.instructions = session.get("instructions", c.instructions)
        c.tools = list(session.get("tools", c.tools))
        audio = session.get("audio") or {}
        inputs, speaking = audio.get("input") or {}, audio.get("output") or {}
        if "format" in inputs:
            c.input_format = _internal_format(inputs["format"])
        if "format" in speaking:
            c.output_format = _internal_format(speaking["format"])
        c.voice = str(speaking.get("voice") or session.get("voice") or c.voice)
        for key, attr in (
            ("input_audio_format", "input_format"),
            ("output_audio_format", "output_format"),
        ):
            if key in session:
                setattr(c, attr, _internal_format(session[key]))
        if "turn_detection" in inputs or "turn_detection" in session:
            vad = inputs.get("turn_detection", session.get("turn_detection"))
            c.vad = vad is not None
            if vad is not None:
                c.threshold = float(vad.get("threshold", c.threshold))
                c.prefix_padding_ms = int(vad.get("prefix_padding_ms", c.prefix_padding_ms))
                c.silence_duration_ms = int(vad.get("silence_duration_ms", c.silence_duration_ms))
                c.create_response = bool(vad.get("create_response", True))
                c.interrupt_response = bool(vad.get("interrupt_response", True))
        return [self._emit({"type": "session.updated", "session": self.session_object()})]

    def _append(self, event: dict[str, Any]) -> list[Output]:
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except binascii.Error as exc:
            raise ValueError("audio is not base64") from exc
        if self.config.input_format == "g711_ulaw":
            audio = self._upsampler.process(audioop.ulaw2lin(audio, 2))
        elif len(audio) % 2:
            raise ValueError("pcm16 audio must be whole 16-bit samples")
        outputs: list[Output] = []
        self._frame += audio
        while len(self._frame) >= FRAME_BYTES:
            frame = bytes(self._frame[:FRAME_BYTES])
            del self._frame[:FRAME_BYTES]
            self._input += frame
            self._input_ms += FRAME_MS
            if self.config.vad:
                outputs += self._vad(frame)
        return outputs

    def _vad(self, frame: bytes) -> list[Output]:
        loud = self._is_speech(frame, self.config.threshold)
        if self._speech_start_ms is None:
            self._loud_frames = self._loud_frames + 1 if loud else 0
            if self._loud_frames < _SPEECH_START_FRAMES:
                # Keep only the padding the start of speech may reach back to.
                keep = (
                    self.config.prefix_padding_ms + FRAME_MS * _SPEECH_START_FRAMES
                ) * PCM_BYTES_PER_MS
                del self._input[: max(0, len(self._input) - keep)]
                return []
            start = self._input_ms - FRAME_MS * _SPEECH_START_FRAMES
            self._speech_start_ms = max(0, start - self.config.prefix_padding_ms)
            self._quiet_ms = 0
            self._user_item_id = self._id("item")
            outputs: list[Output] = [
                self._emit(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": self._speech_start_ms,
                        "item_id": self._user_item_id,
                    }
                )
            ]
            if self.response is not None and self.config.interrupt_response:
                outputs += self._finish_response("cancelled", "turn_detected")
            return outputs
        self._quiet_ms = 0 if loud else self._quiet_ms + FRAME_MS
        if self._quiet_ms < self.config.silence_duration_ms:
            return []
        end_ms = self._input_ms - self._quiet_ms
        item_id = self._user_item_id or self._id("item")
        self._speech_start_ms = None
        self._loud_frames = 0
        outputs = [
            self._emit(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": end_ms,
                    "item_id": item_id,
                }
            )
        ]
        outputs += self._commit(item_id)
        if self.config.create_response and self.response is None:
            outputs += self._start_response()
        return outputs

    def _commit(self, item_id: str | None = None) -> list[Output]:
        item = _Item(item_id or self._id("item"), "message", role="user", audio=True)
        previous = self.items[-1].id if self.items else None
        audio = bytes(self._input)
        self._input.clear()
        outputs: list[Output] = [
            self._emit(
                {
                    "type": "input_audio_buffer.committed",
                    "previous_item_id": previous,
                    "item_id": item.id,
                }
            )
        ]
        outputs += self._append_item(item)
        if self.config.transcription:
            self._transcribing.add(item.id)
            outputs.append(Transcribe(item.id, audio))
        return outputs

    def _commit_event(self, event: dict[str, Any]) -> list[Output]:
        if len(self._input) < 100 * PCM_BYTES_PER_MS:
            return [
                self.error(
                    "Expected at least 100ms of audio in the buffer.",
                    "input_audio_buffer_commit_empty",
                    event.get("event_id"),
                )
            ]
        return self._commit()

    def _clear(self, event: dict[str, Any]) -> list[Output]:
        self._input.clear()
        self._frame.clear()
        return [self._emit({"type": "input_audio_buffer.cleared"})]

    def _item_create(self, event: dict[str, Any]) -> list[Output]:
        raw = event["item"]
        kind = raw.get("type", "message")
        if kind == "message":
            role = raw.get("role", "user")
            text = " ".join(
                part.get("text", "")
                for part in raw.get("content", [])
                if part.get("type") in ("input_text", "text", "output_text")
            )
            item = _Item(raw.get("id") or self._id("item"), "message", role=role, text=text)
        elif kind == "function_call_output":
            item = _Item(
                raw.get("id") or self._id("item"),
                kind,
                call_id=str(raw["call_id"]),
                output=str(raw["output"]),
            )
        else:
            raise ValueError(f"items of type {kind!r} cannot be created")
        return self._append_item(item)

    def _item_delete(self, event: dict[str, Any]) -> list[Output]:
        item_id = event["item_id"]
        self.items = [item for item in self.items if item.id != item_id]
        return [self._emit({"type": "conversation.item.deleted", "item_id": item_id})]

    def _truncate(self, event: dict[str, Any]) -> list[Output]:
        item_id, audio_end_ms = event["item_id"], int(event["audio_end_ms"])
        item = next((i for i in self.items if i.id == item_id), None)
        if item is None or item.role != "assistant" or not item.audio:
            return [
                self.error(
                    f"No assistant audio item {item_id!r}.", "item_not_found", event.get("event_id")
                )
            ]
        total = sum(ms for _, ms in item.sentence_ms)
        if audio_end_ms > total:
            return [
                self.error(
                    f"Audio content of {total}ms is already shorter than {audio_end_ms}ms",
                    "invalid_value",
                    event.get("event_id"),
                )
            ]
        item.text = _cut(item.sentence_ms, audio_end_ms)
        return [
            self._emit(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": audio_end_ms,
                }
            )
        ]

    def _response_create(self, event: dict[str, Any]) -> list[Output]:
        if self.response is not None:
            return [
                self.error(
                    "Conversation already has an active response in progress.",
                    "conversation_already_has_active_response",
                    event.get("event_id"),
                )
            ]
        overrides = event.get("response") or {}
        return self._start_response(overrides.get("instructions"))

    def _response_cancel(self, event: dict[str, Any]) -> list[Output]:
        if self.response is None:
            return [
                self.error(
                    "Cancellation failed: no active response found",
                    "response_cancel_not_active",
                    event.get("event_id"),
                )
            ]
        return self._finish_response("cancelled", "client_cancelled")

    # ---- responses -------------------------------------------------------------------------

    def _response_object(
        self, response: _Response, status: str, reason: str | None = None
    ) -> dict[str, Any]:
        output = [
            self._item_object(item, "completed" if status == "completed" else "incomplete")
            for item in [response.item, *response.calls]
            if item.text or item.type == "function_call"
        ]
        obj: dict[str, Any] = {
            "id": response.id,
            "object": "realtime.response",
            "status": status,
            "status_details": None if reason is None else {"type": status, "reason": reason},
            "output": output,
            "usage": response.usage or None,
        }
        if self.dialect == "ga":
            obj["conversation_id"] = "conv_" + self.session_id
            obj["output_modalities"] = ["audio"]
        else:
            obj["modalities"] = ["text", "audio"]
        return obj

    def _start_response(self, instructions: str | None = None) -> list[Output]:
        item = _Item(self._id("item"), "message", role="assistant", audio=True)
        response = _Response(self._id("resp"), item)
        self.response = response
        outputs: list[Output] = [
            self._emit(
                {
                    "type": "response.created",
                    "response": self._response_object(response, "in_progress"),
                }
            )
        ]
        # A cascade hears only text: the model waits for the caller's words.
        response.waiting = Generate(
            response.id, instructions or self.config.instructions, [], self.config.tools
        )
        return outputs + self._release()

    def _open_message(self, response: _Response) -> list[Output]:
        """The assistant message item, opened when the model first says something."""
        if response.speaking:
            return []
        response.speaking = True
        response.outputs += 1
        item = response.item
        self.items.append(item)  # its text grows as sentences are spoken
        part = {"type": "audio", "transcript": ""}  # content-part events say "audio" in both
        return [
            self._emit(
                {
                    "type": "response.output_item.added",
                    "response_id": response.id,
                    "output_index": 0,
                    "item": self._item_object(item, "in_progress"),
                }
            ),
            self._emit(
                {
                    "type": "response.content_part.added",
                    "response_id": response.id,
                    "item_id": item.id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": part,
                }
            ),
        ]

    def _release(self) -> list[Output]:
        response = self.response
        if response is None or response.waiting is None or self._transcribing:
            return []
        job, response.waiting = response.waiting, None
        # The new assistant item is empty and so left out: only earlier turns are sent.
        return [Generate(job.response_id, job.instructions, self._messages(), job.tools)]

    def _messages(self) -> list[dict[str, Any]]:
        """The conversation for a chat model: only what the caller heard of each answer."""
        messages: list[dict[str, Any]] = []
        for item in self.items:
            if item.type == "message" and item.text:
                messages.append({"role": item.role or "user", "content": item.text})
            elif item.type == "function_call":
                messages.append(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": item.call_id,
                                "type": "function",
                                "function": {"name": item.name, "arguments": item.arguments},
                            }
                        ],
                    }
                )
            elif item.type == "function_call_output":
                messages.append(
                    {"role": "tool", "tool_call_id": item.call_id, "content": item.output}
                )
        return messages

    # ---- results of jobs -------------------------------------------------------------------

    def transcribed(self, item_id: str, text: str) -> list[Output]:
        self._transcribing.discard(item_id)
        item = next((i for i in self.items if i.id == item_id), None)
        if item is None:
            return self._release()
        item.text = text.strip()
        completed = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": item.text,
            "usage": {"type": "duration", "seconds": 0},
        }
        return [self._emit(completed), *self._release()]

    def transcription_failed(self, item_id: str, message: str) -> list[Output]:
        """The caller's words stay unknown; a waiting response goes ahead without them."""
        self._transcribing.discard(item_id)
        failed = {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": item_id,
            "content_index": 0,
            "error": {
                "type": "transcription_error",
                "code": "transcription_failed",
                "message": message,
                "param": None,
            },
        }
        return [self._emit(failed), *self._release()]

    def generated_text(self, response_id: str, delta: str) -> list[Output]:
        response = self._current(response_id)
        if response is None:
            return []
        response.pending_text += delta
        pieces = _SENTENCE_END.split(response.pending_text)
        response.pending_text = pieces.pop()
        return [self._sentence(response, s) for s in pieces if s.strip()]

    def _sentence(self, response: _Response, text: str) -> Synthesize:
        response.sentences += 1
        return Synthesize(response.id, response.sentences - 1, text.strip(), self.config.voice)

    def function_call(
        self, response_id: str, call_id: str, name: str, arguments: str
    ) -> list[Output]:
        response = self._current(response_id)
        if response is None:
            return []
        item = _Item(
            self._id("item"), "function_call", call_id=call_id, name=name, arguments=arguments
        )
        response.calls.append(item)
        index = response.outputs
        response.outputs += 1
        self.items.append(item)
        return [
            self._emit(
                {
                    "type": "response.output_item.added",
                    "response_id": response.id,
                    "output_index": index,
                    "item": self._item_object(item, "in_progress"),
                }
            ),
            self._emit(
                {
                    "type": "response.function_call_arguments.done",
                    "response_id": response.id,
                    "item_id": item.id,
                    "output_index": index,
                    "call_id": call_id,
                    "name": name,
                    "arguments": arguments,
                }
            ),
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": index,
                    "item": self._item_object(item),
                }
            ),
        ]

    def generation_done(self, response_id: str, usage: dict[str, int]) -> list[Output]:
        response = self._current(response_id)
        if response is None:
            return []
        response.generation_done = True
        response.usage = {
            "total_tokens": usage.get("total_tokens", 0),
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0),
        }
        outputs: list[Output] = []
        if response.pending_text.strip():
            outputs.append(self._sentence(response, response.pending_text))
            response.pending_text = ""
        return outputs + self._maybe_done(response)

    def synthesized(
        self, response_id: str, sentence_index: int, text: str, pcm16_24k: bytes
    ) -> list[Output]:
        """Speech for one sentence, delivered in order."""
        response = self._current(response_id)
        if response is None:
            return []
        opened = self._open_message(response)
        item = response.item
        duration_ms = len(pcm16_24k) // PCM_BYTES_PER_MS
        item.sentence_ms.append((text, duration_ms))
        item.text = (item.text + " " + text).strip()
        response.synthesized += 1
        response.audio_ms += duration_ms
        audio = pcm16_24k
        if self.config.output_format == "g711_ulaw":
            audio = Pcm16ToUlaw().process(pcm16_24k)
        common = {
            "response_id": response.id,
            "item_id": item.id,
            "output_index": 0,
            "content_index": 0,
        }
        outputs: list[Output] = [
            *opened,
            self._emit(
                {
                    "type": self._name(
                        "response.output_audio_transcript.delta", "response.audio_transcript.delta"
                    ),
                    **common,
                    "delta": text + " ",
                }
            ),
        ]
        step = 100 * PCM_BYTES_PER_MS if self.config.output_format == "pcm16" else 800
        for start in range(0, len(audio), step):
            outputs.append(
                self._emit(
                    {
                        "type": self._name("response.output_audio.delta", "response.audio.delta"),
                        **common,
                        "delta": base64.b64encode(audio[start : start + step]).decode("ascii"),
                    }
                )
            )
        return outputs + self._maybe_done(response)

    def generation_failed(self, response_id: str, message: str) -> list[Output]:
        """The chat model failed: an `error` event, then the response ends as failed."""
        response = self._current(response_id)
        if response is None:
            return []
        failure = {
            "type": "error",
            "error": {
                "type": "server_error",
                "code": "generation_failed",
                "message": message,
                "param": None,
                "event_id": None,
            },
        }
        return [self._emit(failure), *self._finish_response("failed", None)]

    def _maybe_done(self, response: _Response) -> list[Output]:
        if response.generation_done and response.synthesized == response.sentences:
            return self._finish_response("completed", None)
        return []

    def _current(self, response_id: str) -> _Response | None:
        return (
            self.response if self.response is not None and self.response.id == response_id else None
        )

    def _finish_response(self, status: str, reason: str | None) -> list[Output]:
        response = self.response
        assert response is not None
        self.response = None
        outputs: list[Output] = [Cancel(response.id)] if status != "completed" else []
        if response.speaking:
            outputs += self._close_message(response, status)
        outputs.append(
            self._emit(
                {
                    "type": "response.done",
                    "response": self._response_object(response, status, reason),
                }
            )
        )
        return outputs

    def _close_message(self, response: _Response, status: str) -> list[Output]:
        item = response.item
        common = {
            "response_id": response.id,
            "item_id": item.id,
            "output_index": 0,
            "content_index": 0,
        }
        part = {"type": "audio", "transcript": item.text}
        return [
            self._emit(
                {"type": self._name("response.output_audio.done", "response.audio.done"), **common}
            ),
            self._emit(
                {
                    "type": self._name(
                        "response.output_audio_transcript.done", "response.audio_transcript.done"
                    ),
                    **common,
                    "transcript": item.text,
                }
            ),
            self._emit({"type": "response.content_part.done", **common, "part": part}),
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": 0,
                    "item": self._item_object(
                        item, "completed" if status == "completed" else "incomplete"
                    ),
                }
            ),
        ]


_HANDLERS: Final = {
    "session.update": RealtimeServerSession._session_update,
    "input_audio_buffer.append": RealtimeServerSession._append,
    "input_audio_buffer.commit": RealtimeServerSession._commit_event,
    "input_audio_buffer.clear": RealtimeServerSession._clear,
    "conversation.item.create": RealtimeServerSession._item_create,
    "conversation.item.delete": RealtimeServerSession._item_delete,
    "conversation.item.truncate": RealtimeServerSession._truncate,
    "response.create": RealtimeServerSession._response_create,
    "response.cancel": RealtimeServerSession._response_cancel,
}


def _ga_format(internal: str) -> dict[str, Any]:
    return (
        {"type": "audio/pcmu"} if internal == "g711_ulaw" else {"type": "audio/pcm", "rate": 24000}
    )


def _internal_format(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else value
    if kind in ("audio/pcm", "pcm16"):
        return "pcm16"
    if kind in ("audio/pcmu", "g711_ulaw"):
        return "g711_ulaw"
    raise ValueError(f"unsupported audio format {kind!r}")


def _dbfs(frame: bytes) -> float:
    rms = audioop.rms(frame, 2)
    return 20 * math.log10(rms * math.sqrt(2) / 32767) if rms else -120.0


def _cut(sentences: list[tuple[str, int]], audio_end_ms: int) -> str:
    """The words heard before `audio_end_ms`, sentence by sentence, the last one in proportion."""
    heard: list[str] = []
    elapsed = 0
    for text, ms in sentences:
        if elapsed + ms <= audio_end_ms:
            heard.append(text)
        else:
            words = text.split()
            fraction = (audio_end_ms - elapsed) / ms if ms else 0
            heard.append(" ".join(words[: int(len(words) * fraction)]))
            break
        elapsed += ms
    return " ".join(part for part in heard if part).strip()

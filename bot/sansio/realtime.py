"""OpenAI Realtime wire format, GA and beta dialects: client events out, server events in.

See shared/reference/protocols.md Part B. The GA dialect nests audio settings under
`session.audio` and names audio events `response.output_audio.*`; the beta dialect
(`OpenAI-Beta: realtime=v1`) is flat and names them `response.audio.*`. The parser accepts
both spellings whatever the configured dialect, because Realtime-compatible servers mix them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Final

from bot.errors import RealtimeProtocolError

__all__ = [
    "AudioFormat",
    "Dialect",
    "RealtimeAudioDelta",
    "RealtimeAudioDone",
    "RealtimeError",
    "RealtimeEvent",
    "RealtimeFunctionCall",
    "RealtimeInputTranscript",
    "RealtimeOutputItemAdded",
    "RealtimeResponseCreated",
    "RealtimeResponseDone",
    "RealtimeSessionCreated",
    "RealtimeSessionUpdated",
    "RealtimeSpeechStarted",
    "RealtimeSpeechStopped",
    "RealtimeTranscriptDone",
    "RealtimeTruncated",
    "SessionConfig",
    "append_audio",
    "create_response",
    "function_output",
    "instructions_update",
    "parse",
    "session_update",
    "truncate",
    "user_text",
]


class Dialect(Enum):
    GA = "ga"
    BETA = "beta"


class AudioFormat(Enum):
    """What the session carries on the wire, both directions."""

    PCM16 = "pcm16"  # 24 kHz PCM16: the bridge transcodes
    G711_ULAW = "g711_ulaw"  # μ-law: payloads pass through untouched

    @property
    def bytes_per_ms(self) -> int:
        return 48 if self is AudioFormat.PCM16 else 8


@dataclass(frozen=True, slots=True)
class SessionConfig:
    instructions: str
    voice: str
    audio: AudioFormat
    transcription_model: str | None = None
    vad_threshold: float = 0.5
    vad_prefix_padding_ms: int = 300
    vad_silence_duration_ms: int = 500
    tools: tuple[
        dict[str, object], ...
    ] = ()  # function tools: {"type","name","description","parameters"}


# ---- client events -------------------------------------------------------------------------

_GA_FORMATS: Final = {
    AudioFormat.PCM16: {"type": "audio/pcm", "rate": 24000},
    AudioFormat.G711_ULAW: {"type": "audio/pcmu"},
}


def session_update(config: SessionConfig, dialect: Dialect) -> str:
    """The `session.update` that sets instructions, voice, formats, server VAD and transcription."""
    turn_detection = {
        "type": "server_vad",
        "threshold": config.vad_threshold,
        "prefix_padding_ms": config.vad_prefix_padding_ms,
        "silence_duration_ms": config.vad_silence_duration_ms,
        "create_response": True,
        # The server cancels the response on barge-in; we then only clear and truncate.
        "interrupt_response": True,
    }
    transcription = {"model": config.transcription_model} if config.transcription_model else None
    session: dict[str, object]
    tools: dict[str, object] = (
        {"tools": list(config.tools), "tool_choice": "auto"} if config.tools else {}
    )
    if dialect is Dialect.GA:
        audio_format = _GA_FORMATS[config.audio]
        audio_input: dict[str, object] = {
            "format": audio_format,
            "turn_detection": turn_detection,
        }
        if transcription:
            audio_input["transcription"] = transcription
        session = {
            "type": "realtime",
            "instructions": config.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": audio_input,
                "output": {"format": audio_format, "voice": config.voice},
            },
        }
    else:
        session = {
            "modalities": ["text", "audio"],
            "instructions": config.instructions,
            "voice": config.voice,
            "input_audio_format": config.audio.value,
            "output_audio_format": config.audio.value,
            "turn_detection": turn_detection,
        }
        if transcription:
            session["input_audio_transcription"] = transcription
    session.update(tools)
    return json.dumps({"type": "session.update", "session": session})


def instructions_update(instructions: str, dialect: Dialect) -> str:
    """A `session.update` that changes only the instructions (per-call variables)."""
    session: dict[str, object] = {"instructions": instructions}
    if dialect is Dialect.GA:
        session["type"] = "realtime"
    return json.dumps({"type": "session.update", "session": session})


def function_output(call_id: str, output: str) -> str:
    return json.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def user_text(text: str) -> str:
    return json.dumps(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
    )


def append_audio(audio_b64: str) -> str:
    """`input_audio_buffer.append`, built by hand: base64 needs no JSON escaping."""
    return '{"type":"input_audio_buffer.append","audio":"' + audio_b64 + '"}'


def truncate(item_id: str, audio_end_ms: int) -> str:
    return json.dumps(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": audio_end_ms,
        }
    )


def create_response(instructions: str | None = None) -> str:
    response: dict[str, object] = {}
    if instructions:
        response["instructions"] = instructions
    return json.dumps({"type": "response.create", "response": response})


# ---- server events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RealtimeSessionCreated:
    session_id: str | None
    expires_at: int | None
    dialect: Dialect | None  # what the session object looks like, if it tells


@dataclass(frozen=True, slots=True)
class RealtimeSessionUpdated:
    pass


@dataclass(frozen=True, slots=True)
class RealtimeResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class RealtimeOutputItemAdded:
    response_id: str
    item_id: str
    role: str | None


@dataclass(frozen=True, slots=True)
class RealtimeAudioDelta:
    """Model audio. `audio_b64` stays encoded: pass-through mode forwards it as it came."""

    response_id: str
    item_id: str
    audio_b64: str


@dataclass(frozen=True, slots=True)
class RealtimeAudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class RealtimeTranscriptDone:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class RealtimeInputTranscript:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class RealtimeSpeechStarted:
    audio_start_ms: int
    item_id: str | None


@dataclass(frozen=True, slots=True)
class RealtimeSpeechStopped:
    audio_end_ms: int
    item_id: str | None


@dataclass(frozen=True, slots=True)
class RealtimeResponseDone:
    response_id: str
    status: str
    reason: str | None
    usage: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class RealtimeTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class RealtimeFunctionCall:
    response_id: str
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True, slots=True)
class RealtimeError:
    code: str | None
    message: str
    error_type: str | None


RealtimeEvent = (
    RealtimeSessionCreated
    | RealtimeSessionUpdated
    | RealtimeResponseCreated
    | RealtimeOutputItemAdded
    | RealtimeAudioDelta
    | RealtimeAudioDone
    | RealtimeTranscriptDone
    | RealtimeInputTranscript
    | RealtimeSpeechStarted
    | RealtimeSpeechStopped
    | RealtimeResponseDone
    | RealtimeTruncated
    | RealtimeFunctionCall
    | RealtimeError
)

_AUDIO_DELTA: Final = frozenset({"response.output_audio.delta", "response.audio.delta"})
_AUDIO_DONE: Final = frozenset({"response.output_audio.done", "response.audio.done"})
_TRANSCRIPT_DONE: Final = frozenset(
    {"response.output_audio_transcript.done", "response.audio_transcript.done"}
)


def parse(text: str | bytes) -> RealtimeEvent | None:
    """Parse one server event. Returns None for events the bridge does not act on.

    Raises:
        RealtimeProtocolError: not a JSON object with a `type`, or a used event with
            missing or ill-typed fields.
    """
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise RealtimeProtocolError("server event is not JSON") from exc
    if not isinstance(message, dict):
        raise RealtimeProtocolError("server event is not a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise RealtimeProtocolError("server event has no type")
    if kind in _AUDIO_DELTA:
        return RealtimeAudioDelta(
            _str(message, "response_id"), _str(message, "item_id"), _str(message, "delta")
        )
    if kind == "input_audio_buffer.speech_started":
        return RealtimeSpeechStarted(_int(message, "audio_start_ms"), _opt_str(message, "item_id"))
    if kind == "input_audio_buffer.speech_stopped":
        return RealtimeSpeechStopped(_int(message, "audio_end_ms"), _opt_str(message, "item_id"))
    if kind in _AUDIO_DONE:
        return RealtimeAudioDone(_str(message, "response_id"), _str(message, "item_id"))
    if kind == "response.created":
        return RealtimeResponseCreated(_str(_obj(message, "response"), "id"))
    if kind == "response.output_item.added":
        item = _obj(message, "item")
        return RealtimeOutputItemAdded(
            _str(message, "response_id"), _str(item, "id"), _opt_str(item, "role")
        )
    if kind == "response.done":
        response = _obj(message, "response")
        details = response.get("status_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        usage = response.get("usage")
        return RealtimeResponseDone(
            _str(response, "id"),
            _str(response, "status"),
            reason if isinstance(reason, str) else None,
            usage if isinstance(usage, dict) else None,
        )
    if kind in _TRANSCRIPT_DONE:
        return RealtimeTranscriptDone(_str(message, "item_id"), _str(message, "transcript"))
    if kind == "conversation.item.input_audio_transcription.completed":
        return RealtimeInputTranscript(_str(message, "item_id"), _str(message, "transcript"))
    if kind == "response.function_call_arguments.done":
        return RealtimeFunctionCall(
            _str(message, "response_id"),
            _str(message, "call_id"),
            _str(message, "name"),
            _str(message, "arguments"),
        )
    if kind == "conversation.item.truncated":
        return RealtimeTruncated(_str(message, "item_id"), _int(message, "audio_end_ms"))
    if kind == "error":
        error = message.get("error")
        if not isinstance(error, dict):
            error = {}
        return RealtimeError(
            _opt_str(error, "code"),
            str(error.get("message") or "unknown error"),
            _opt_str(error, "type"),
        )
    if kind == "session.created":
        session = _obj(message, "session")
        dialect = (
            Dialect.GA
            if "audio" in session or session.get("type") == "realtime"
            else Dialect.BETA
            if "input_audio_format" in session
            else None
        )
        expires_at = session.get("expires_at")
        return RealtimeSessionCreated(
            _opt_str(session, "id"),
            expires_at if isinstance(expires_at, int) else None,
            dialect,
        )
    if kind == "session.updated":
        return RealtimeSessionUpdated()
    return None


def _obj(message: dict[str, object], key: str) -> dict[str, object]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise RealtimeProtocolError(f"{key} must be an object")
    return value


def _str(message: dict[str, object], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise RealtimeProtocolError(f"{key} must be a string")
    return value


def _opt_str(message: dict[str, object], key: str) -> str | None:
    value = message.get(key)
    return value if isinstance(value, str) else None


def _int(message: dict[str, object], key: str) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RealtimeProtocolError(f"{key} must be an integer")
    return value

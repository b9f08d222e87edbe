"""The client's side of the Realtime wire: client events out as JSON, server events in.

Decoding reads only what a client acts on, and returns None for the rest; both spellings of
every event are accepted whatever the configured dialect.
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, Literal, assert_never

import pybase64

from bot.core.fields import FieldReader
from bot.core.realtime.dialects import (
    AUDIO_DELTA,
    AUDIO_DONE,
    DIALECTS,
    TRANSCRIPT_DELTA,
    TRANSCRIPT_DONE,
    Dialect,
    item_shape,
    session_shape,
)
from bot.core.realtime.events import (
    AppendAudio,
    AudioCommitted,
    AudioDelta,
    AudioDone,
    CancelResponse,
    ClearAudio,
    ClientEvent,
    CommitAudio,
    CreateItem,
    CreateResponse,
    DeleteItem,
    ErrorEvent,
    FunctionCallArguments,
    InputTranscriptCompleted,
    InputTranscriptDelta,
    InputTranscriptFailed,
    Item,
    ItemTruncated,
    OutputItemAdded,
    ResponseCreated,
    ResponseDone,
    ResponseInfo,
    ServerEvent,
    SessionConfig,
    SessionCreated,
    SessionInfo,
    SessionUpdate,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    TruncateItem,
)
from bot.errors import RealtimeProtocolError

__all__ = ["decode_server_event", "encode_client_event"]

_fields: Final = FieldReader(RealtimeProtocolError)
_SESSION_EVENTS: Final = frozenset(
    {
        "session.created",
        "session.updated",
        "transcription_session.created",  # beta transcription sessions
        "transcription_session.updated",
    }
)


def encode_client_event(event: ClientEvent, dialect: Dialect) -> str:
    message: dict[str, Any]
    match event:
        case AppendAudio(audio):
            # 50 a second: built by hand, since base64 needs no JSON escaping.
            return (
                '{"type":"input_audio_buffer.append","audio":"'
                + pybase64.b64encode_as_string(audio)
                + '"}'
            )
        case SessionUpdate(session):
            kind = (
                "transcription_session.update"
                if session.transcribe_only and dialect is Dialect.BETA
                else "session.update"
            )
            message = {"type": kind, "session": session_shape(session, dialect)}
        case CommitAudio():
            message = {"type": "input_audio_buffer.commit"}
        case ClearAudio():
            message = {"type": "input_audio_buffer.clear"}
        case CreateItem(item, previous_item_id):
            message = {
                "type": "conversation.item.create",
                "item": item_shape(item, dialect, described=False),
            }
            if previous_item_id is not None:
                message["previous_item_id"] = previous_item_id
        case DeleteItem(item_id):
            message = {"type": "conversation.item.delete", "item_id": item_id}
        case TruncateItem(item_id, audio_end_ms, content_index):
            message = {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        case CreateResponse(instructions, speak):
            response: dict[str, Any] = {"instructions": instructions} if instructions else {}
            if speak is not None:
                names = DIALECTS[dialect]
                modalities = names.audio_modalities if speak else names.text_modalities
                response[names.modalities_key] = list(modalities)
            message = {"type": "response.create", "response": response}
        case CancelResponse():
            message = {"type": "response.cancel"}
        case _:
            assert_never(event)
    if event.event_id is not None:
        message["event_id"] = event.event_id
    return json.dumps(message)


def decode_server_event(text: str | bytes) -> ServerEvent | None:
    """One server event; None for events a client does not act on.

    Raises:
        RealtimeProtocolError: not a JSON object with a `type`, or a used event with
            missing or ill-typed fields.
    """
    message = _fields.decode(text, "server event")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise RealtimeProtocolError("server event has no type")
    f = _fields
    # Audio deltas first: they are most of the traffic.
    if kind in AUDIO_DELTA:
        try:
            audio = pybase64.b64decode(f.string(message, "delta"), validate=True)
        except binascii.Error as exc:
            raise RealtimeProtocolError("audio delta is not base64") from exc
        return AudioDelta(f.string(message, "response_id"), f.string(message, "item_id"), audio)
    if kind in TRANSCRIPT_DELTA:
        return TranscriptDelta(
            f.string(message, "response_id"),
            f.string(message, "item_id"),
            f.string(message, "delta"),
        )
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(
            f.integer(message, "audio_start_ms"), f.optional_string(message, "item_id")
        )
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(
            f.integer(message, "audio_end_ms"), f.optional_string(message, "item_id")
        )
    if kind == "input_audio_buffer.committed":
        return AudioCommitted(
            f.string(message, "item_id"), f.optional_string(message, "previous_item_id")
        )
    if kind in AUDIO_DONE:
        return AudioDone(f.string(message, "response_id"), f.string(message, "item_id"))
    if kind in TRANSCRIPT_DONE:
        return TranscriptDone(
            f.optional_string(message, "response_id") or "",
            f.string(message, "item_id"),
            f.string(message, "transcript"),
        )
    if kind == "response.created":
        response = f.obj(message, "response")
        return ResponseCreated(ResponseInfo(f.string(response, "id"), "in_progress"))
    if kind == "response.output_item.added":
        item = f.obj(message, "item")
        role = item.get("role")
        return OutputItemAdded(
            f.string(message, "response_id"),
            _index(message),
            Item(
                f.string(item, "id"),
                "function_call" if item.get("type") == "function_call" else "message",
                role=_role(role),
            ),
        )
    if kind == "response.done":
        response = f.obj(message, "response")
        details = response.get("status_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        usage = response.get("usage")
        return ResponseDone(
            ResponseInfo(
                f.string(response, "id"),
                f.string(response, "status"),
                reason if isinstance(reason, str) else None,
                usage if isinstance(usage, dict) else None,
            )
        )
    if kind == "conversation.item.input_audio_transcription.delta":
        return InputTranscriptDelta(f.string(message, "item_id"), f.string(message, "delta"))
    if kind == "conversation.item.input_audio_transcription.completed":
        return InputTranscriptCompleted(
            f.string(message, "item_id"), f.string(message, "transcript")
        )
    if kind == "conversation.item.input_audio_transcription.failed":
        error = message.get("error")
        error = error if isinstance(error, dict) else {}
        return InputTranscriptFailed(
            f.string(message, "item_id"),
            str(error.get("message") or "transcription failed"),
            f.optional_string(error, "code"),
        )
    if kind == "response.function_call_arguments.done":
        return FunctionCallArguments(
            f.string(message, "response_id"),
            f.optional_string(message, "item_id") or "",
            f.string(message, "call_id"),
            f.string(message, "name"),
            f.string(message, "arguments"),
        )
    if kind == "conversation.item.truncated":
        return ItemTruncated(f.string(message, "item_id"), f.integer(message, "audio_end_ms"))
    if kind == "error":
        error = message.get("error")
        if not isinstance(error, dict):
            error = {}
        return ErrorEvent(
            f.optional_string(error, "code"),
            str(error.get("message") or "unknown error"),
            f.optional_string(error, "type"),
            f.optional_string(error, "param"),
            f.optional_string(error, "event_id"),
        )
    if kind in _SESSION_EVENTS:
        session = f.obj(message, "session")
        expires_at = session.get("expires_at")
        info = SessionInfo(
            f.optional_string(session, "id") or "",
            SessionConfig(),
            f.optional_string(session, "model"),
            expires_at if isinstance(expires_at, int) else None,
        )
        return SessionCreated(info) if kind.endswith(".created") else SessionUpdated(info)
    return None


def _index(message: dict[str, object]) -> int:
    value = message.get("output_index", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _role(value: object) -> Literal["user", "assistant", "system"] | None:
    if value == "user" or value == "assistant" or value == "system":
        return value
    return None

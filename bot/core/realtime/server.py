"""The server's side of the Realtime wire: client events in, server events out as JSON.

Used by the local backend's `/v1/realtime` route. A bad client event is a
`ClientEventError`, which the server answers with an `error` event and goes on.
"""

from __future__ import annotations

import binascii
from dataclasses import replace
from typing import Any, Final, assert_never

import orjson
import pybase64

from bot.core.realtime.dialects import (
    DIALECTS,
    Dialect,
    item_shape,
    read_item,
    read_session,
    response_shape,
    session_shape,
)
from bot.core.realtime.events import (
    AppendAudio,
    AudioCleared,
    AudioCommitted,
    AudioDelta,
    AudioDone,
    CancelResponse,
    ClearAudio,
    ClientEvent,
    CommitAudio,
    ContentPartAdded,
    ContentPartDone,
    CreateItem,
    CreateResponse,
    DeleteItem,
    ErrorEvent,
    FunctionCallArguments,
    InputTranscriptCompleted,
    InputTranscriptDelta,
    InputTranscriptFailed,
    ItemAdded,
    ItemDeleted,
    ItemDone,
    ItemTruncated,
    OutputItemAdded,
    OutputItemDone,
    ResponseCreated,
    ResponseDone,
    ServerEvent,
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

__all__ = ["ClientEventError", "decode_client_event", "encode_server_event"]


class ClientEventError(Exception):
    """A client event the server cannot take; answered with an `error` event."""

    def __init__(self, code: str, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id

    def as_event(self) -> ErrorEvent:
        return ErrorEvent(self.code, self.message, "invalid_request_error", None, self.event_id)


_NO_FIELDS: Final[dict[str, type[CommitAudio] | type[ClearAudio] | type[CancelResponse]]] = {
    "input_audio_buffer.commit": CommitAudio,
    "input_audio_buffer.clear": ClearAudio,
    "response.cancel": CancelResponse,
}


def decode_client_event(text: str | bytes) -> ClientEvent:
    """One client event.

    Raises:
        ClientEventError: not JSON, no type, an unknown type, or a field of the wrong kind.
    """
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ClientEventError("invalid_json", "The event is not valid JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ClientEventError("invalid_event", "The 'type' field is missing.")
    kind: str = event["type"]
    raw_id = event.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) else None
    try:
        return _decode(kind, event, event_id)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ClientEventError("invalid_value", f"Invalid {kind}: {exc}", event_id) from None


def _decode(kind: str, event: dict[str, Any], event_id: str | None) -> ClientEvent:
    if kind == "input_audio_buffer.append":
        try:
            audio = pybase64.b64decode(event["audio"], validate=True)
        except binascii.Error as exc:
            raise ValueError("audio is not base64") from exc
        return AppendAudio(audio, event_id=event_id)
    if kind in ("session.update", "transcription_session.update"):
        session = event["session"]
        if not isinstance(session, dict):
            raise TypeError("session must be an object")
        config = read_session(session)
        if kind == "transcription_session.update":
            config = replace(config, transcribe_only=True)
        return SessionUpdate(config, event_id=event_id)
    if kind == "conversation.item.create":
        item = event["item"]
        if not isinstance(item, dict):
            raise TypeError("item must be an object")
        previous = event.get("previous_item_id")
        return CreateItem(read_item(item), str(previous) if previous else None, event_id=event_id)
    if kind == "conversation.item.delete":
        return DeleteItem(str(event["item_id"]), event_id=event_id)
    if kind == "conversation.item.truncate":
        return TruncateItem(
            str(event["item_id"]),
            int(event["audio_end_ms"]),
            int(event.get("content_index", 0)),
            event_id=event_id,
        )
    if kind == "response.create":
        response = event.get("response") or {}
        instructions = response.get("instructions")
        return CreateResponse(str(instructions) if instructions else None, event_id=event_id)
    simple = _NO_FIELDS.get(kind)
    if simple is None:
        raise ClientEventError("invalid_event", f"Unknown event type {kind!r}.", event_id)
    return simple(event_id=event_id)


def encode_server_event(event: ServerEvent, dialect: Dialect, event_id: str) -> str | None:
    """The event as `dialect` spells it; None for an event the dialect does not have."""
    names = DIALECTS[dialect]
    body: dict[str, Any]
    match event:
        case AudioDelta(response_id, item_id, audio, output_index, content_index):
            body = {
                "type": names.audio_delta,
                "response_id": response_id,
                "item_id": item_id,
                "output_index": output_index,
                "content_index": content_index,
                "delta": pybase64.b64encode_as_string(audio),
            }
        case SessionCreated(session):
            body = {
                "type": _session_event(session, dialect, "created"),
                "session": _session(session, dialect),
            }
        case SessionUpdated(session):
            body = {
                "type": _session_event(session, dialect, "updated"),
                "session": _session(session, dialect),
            }
        case ErrorEvent(code, message, error_type, param, client_event_id):
            body = {
                "type": "error",
                "error": {
                    "type": error_type or "invalid_request_error",
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": client_event_id,
                },
            }
        case SpeechStarted(audio_start_ms, item_id):
            body = {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": item_id,
            }
        case SpeechStopped(audio_end_ms, item_id):
            body = {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": audio_end_ms,
                "item_id": item_id,
            }
        case AudioCommitted(item_id, previous_item_id):
            body = {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous_item_id,
                "item_id": item_id,
            }
        case AudioCleared():
            body = {"type": "input_audio_buffer.cleared"}
        case ItemAdded(item, previous_item_id):
            body = {
                "type": names.item_added,
                "previous_item_id": previous_item_id,
                "item": item_shape(item, dialect, described=True),
            }
        case ItemDone(item, previous_item_id):
            if names.item_done is None:
                return None
            body = {
                "type": names.item_done,
                "previous_item_id": previous_item_id,
                "item": item_shape(item, dialect, described=True),
            }
        case ItemDeleted(item_id):
            body = {"type": "conversation.item.deleted", "item_id": item_id}
        case ItemTruncated(item_id, audio_end_ms, content_index):
            body = {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": audio_end_ms,
            }
        case InputTranscriptDelta(item_id, delta):
            body = {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": delta,
            }
        case InputTranscriptCompleted(item_id, transcript):
            body = {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": 0},
            }
        case InputTranscriptFailed(item_id, message, code):
            body = {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item_id,
                "content_index": 0,
                "error": {
                    "type": "transcription_error",
                    "code": code,
                    "message": message,
                    "param": None,
                },
            }
        case ResponseCreated(response):
            body = {"type": "response.created", "response": response_shape(response, dialect)}
        case ResponseDone(response):
            body = {"type": "response.done", "response": response_shape(response, dialect)}
        case OutputItemAdded(response_id, output_index, item):
            body = {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": output_index,
                "item": item_shape(item, dialect, described=True),
            }
        case OutputItemDone(response_id, output_index, item):
            body = {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": output_index,
                "item": item_shape(item, dialect, described=True),
            }
        case ContentPartAdded(response_id, item_id, transcript, output_index, content_index):
            body = {
                "type": "response.content_part.added",
                **_where(response_id, item_id, output_index, content_index),
                # Content-part events say "audio" in both dialects.
                "part": {"type": "audio", "transcript": transcript},
            }
        case ContentPartDone(response_id, item_id, transcript, output_index, content_index):
            body = {
                "type": "response.content_part.done",
                **_where(response_id, item_id, output_index, content_index),
                "part": {"type": "audio", "transcript": transcript},
            }
        case AudioDone(response_id, item_id, output_index, content_index):
            body = {
                "type": names.audio_done,
                **_where(response_id, item_id, output_index, content_index),
            }
        case TranscriptDelta(response_id, item_id, delta, output_index, content_index):
            body = {
                "type": names.transcript_delta,
                **_where(response_id, item_id, output_index, content_index),
                "delta": delta,
            }
        case TranscriptDone(response_id, item_id, transcript, output_index, content_index):
            body = {
                "type": names.transcript_done,
                **_where(response_id, item_id, output_index, content_index),
                "transcript": transcript,
            }
        case FunctionCallArguments(response_id, item_id, call_id, name, arguments, output_index):
            body = {
                "type": "response.function_call_arguments.done",
                "response_id": response_id,
                "item_id": item_id,
                "output_index": output_index,
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        case _:
            assert_never(event)
    return orjson.dumps({"event_id": event_id, **body}).decode()


def _where(response_id: str, item_id: str, output_index: int, content_index: int) -> dict[str, Any]:
    return {
        "response_id": response_id,
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
    }


def _session_event(session: SessionInfo, dialect: Dialect, what: str) -> str:
    """`session.created`; beta transcription sessions are `transcription_session.created`."""
    if session.config.transcribe_only and dialect is Dialect.BETA:
        return f"transcription_session.{what}"
    return f"session.{what}"


def _session(session: SessionInfo, dialect: Dialect) -> dict[str, Any]:
    shape = session_shape(session.config, dialect)
    if session.config.transcribe_only:
        if dialect is Dialect.BETA:  # the SDK's TranscriptionSession has a client secret
            shape["client_secret"] = {"value": "", "expires_at": 0}
        shape["id"] = session.id
        shape["object"] = "realtime.transcription_session"
        return shape
    shape["object"] = "realtime.session"
    shape["id"] = session.id
    if dialect is Dialect.GA and session.model is not None:
        # Beta clients accept only OpenAI's own model names here, so beta leaves it out.
        shape["model"] = session.model
    return shape

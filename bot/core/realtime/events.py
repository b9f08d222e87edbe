"""The Realtime protocol as typed values: session settings, items, and the events of both roles.

Client events are what a client sends (the bridge); server events are what a server sends
(the hosted API, or the local backend). Audio travels as bytes: base64 exists only on the
wire, in `client.py` and `server.py`. The in-process local backend exchanges these values
directly, with no JSON at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from bot.core.frozen import statically_frozen

__all__ = [
    "AppendAudio",
    "AudioCleared",
    "AudioCommitted",
    "AudioDelta",
    "AudioDone",
    "AudioFormat",
    "CancelResponse",
    "ClearAudio",
    "ClientEvent",
    "CommitAudio",
    "ContentPartAdded",
    "ContentPartDone",
    "CreateItem",
    "CreateResponse",
    "DeleteItem",
    "ErrorEvent",
    "FunctionCallArguments",
    "InputTranscriptCompleted",
    "InputTranscriptDelta",
    "InputTranscriptFailed",
    "Item",
    "ItemAdded",
    "ItemDeleted",
    "ItemDone",
    "ItemTruncated",
    "OutputItemAdded",
    "OutputItemDone",
    "ResponseCreated",
    "ResponseDone",
    "ResponseInfo",
    "ServerEvent",
    "SessionConfig",
    "SessionCreated",
    "SessionInfo",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "Transcription",
    "TranscriptDelta",
    "TranscriptDone",
    "TruncateItem",
    "Eagerness",
    "NoiseReduction",
    "TurnDetection",
]


class AudioFormat(Enum):
    """What a session carries on the wire, in one direction."""

    PCM16 = "pcm16"  # 24 kHz PCM16 little-endian
    G711_ULAW = "g711_ulaw"  # 8 kHz μ-law, as Twilio sends it

    @property
    def rate_hz(self) -> int:
        return 24000 if self is AudioFormat.PCM16 else 8000

    @property
    def bytes_per_ms(self) -> int:
        return 48 if self is AudioFormat.PCM16 else 8


# ---- session settings ----------------------------------------------------------------------


Eagerness = Literal["low", "medium", "high", "auto"]
NoiseReduction = Literal["near_field", "far_field"]


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """When the caller's turn starts and ends, and what the server does then. `server_vad`
    ends a turn after `silence_duration_ms` of silence; `semantic_vad` (`semantic`) when what
    was said sounds finished, waiting longer the lower its `eagerness` (the VAD numbers do
    not apply to it)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    semantic: bool = False
    eagerness: Eagerness = "auto"


@dataclass(frozen=True, slots=True)
class Transcription:
    """Transcription of the caller's audio; `prompt` primes the speech model."""

    model: str
    prompt: str | None = None
    language: str | None = None  # ISO-639-1, e.g. "en"; None: the model finds out


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The settings of a session. In an update, None leaves a setting as it is."""

    instructions: str | None = None
    voice: str | None = None
    input_format: AudioFormat | None = None
    output_format: AudioFormat | None = None
    turn_detection: TurnDetection | Literal["off"] | None = None
    transcription: Transcription | Literal["off"] | None = None
    tools: tuple[Mapping[str, object], ...] | None = None  # {"type","name","description",...}
    speak: bool | None = None  # answers in audio (with a transcript), or in text only
    # Before VAD and the model: near_field for handsets, far_field for speakerphones.
    noise_reduction: NoiseReduction | Literal["off"] | None = None
    # A transcription session (`?intent=transcription`): it transcribes and never answers.
    # Only the input settings apply; GA spells it `session.type: "transcription"`, beta
    # `transcription_session.update`.
    transcribe_only: bool = False


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as the server describes it in `session.created` and `session.updated`."""

    id: str
    config: SessionConfig
    model: str | None = None
    expires_at: int | None = None


# ---- conversation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One conversation item. For messages, `text` is the text, or the transcript of audio."""

    id: str | None
    type: Literal["message", "function_call", "function_call_output"]
    role: Literal["user", "assistant", "system"] | None = None
    text: str = ""
    audio: bool = False
    status: Literal["completed", "in_progress", "incomplete"] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    output: str = ""


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    id: str
    status: str  # in_progress | completed | cancelled | failed | incomplete
    reason: str | None = None  # why it was cancelled or failed
    usage: Mapping[str, object] | None = None
    output: tuple[Item, ...] = ()
    speak: bool = True
    conversation_id: str | None = None


# ---- client events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    session: SessionConfig
    event_id: str | None = field(default=None, kw_only=True)


@statically_frozen  # made for every frame: see bot/core/frozen.py
class AppendAudio:
    audio: bytes  # in the session's input format
    event_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class CommitAudio:
    event_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class ClearAudio:
    event_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class CreateItem:
    item: Item
    previous_item_id: str | None = None
    event_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class DeleteItem:
    item_id: str
    event_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class TruncateItem:
    """Cut an assistant item's audio at `audio_end_ms`: what the caller heard of it."""

    item_id: str
    audio_end_ms: int
    content_index: int = 0
    event_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class CreateResponse:
    instructions: str | None = None  # for this response only
    speak: bool | None = None  # say the output modalities explicitly (audio, or text only)
    event_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class CancelResponse:
    event_id: str | None = field(default=None, kw_only=True)


ClientEvent = (
    SessionUpdate
    | AppendAudio
    | CommitAudio
    | ClearAudio
    | CreateItem
    | DeleteItem
    | TruncateItem
    | CreateResponse
    | CancelResponse
)


# ---- server events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session: SessionInfo


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: SessionInfo


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: str | None
    message: str
    error_type: str | None = None
    param: str | None = None
    client_event_id: str | None = None  # the client event it answers, if any


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str | None


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str | None


@dataclass(frozen=True, slots=True)
class AudioCommitted:
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class AudioCleared:
    pass


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """An item joined the conversation (beta calls this `conversation.item.created`)."""

    item: Item
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ItemDone:
    """GA only: the item is complete."""

    item: Item
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ItemDeleted:
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class InputTranscriptDelta:
    """Words of the caller's transcript as they come (models that stream them)."""

    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class InputTranscriptCompleted:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    item_id: str
    message: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response: ResponseInfo


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response: ResponseInfo


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    output_index: int
    item: Item


@dataclass(frozen=True, slots=True)
class OutputItemDone:
    response_id: str
    output_index: int
    item: Item


@dataclass(frozen=True, slots=True)
class ContentPartAdded:
    response_id: str
    item_id: str
    transcript: str
    output_index: int = 0
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class ContentPartDone:
    response_id: str
    item_id: str
    transcript: str
    output_index: int = 0
    content_index: int = 0


@statically_frozen  # made for every frame: see bot/core/frozen.py
class AudioDelta:
    """Model audio, in the session's output format."""

    response_id: str
    item_id: str
    audio: bytes
    output_index: int = 0
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """Text of the audio that follows it."""

    response_id: str
    item_id: str
    delta: str
    output_index: int = 0
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str
    output_index: int = 0
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class FunctionCallArguments:
    """The model calls a function; `arguments` is JSON text as the model wrote it."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str
    output_index: int = 0


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | ErrorEvent
    | SpeechStarted
    | SpeechStopped
    | AudioCommitted
    | AudioCleared
    | ItemAdded
    | ItemDone
    | ItemDeleted
    | ItemTruncated
    | InputTranscriptDelta
    | InputTranscriptCompleted
    | InputTranscriptFailed
    | ResponseCreated
    | ResponseDone
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | FunctionCallArguments
)

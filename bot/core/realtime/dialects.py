"""The Realtime dialects as data: the event names, audio formats and shapes of GA and beta.

See shared/reference/protocols.md Part B. GA nests audio settings under `session.audio` and
names audio events `response.output_audio.*`; the beta dialect (`OpenAI-Beta: realtime=v1`)
is flat and names them `response.audio.*`. Readers accept both spellings whatever the
dialect, because Realtime-compatible servers and clients mix them. Both roles build on the
shapes here: a client writes a session in them, a server describes its own in them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal

from bot.core.realtime.events import (
    AudioFormat,
    Item,
    NoiseReduction,
    ResponseInfo,
    SessionConfig,
    Transcription,
    TurnDetection,
)

__all__ = [
    "AUDIO_DELTA",
    "AUDIO_DONE",
    "DIALECTS",
    "TRANSCRIPT_DELTA",
    "TRANSCRIPT_DONE",
    "Dialect",
    "Names",
    "format_shape",
    "item_shape",
    "read_format",
    "read_item",
    "read_session",
    "response_shape",
    "session_shape",
]


class Dialect(Enum):
    GA = "ga"
    BETA = "beta"


@dataclass(frozen=True, slots=True)
class Names:
    """What one dialect calls the things that differ between the two."""

    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    item_added: str
    item_done: str | None  # beta has no `conversation.item.done`
    audio_part: str  # content part of an assistant audio message
    text_part: str  # content part of an assistant text message
    modalities_key: str
    audio_modalities: tuple[str, ...]
    text_modalities: tuple[str, ...]
    formats: Mapping[AudioFormat, object]


DIALECTS: Final[Mapping[Dialect, Names]] = {
    Dialect.GA: Names(
        audio_delta="response.output_audio.delta",
        audio_done="response.output_audio.done",
        transcript_delta="response.output_audio_transcript.delta",
        transcript_done="response.output_audio_transcript.done",
        item_added="conversation.item.added",
        item_done="conversation.item.done",
        audio_part="output_audio",
        text_part="output_text",
        modalities_key="output_modalities",
        audio_modalities=("audio",),  # GA answers in audio *or* text; audio has a transcript
        text_modalities=("text",),
        formats={
            AudioFormat.PCM16: {"type": "audio/pcm", "rate": 24000},
            AudioFormat.G711_ULAW: {"type": "audio/pcmu"},
        },
    ),
    Dialect.BETA: Names(
        audio_delta="response.audio.delta",
        audio_done="response.audio.done",
        transcript_delta="response.audio_transcript.delta",
        transcript_done="response.audio_transcript.done",
        item_added="conversation.item.created",
        item_done=None,
        audio_part="audio",
        text_part="text",
        modalities_key="modalities",
        audio_modalities=("text", "audio"),
        text_modalities=("text",),
        formats={AudioFormat.PCM16: "pcm16", AudioFormat.G711_ULAW: "g711_ulaw"},
    ),
}

# Event names a reader accepts in either spelling.
AUDIO_DELTA: Final = frozenset(names.audio_delta for names in DIALECTS.values())
AUDIO_DONE: Final = frozenset(names.audio_done for names in DIALECTS.values())
TRANSCRIPT_DELTA: Final = frozenset(names.transcript_delta for names in DIALECTS.values())
TRANSCRIPT_DONE: Final = frozenset(names.transcript_done for names in DIALECTS.values())

_FORMAT_NAMES: Final = {
    "audio/pcm": AudioFormat.PCM16,
    "pcm16": AudioFormat.PCM16,
    "audio/pcmu": AudioFormat.G711_ULAW,
    "g711_ulaw": AudioFormat.G711_ULAW,
}


def format_shape(audio: AudioFormat, dialect: Dialect) -> object:
    return DIALECTS[dialect].formats[audio]


def read_format(value: object) -> AudioFormat:
    """An audio format in either spelling: `{"type": "audio/pcmu"}` or `"g711_ulaw"`.

    Raises:
        ValueError: a format neither dialect knows.
    """
    kind = value.get("type") if isinstance(value, dict) else value
    found = _FORMAT_NAMES.get(kind) if isinstance(kind, str) else None
    if found is None:
        raise ValueError(f"unsupported audio format {kind!r}")
    return found


# ---- sessions ------------------------------------------------------------------------------


def _turn_detection_shape(vad: TurnDetection | Literal["off"]) -> dict[str, object] | None:
    if vad == "off":
        return None
    if vad.semantic:
        return {
            "type": "semantic_vad",
            "eagerness": vad.eagerness,
            "create_response": vad.create_response,
            "interrupt_response": vad.interrupt_response,
        }
    return {
        "type": "server_vad",
        "threshold": vad.threshold,
        "prefix_padding_ms": vad.prefix_padding_ms,
        "silence_duration_ms": vad.silence_duration_ms,
        "create_response": vad.create_response,
        "interrupt_response": vad.interrupt_response,
    }


def _transcription_shape(transcription: Transcription | Literal["off"]) -> dict[str, str] | None:
    if transcription == "off":
        return None
    shape = {"model": transcription.model}
    if transcription.prompt:
        shape["prompt"] = transcription.prompt
    if transcription.language:
        shape["language"] = transcription.language
    return shape


def _noise_shape(noise: NoiseReduction | Literal["off"]) -> dict[str, str] | None:
    return None if noise == "off" else {"type": noise}


def session_shape(config: SessionConfig, dialect: Dialect) -> dict[str, Any]:
    """The `session` object of a `session.update` (or of a server's description): only the
    settings `config` sets."""
    if config.transcribe_only:
        return _transcription_session_shape(config, dialect)
    names = DIALECTS[dialect]
    shape: dict[str, Any] = {"type": "realtime"} if dialect is Dialect.GA else {}
    if config.speak is not None:
        shape[names.modalities_key] = list(
            names.audio_modalities if config.speak else names.text_modalities
        )
    if config.instructions is not None:
        shape["instructions"] = config.instructions
    vad = None if config.turn_detection is None else _turn_detection_shape(config.turn_detection)
    transcription = (
        None if config.transcription is None else _transcription_shape(config.transcription)
    )
    if dialect is Dialect.GA:
        inputs: dict[str, object] = {}
        outputs: dict[str, object] = {}
        if config.input_format is not None:
            inputs["format"] = names.formats[config.input_format]
        if config.turn_detection is not None:
            inputs["turn_detection"] = vad
        if config.transcription is not None:
            inputs["transcription"] = transcription
        if config.noise_reduction is not None:
            inputs["noise_reduction"] = _noise_shape(config.noise_reduction)
        if config.output_format is not None:
            outputs["format"] = names.formats[config.output_format]
        if config.voice is not None:
            outputs["voice"] = config.voice
        audio = {k: v for k, v in (("input", inputs), ("output", outputs)) if v}
        if audio:
            shape["audio"] = audio
    else:
        if config.voice is not None:
            shape["voice"] = config.voice
        if config.input_format is not None:
            shape["input_audio_format"] = names.formats[config.input_format]
        if config.output_format is not None:
            shape["output_audio_format"] = names.formats[config.output_format]
        if config.turn_detection is not None:
            shape["turn_detection"] = vad
        if config.transcription is not None:
            shape["input_audio_transcription"] = transcription
        if config.noise_reduction is not None:
            shape["input_audio_noise_reduction"] = _noise_shape(config.noise_reduction)
    if config.tools is not None:
        shape["tools"] = [dict(tool) for tool in config.tools]
        shape["tool_choice"] = "auto"
    return shape


def _transcription_session_shape(config: SessionConfig, dialect: Dialect) -> dict[str, Any]:
    """A transcription session's settings: the input side only. Its turn detection has no
    responses to create or interrupt."""
    vad: dict[str, object] | None = None
    if isinstance(config.turn_detection, TurnDetection):
        vad = _turn_detection_shape(config.turn_detection)
        assert vad is not None
        vad.pop("create_response", None)
        vad.pop("interrupt_response", None)
    inputs: dict[str, object] = {}
    if config.input_format is not None:
        inputs["format"] = format_shape(config.input_format, dialect)
    if config.transcription is not None:
        inputs["transcription"] = _transcription_shape(config.transcription)
    if config.turn_detection is not None:
        inputs["turn_detection"] = vad
    if config.noise_reduction is not None:
        inputs["noise_reduction"] = _noise_shape(config.noise_reduction)
    if dialect is Dialect.GA:
        return (
            {"type": "transcription", "audio": {"input": inputs}}
            if inputs
            else {"type": "transcription"}
        )
    beta_names = {
        "format": "input_audio_format",
        "transcription": "input_audio_transcription",
        "turn_detection": "turn_detection",
        "noise_reduction": "input_audio_noise_reduction",
    }
    return {beta_names[name]: value for name, value in inputs.items()}


def read_session(shape: Mapping[str, Any]) -> SessionConfig:
    """A `session.update`'s settings, in either spelling (or a mix of both).

    Raises:
        ValueError, TypeError: a setting of the wrong kind.
    """
    audio = shape.get("audio") or {}
    inputs = audio.get("input") or {}
    outputs = audio.get("output") or {}
    input_format = inputs.get("format", shape.get("input_audio_format"))
    output_format = outputs.get("format", shape.get("output_audio_format"))
    voice = outputs.get("voice", shape.get("voice"))
    turn_detection: TurnDetection | Literal["off"] | None = None
    if "turn_detection" in inputs or "turn_detection" in shape:
        vad = inputs.get("turn_detection", shape.get("turn_detection"))
        turn_detection = "off" if vad is None else _read_turn_detection(vad)
    transcription: Transcription | Literal["off"] | None = None
    if "transcription" in inputs or "input_audio_transcription" in shape:
        raw = inputs.get("transcription", shape.get("input_audio_transcription"))
        if raw is None:
            transcription = "off"
        elif isinstance(raw, dict):
            prompt, language = raw.get("prompt"), raw.get("language")
            transcription = Transcription(
                str(raw.get("model") or ""),
                str(prompt) if prompt else None,
                str(language) if language else None,
            )
        else:
            raise TypeError("transcription must be an object or null")
    noise_reduction: NoiseReduction | Literal["off"] | None = None
    if "noise_reduction" in inputs or "input_audio_noise_reduction" in shape:
        noise = inputs.get("noise_reduction", shape.get("input_audio_noise_reduction"))
        noise_reduction = "off" if noise is None else _read_noise(noise)
    modalities = shape.get("output_modalities", shape.get("modalities"))
    tools = shape.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)
    ):
        raise TypeError("tools must be a list of objects")
    instructions = shape.get("instructions")
    return SessionConfig(
        instructions=None if instructions is None else str(instructions),
        voice=None if voice is None else str(voice),
        input_format=None if input_format is None else read_format(input_format),
        output_format=None if output_format is None else read_format(output_format),
        turn_detection=turn_detection,
        transcription=transcription,
        tools=None if tools is None else tuple(tools),
        speak=None if modalities is None else "audio" in modalities,
        noise_reduction=noise_reduction,
        transcribe_only=shape.get("type") == "transcription",
    )


def _read_noise(noise: object) -> NoiseReduction:
    kind: object = noise.get("type") if isinstance(noise, dict) else None
    if kind == "near_field":
        return "near_field"
    if kind == "far_field":
        return "far_field"
    raise ValueError(f"noise_reduction must be near_field or far_field, got {kind!r}")


def _read_turn_detection(vad: object) -> TurnDetection:
    if not isinstance(vad, dict):
        raise TypeError("turn_detection must be an object or null")
    default = TurnDetection()
    kind = vad.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ValueError(f"turn_detection type must be server_vad or semantic_vad, got {kind!r}")
    eagerness = vad.get("eagerness", "auto")
    if eagerness not in ("low", "medium", "high", "auto"):
        raise ValueError(f"eagerness must be low, medium, high or auto, got {eagerness!r}")
    return TurnDetection(
        semantic=kind == "semantic_vad",
        eagerness=eagerness,
        threshold=float(vad.get("threshold", default.threshold)),
        prefix_padding_ms=int(vad.get("prefix_padding_ms", default.prefix_padding_ms)),
        silence_duration_ms=int(vad.get("silence_duration_ms", default.silence_duration_ms)),
        create_response=bool(vad.get("create_response", True)),
        interrupt_response=bool(vad.get("interrupt_response", True)),
    )


# ---- items and responses -------------------------------------------------------------------


def item_shape(item: Item, dialect: Dialect, *, described: bool) -> dict[str, Any]:
    """An item as a client creates it (`described=False`: no id unless set, no status), or
    as a server describes it (`described=True`)."""
    names = DIALECTS[dialect]
    shape: dict[str, Any] = {}
    if item.id is not None or described:
        shape["id"] = item.id
    shape["type"] = item.type
    if described and dialect is Dialect.GA:
        shape["object"] = "realtime.item"
    status = item.status or "completed"
    if item.type == "function_call":
        if described:
            shape["status"] = status
        shape.update(call_id=item.call_id, name=item.name, arguments=item.arguments)
        return shape
    if item.type == "function_call_output":
        shape.update(call_id=item.call_id, output=item.output)
        return shape
    part: dict[str, Any]
    if item.role == "assistant":
        if item.audio:
            part = {"type": names.audio_part, "transcript": item.text}
        else:
            part = {"type": names.text_part, "text": item.text}
    elif item.audio:
        part = {"type": "input_audio", "transcript": item.text or None}
    else:
        part = {"type": "input_text", "text": item.text}
    if described:
        shape["status"] = status
    shape.update(role=item.role or "user", content=[part])
    return shape


_TEXT_PARTS: Final = frozenset({"input_text", "text", "output_text"})


def read_item(shape: Mapping[str, Any]) -> Item:
    """An item a client creates.

    Raises:
        KeyError, TypeError, ValueError: not an item a client may create.
    """
    kind = shape.get("type", "message")
    item_id = shape.get("id")
    item_id = str(item_id) if item_id else None
    if kind == "message":
        role = shape.get("role", "user")
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"unknown role {role!r}")
        text = " ".join(
            str(part.get("text", ""))
            for part in shape.get("content", [])
            if part.get("type") in _TEXT_PARTS
        )
        return Item(item_id, "message", role=role, text=text)
    if kind == "function_call_output":
        return Item(item_id, kind, call_id=str(shape["call_id"]), output=str(shape["output"]))
    if kind == "function_call":
        return Item(
            item_id,
            kind,
            call_id=str(shape["call_id"]),
            name=str(shape["name"]),
            arguments=str(shape.get("arguments", "")),
        )
    raise ValueError(f"items of type {kind!r} cannot be created")


def response_shape(response: ResponseInfo, dialect: Dialect) -> dict[str, Any]:
    names = DIALECTS[dialect]
    shape: dict[str, Any] = {
        "id": response.id,
        "object": "realtime.response",
        "status": response.status,
        "status_details": None
        if response.reason is None
        else {"type": response.status, "reason": response.reason},
        "output": [item_shape(item, dialect, described=True) for item in response.output],
        "usage": dict(response.usage) if response.usage else None,
    }
    if response.conversation_id is not None and dialect is Dialect.GA:
        shape["conversation_id"] = response.conversation_id
    shape[names.modalities_key] = list(
        names.audio_modalities if response.speak else names.text_modalities
    )
    return shape

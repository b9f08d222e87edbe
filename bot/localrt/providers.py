"""The three services behind the local Realtime backend, each behind a small interface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.sansio.rtserver import SpeechDetector

__all__ = [
    "ChatDone",
    "ChatEvent",
    "ChatModel",
    "Providers",
    "SpeechToText",
    "TextDelta",
    "TextToSpeech",
    "ToolCall",
]


class SpeechToText(Protocol):
    async def transcribe(self, pcm16_24k: bytes) -> str: ...


class TextToSpeech(Protocol):
    async def synthesize(self, text: str, voice: str) -> bytes:
        """Speech as PCM16 mono at 24 kHz."""
        ...


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatDone:
    usage: dict[str, int]


ChatEvent = TextDelta | ToolCall | ChatDone


class ChatModel(Protocol):
    def stream(
        self, instructions: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ChatEvent]: ...


@dataclass(frozen=True)
class Providers:
    stt: SpeechToText
    chat: ChatModel
    tts: TextToSpeech
    # Makes one speech detector per session (detectors keep state); None: energy-based.
    vad: Callable[[], SpeechDetector] | None = None

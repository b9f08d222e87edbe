"""The services behind the local Realtime backend, each behind a small interface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.localrt.core.vad import SpeechDetector

__all__ = [
    "ChatDone",
    "ChatEvent",
    "ChatModel",
    "Providers",
    "Speech",
    "SpeechToText",
    "TextDelta",
    "TextToSpeech",
    "ToolCall",
]


class SpeechToText(Protocol):
    async def transcribe(self, pcm16: bytes, rate_hz: int, prompt: str | None) -> str:
        """The words in mono PCM16 audio; `prompt` primes the model (names, numbers)."""
        ...


@dataclass(frozen=True, slots=True)
class Speech:
    pcm16: bytes  # mono
    rate_hz: int


class TextToSpeech(Protocol):
    async def synthesize(self, text: str, voice: str) -> Speech: ...


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
    # Primes speech-to-text when the session's transcription sets no prompt of its own.
    transcription_prompt: str | None = None

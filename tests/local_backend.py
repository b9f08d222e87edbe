"""Stand-ins for the local backend's services: a fixed transcript, a tone voice, and a chat
model that remembers what it was told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from bot.localrt.demo_agent import DemoAgent
from bot.localrt.providers import ChatEvent, Speech


class FixedTranscript:
    """Hears the same words whatever is said; records how much audio it was given."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.heard_ms: list[int] = []
        self.prompts: list[str | None] = []

    async def transcribe(self, pcm16: bytes, rate_hz: int, prompt: str | None) -> str:
        self.heard_ms.append(len(pcm16) * 1000 // (2 * rate_hz))
        self.prompts.append(prompt)
        return self.text


class ToneVoice:
    """Speaks every word as 80 ms of a 500 Hz tone, at 24 kHz."""

    async def synthesize(self, text: str, voice: str) -> Speech:
        words = max(1, len(text.split()))
        t = np.arange(int(0.08 * words * 24000)) / 24000
        return Speech((8000 * np.sin(2 * np.pi * 500 * t)).astype("<i2").tobytes(), 24000)


class RecordingChat:
    """The demo agent, remembering the conversation it was given each time."""

    def __init__(self, inner: DemoAgent) -> None:
        self.inner = inner
        self.calls: list[list[dict[str, Any]]] = []

    def stream(
        self, instructions: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ChatEvent]:
        self.calls.append([dict(m) for m in messages])
        return self.inner.stream(instructions, messages, tools)

"""Providers that call any OpenAI-compatible HTTP API: OpenAI, Ollama, vLLM, llama.cpp server.

Chat streams `/chat/completions` with tools; speech-to-text posts a WAV to
`/audio/transcriptions`; text-to-speech asks `/audio/speech` for raw 24 kHz PCM16.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bot.errors import UpstreamError
from bot.localrt.providers import ChatDone, ChatEvent, Speech, TextDelta, ToolCall

__all__ = ["CompatibleChat", "CompatibleSpeech", "CompatibleTranscriber", "ProviderError"]


class ProviderError(UpstreamError):
    """An OpenAI-compatible service answered with an error."""


class _Client:
    def __init__(self, base_url: str, model: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def _check(self, response: aiohttp.ClientResponse) -> None:
        if response.status >= 400:
            body = (await response.text())[:200]
            raise ProviderError(f"{response.url.path}: HTTP {response.status}: {body}")


class CompatibleChat(_Client):
    async def stream(
        self, instructions: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ChatEvent]:
        body: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": instructions}, *messages],
        }
        if tools:
            # Realtime tools are flat; chat completions nests them under "function".
            body["tools"] = [
                {
                    "type": "function",
                    "function": {k: v for k, v in tool.items() if k != "type"},
                }
                for tool in tools
            ]
        calls: dict[int, dict[str, str]] = {}
        usage: dict[str, int] = {}
        async with aiohttp.ClientSession(headers=self.headers) as http:
            async with http.post(f"{self.base_url}/chat/completions", json=body) as response:
                await self._check(response)
                async for raw in response.content:
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = {
                            "input_tokens": int(chunk["usage"].get("prompt_tokens", 0)),
                            "output_tokens": int(chunk["usage"].get("completion_tokens", 0)),
                            "total_tokens": int(chunk["usage"].get("total_tokens", 0)),
                        }
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        for call in delta.get("tool_calls") or []:
                            slot = calls.setdefault(
                                int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                            )
                            function = call.get("function") or {}
                            slot["id"] = call.get("id") or slot["id"]
                            slot["name"] = function.get("name") or slot["name"]
                            slot["arguments"] += function.get("arguments") or ""
        for _, call in sorted(calls.items()):
            yield ToolCall(call["id"], call["name"], call["arguments"] or "{}")
        yield ChatDone(usage)


class CompatibleTranscriber(_Client):
    async def transcribe(self, pcm16: bytes, rate_hz: int, prompt: str | None) -> str:
        wav = io.BytesIO()
        with wave.open(wav, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate_hz)
            out.writeframes(pcm16)
        form = aiohttp.FormData()
        form.add_field("model", self.model)
        if prompt:
            form.add_field("prompt", prompt)
        form.add_field("file", wav.getvalue(), filename="speech.wav", content_type="audio/wav")
        async with aiohttp.ClientSession(headers=self.headers) as http:
            async with http.post(f"{self.base_url}/audio/transcriptions", data=form) as response:
                await self._check(response)
                return str((await response.json()).get("text", "")).strip()


class CompatibleSpeech(_Client):
    def __init__(self, base_url: str, model: str, api_key: str | None, voice: str | None) -> None:
        super().__init__(base_url, model, api_key)
        self.voice = voice

    async def synthesize(self, text: str, voice: str) -> Speech:
        body = {
            "model": self.model,
            "input": text,
            "voice": self.voice or voice,
            "response_format": "pcm",  # 24 kHz 16-bit mono, the Realtime output format
        }
        async with aiohttp.ClientSession(headers=self.headers) as http:
            async with http.post(f"{self.base_url}/audio/speech", json=body) as response:
                await self._check(response)
                return Speech(await response.read(), 24000)

"""The OpenAI-compatible providers against a fake OpenAI-compatible API on loopback."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

from bot.localrt.openai_compat import (
    CompatibleChat,
    CompatibleSpeech,
    CompatibleTranscriber,
    ProviderError,
)
from bot.localrt.providers import ChatDone, TextDelta, ToolCall
from bot.localrt.services import local_providers
from tests.conftest import TEST_KEY, run_app, settings_from
from tests.fake_openai import FakeOpenAI
from tests.realtime_types import ORDER_TOOL, ask


async def test_streaming_chat_with_tools_transcription_and_speech() -> None:
    async with FakeOpenAI() as api:
        chat = CompatibleChat(api.url, "llama3.2", "key-123")
        events = [
            e
            async for e in chat.stream(
                "Be brief.", [{"role": "user", "content": "Where is 4417?"}], [ORDER_TOOL]
            )
        ]
        assert events == [
            ToolCall("call_7", "get_order_status", '{"order_id": "4417"}'),
            ChatDone({"input_tokens": 12, "output_tokens": 7, "total_tokens": 19}),
        ]
        kind, body = api.requests[0]
        assert body["model"] == "llama3.2" and body["stream"] is True
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["tools"] == [
            {"type": "function", "function": {k: v for k, v in ORDER_TOOL.items() if k != "type"}}
        ]
        assert body["authorization"] == "Bearer key-123"
        text = [
            e
            async for e in chat.stream(
                "Be brief.", [{"role": "tool", "tool_call_id": "call_7", "content": "{}"}], []
            )
        ]
        assert (
            "".join(e.text for e in text if isinstance(e, TextDelta))
            == "Your order shipped. It arrives Friday."
        )

        stt = CompatibleTranscriber(api.url, "whisper-1", None)
        assert await stt.transcribe(b"\x00\x00" * 8000, 8000, "Acme") == "Where is my order 4417?"
        assert api.requests[-1] == (
            "transcribe",
            {"model": "whisper-1", "bytes": 44 + 16000, "riff": b"RIFF", "prompt": "Acme"},
        )

        tts = CompatibleSpeech(api.url, "gpt-4o-mini-tts", None, "coral")
        speech = await tts.synthesize("Your order shipped.", "alloy")
        assert (len(speech.pcm16), speech.rate_hz) == (3 * 4800, 24000)
        assert api.requests[-1] == (
            "speech",
            {
                "model": "gpt-4o-mini-tts",
                "input": "Your order shipped.",
                "voice": "coral",
                "response_format": "pcm",
            },
        )


async def test_a_failing_service_raises_a_clear_error() -> None:
    async with FakeOpenAI(chat_status=503) as api:
        chat = CompatibleChat(api.url, "m", None)
        with pytest.raises(ProviderError, match="HTTP 503: .*model overloaded"):
            [e async for e in chat.stream("x", [{"role": "user", "content": "hi"}], [])]


async def test_the_local_backend_on_compatible_services(base_env: dict[str, str]) -> None:
    async with FakeOpenAI() as api:
        settings = settings_from(
            base_env,
            LOCAL_STT_URL=api.url,
            LOCAL_LLM_URL=api.url,
            LOCAL_LLM_MODEL="qwen2.5",
            LOCAL_TTS_URL=api.url,
            LOCAL_API_KEY="local-key",
        )
        providers = local_providers(settings.local)
        assert isinstance(providers.chat, CompatibleChat)
        async with run_app(settings, local_providers=providers) as app:
            client = AsyncOpenAI(
                api_key=TEST_KEY, websocket_base_url=app.url.replace("http", "ws") + "/v1"
            )
            async with client.realtime.connect(model="local") as conn:
                events = await ask(conn, "Hi")
    transcript = [e for e in events if e["type"] == "response.output_audio_transcript.done"][0][
        "transcript"
    ]
    assert transcript == "Your order shipped. It arrives Friday."
    assert events[-1]["response"]["usage"]["total_tokens"] == 19
    spoken = [body["input"] for kind, body in api.requests if kind == "speech"]
    assert spoken == ["Your order shipped.", "It arrives Friday."]  # sentence by sentence

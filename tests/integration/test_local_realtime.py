"""The local Realtime backend over real sockets: the official openai SDK as its client, and a
whole phone call through the bridge into it (STT and TTS faked until the offline models land)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from bot.config import Settings
from bot.core.codec import pcm16_to_ulaw
from bot.core.realtime.dialects import Dialect
from bot.core.realtime.events import (
    AppendAudio,
    CreateResponse,
    ServerEvent,
    SessionConfig,
    SessionUpdate,
)
from bot.core.realtime.server import encode_server_event
from bot.localrt.demo_agent import DemoAgent
from bot.localrt.providers import Providers, Speech
from bot.localrt.runner import LocalSession
from bot.simulator import simulate
from tests.audio_tools import tone
from tests.conftest import (
    LOCAL_SECRET,
    TEST_KEY,
    eventually,
    run_app,
    settings_from,
    stored_call,
)
from tests.local_backend import FixedTranscript, RecordingChat, ToneVoice
from tests.realtime_types import ORDER_TOOL, BetaEvent, ask, collect, validate


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_the_openai_sdk_drives_the_local_backend(
    base_settings: Settings, dialect: str
) -> None:
    if dialect == "beta" and BetaEvent is None:
        pytest.skip("this openai SDK has no beta client")
    providers = Providers(FixedTranscript("unused"), DemoAgent(), ToneVoice())
    async with run_app(base_settings, local_providers=providers) as app:
        client = AsyncOpenAI(
            api_key=TEST_KEY, websocket_base_url=app.url.replace("http", "ws") + "/v1"
        )
        realtime = client.realtime if dialect == "ga" else client.beta.realtime
        async with realtime.connect(model="local-demo") as conn:
            [created] = await collect(conn, dialect, "session.created")
            tools = {"tools": [ORDER_TOOL]}
            await conn.session.update(
                session={"type": "realtime", **tools} if dialect == "ga" else tools
            )
            await collect(conn, dialect, "session.updated")
            first = await ask(conn, "Where is my order 4417?", dialect)
            [call] = [e for e in first if e["type"] == "response.function_call_arguments.done"]
            assert (call["name"], json.loads(call["arguments"])) == (
                "get_order_status",
                {"order_id": "4417"},
            )
            await conn.conversation.item.create(
                item={
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": json.dumps(
                        {"found": True, "order_id": "4417", "status": "shipped", "eta": "Friday"}
                    ),
                }
            )
            await conn.response.create()
            answer = await collect(conn, dialect)
    audio_kind = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
    audio = b"".join(
        __import__("base64").b64decode(e["delta"]) for e in answer if e["type"] == audio_kind
    )
    assert len(audio) // 48 == 80 * 8  # "Order 4417 is shipped." + "It should arrive Friday."
    [done] = [e for e in answer if e["type"] == "response.done"]
    assert done["response"]["status"] == "completed"
    transcript = [e for e in answer if e["type"].endswith("transcript.done")][0]["transcript"]
    assert transcript == "Order 4417 is shipped. It should arrive Friday."
    assert created["session"]["id"].startswith("sess_")


@pytest.mark.parametrize(
    ("turn_detection", "heard_ms"), [("server_vad", 1500), ("semantic_vad", 1200)]
)
async def test_a_phone_call_through_the_bridge_into_the_local_backend(
    base_env: dict[str, str], base_settings: Settings, turn_detection: str, heard_ms: int
) -> None:
    """Caller speaks, the local backend transcribes, the demo agent calls the order tool
    through the bridge, and the answer comes back as speech the phone plays. With
    `semantic_vad` the words heard at a 200 ms pause sound finished and end the turn."""
    stt = FixedTranscript("Where is my order 4417?")
    providers = Providers(stt, DemoAgent(), ToneVoice())
    async with run_app(base_settings, local_providers=providers) as backend:
        settings = settings_from(
            base_env,
            REALTIME_URL=backend.url.replace("http", "ws") + "/v1/realtime",
            REALTIME_MODEL="local-demo",
            BOT_TOOLS="bot.example_tools",
            REALTIME_TRANSCRIPTION_MODEL="local",
            TURN_DETECTION=turn_detection,
        )
        async with run_app(settings) as bridge:
            question = pcm16_to_ulaw(tone(300, 1.0, 8000, dbfs=-12))
            result = await simulate(
                bridge.url, auth_token=LOCAL_SECRET, say=question, duration_s=3.5
            )
            await bridge.calls_done()
    # Speech from 0 (no room for the prefix padding) to 1 s, plus the silence that ended
    # the turn (500 ms, as the hosted API commits it; or the 200 ms pause that was probed).
    # Transcribed once: the probe's words are the turn's transcript.
    assert stt.heard_ms == [pytest.approx(heard_ms, abs=40)]
    assert result.bytes_received == 80 * 8 * 8  # the spoken answer reached the phone
    call = await stored_call(settings, result.call_sid)
    said = [(t["speaker"], t["text"]) for t in call["turns"]]
    assert said == [
        ("caller", "Where is my order 4417?"),
        ("assistant", "Order 4417 is shipped. It should arrive Friday."),
    ]
    [tool] = [e for e in call["events"] if e["kind"] == "tool"]
    assert (
        tool["data"]["name"] == "get_order_status"
        and '"status": "shipped"' in tool["data"]["result"]
    )


async def test_the_embedded_default_talks_to_the_backend_in_process(
    tmp_path: Path,
) -> None:
    """No key and no URL: calls reach the local backend through an in-memory channel, as
    μ-law both ways, and the call log and the backend agree on what the caller heard."""
    stt = FixedTranscript("Where is my order 4417?")
    chat = RecordingChat(DemoAgent())
    settings = Settings.from_env({"BOT_DATA_DIR": str(tmp_path)})
    assert settings.realtime.local
    providers = Providers(stt, chat, ToneVoice(), transcription_prompt="Order numbers: digits.")
    async with run_app(settings, local_providers=providers) as app:
        # The demo greeting is 12 words (960 ms of tone); the caller talks over it at 0.5 s.
        question = pcm16_to_ulaw(tone(300, 1.0, 8000, dbfs=-12))
        result = await simulate(
            app.url,
            auth_token=LOCAL_SECRET,
            barge_in_at_s=0.5,
            barge_in=question,
            duration_s=4.0,
        )
        await app.calls_done()
    assert len(result.clears) == 1
    assert stt.prompts == ["Order numbers: digits."]  # one caller turn, primed
    call = await stored_call(settings, result.call_sid)
    assert (call["provider"], call["dialect"], call["audio_mode"]) == (
        "local",
        "in-process",
        "g711_ulaw",
    )
    greeting, question_turn, answer = [t for t in call["turns"] if t["text"]][:3]
    assert greeting["interrupted"] and question_turn["text"] == "Where is my order 4417?"
    assert answer["text"] == "Order 4417 is shipped. It should arrive Friday."
    # The backend's memory of the greeting is exactly what the call log says was heard.
    [remembered] = [
        m["content"] for m in chat.calls[-1] if m["role"] == "assistant" and m["content"]
    ][:1]
    assert remembered == greeting["heard_text"]
    assert 0 < len(remembered) < len(greeting["text"])


class Broken:
    """Every service fails: one raises, one hangs, one raises."""

    async def transcribe(self, pcm16: bytes, rate_hz: int, prompt: str | None) -> str:
        raise RuntimeError("speech model crashed")

    async def stream(self, instructions: str, messages: list, tools: list):  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)  # hangs past the timeout
        yield None

    async def synthesize(self, text: str, voice: str) -> Speech:
        raise RuntimeError("voice crashed")


async def test_failing_providers_give_error_events_and_the_session_goes_on() -> None:
    broken = Broken()
    sent: list[dict[str, Any]] = []

    async def send(event: ServerEvent) -> None:
        text = encode_server_event(event, Dialect.GA, "event_1")
        if text is not None:
            validate(json.loads(text), "ga")
            sent.append(json.loads(text))

    def kinds() -> list[str]:
        return [e["type"] for e in sent]

    providers = Providers(broken, broken, broken)  # type: ignore[arg-type]
    local = LocalSession(providers, send, model="local", provider_timeout_s=0.2)
    await local.open()
    await local.receive(CreateResponse())
    await eventually(lambda: kinds()[-1] == "response.done", what="the response ending")
    assert "error" in kinds() and sent[-1]["response"]["status"] == "failed"
    # Speech the model could not transcribe: a failed transcription, and the call goes on.
    await local.receive(AppendAudio(tone(300, 0.5, 24000, dbfs=-12) + bytes(int(0.6 * 24000) * 2)))
    failed = "conversation.item.input_audio_transcription.failed"
    await eventually(lambda: failed in kinds(), what="the transcription failing")
    await local.receive(SessionUpdate(SessionConfig(instructions="Still here?")))
    assert sent[-1]["type"] == "session.updated"
    local.stop()


@pytest.mark.timeout(120)
async def test_bot_realtime_server_runs_the_backend_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re
    import sys

    from bot.localrt.offline import offline_available

    if offline_available() is not None:
        pytest.skip("the offline extra is not installed")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "realtime-server",
        "--port",
        "0",
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        url = ""
        while not url:
            line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            assert line, "realtime-server exited"
            if found := re.search(r"listening on (ws://127\.0\.0\.1:\d+)/v1/realtime", line):
                url = found.group(1)
        key = (tmp_path / "data" / "local-realtime-key").read_text().strip()
        client = AsyncOpenAI(api_key=key, websocket_base_url=url + "/v1")
        async with client.realtime.connect(model="local") as conn:
            await collect(conn, "ga", "session.created")
            answer = await ask(conn, "Hello there")
        transcript = [e for e in answer if e["type"] == "response.output_audio_transcript.done"][0]
        assert "demo agent" in transcript["transcript"]
        assert (
            sum(1 for e in answer if e["type"] == "response.output_audio.delta") > 5
        )  # Piper spoke
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_the_openai_sdk_opens_a_transcription_session_on_the_local_backend(
    base_settings: Settings, dialect: str
) -> None:
    """`?intent=transcription`: the session transcribes what it hears and never answers;
    every event is checked against the SDK's own models."""
    if dialect == "beta" and BetaEvent is None:
        pytest.skip("this openai SDK has no beta client")
    stt = FixedTranscript("Please send me the invoice.")
    providers = Providers(stt, DemoAgent(), ToneVoice())
    async with run_app(base_settings, local_providers=providers) as app:
        client = AsyncOpenAI(
            api_key=TEST_KEY, websocket_base_url=app.url.replace("http", "ws") + "/v1"
        )
        realtime = client.realtime if dialect == "ga" else client.beta.realtime
        intent = {"intent": "transcription"}
        async with realtime.connect(model="local", extra_query=intent) as conn:
            first = json.loads(await asyncio.wait_for(conn.recv_bytes(), 5))
            if dialect == "ga":
                validate(first, dialect)
                assert first["type"] == "session.created"
                assert first["session"]["type"] == "transcription"
            else:  # what the hosted beta sends; the SDK has no model of it
                assert first["type"] == "transcription_session.created"
            pcm_format = {"type": "audio/pcm", "rate": 24000}
            if dialect == "ga":
                await conn.session.update(
                    session={
                        "type": "transcription",
                        "audio": {
                            "input": {
                                "format": pcm_format,  # type: ignore[typeddict-item]
                                "transcription": {"model": "gpt-4o-transcribe"},
                                "turn_detection": {"type": "server_vad"},
                            }
                        },
                    }
                )
            else:
                await conn.transcription_session.update(
                    session={
                        "input_audio_format": "pcm16",
                        "input_audio_transcription": {"model": "gpt-4o-transcribe"},
                        "turn_detection": {"type": "server_vad"},
                    }
                )
            speech = bytes(24000) + tone(400, 1.0, 24000, dbfs=-12) + bytes(48000)
            for start in range(0, len(speech), 4800):
                chunk = base64.b64encode(speech[start : start + 4800]).decode()
                await conn.input_audio_buffer.append(audio=chunk)
            done = "conversation.item.input_audio_transcription.completed"
            events = await collect(conn, dialect, done)
    kinds = [event["type"] for event in events]
    assert "input_audio_buffer.committed" in kinds and "response.created" not in kinds
    assert events[-1]["transcript"] == "Please send me the invoice."
    assert stt.heard_ms and stt.heard_ms[0] > 1000

"""The local Realtime backend over real sockets: the official openai SDK as its client, and a
whole phone call through the bridge into it (STT and TTS faked until the offline models land)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import warnings

import numpy as np
import pytest
from openai import AsyncOpenAI

from bot.config import Settings
from bot.localrt.demo_agent import DemoAgent
from bot.localrt.providers import Providers
from bot.simulator import simulate
from tests.audio_tools import tone
from tests.conftest import LOCAL_SECRET, run_app, stored_call
from tests.realtime_types import ORDER_TOOL, BetaEvent, ask, collect, validate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


class FixedTranscript:
    def __init__(self, text: str) -> None:
        self.text = text
        self.heard_ms: list[int] = []

    async def transcribe(self, pcm16_24k: bytes) -> str:
        self.heard_ms.append(len(pcm16_24k) // 48)
        return self.text


class ToneVoice:
    """Speaks every word as 80 ms of a 500 Hz tone."""

    async def synthesize(self, text: str, voice: str) -> bytes:
        words = max(1, len(text.split()))
        t = np.arange(int(0.08 * words * 24000)) / 24000
        return (8000 * np.sin(2 * np.pi * 500 * t)).astype("<i2").tobytes()


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_the_openai_sdk_drives_the_local_backend(
    base_settings: Settings, dialect: str
) -> None:
    if dialect == "beta" and BetaEvent is None:
        pytest.skip("this openai SDK has no beta client")
    providers = Providers(FixedTranscript("unused"), DemoAgent(), ToneVoice())
    async with run_app(base_settings, local_providers=providers) as app:
        client = AsyncOpenAI(
            api_key="local", websocket_base_url=app.url.replace("http", "ws") + "/v1"
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


async def test_a_phone_call_through_the_bridge_into_the_local_backend(
    base_settings: Settings,
) -> None:
    """Caller speaks, the local backend transcribes, the demo agent calls the order tool
    through the bridge, and the answer comes back as speech the phone plays."""
    stt = FixedTranscript("Where is my order 4417?")
    providers = Providers(stt, DemoAgent(), ToneVoice())
    async with run_app(base_settings, local_providers=providers) as backend:
        settings = dataclasses.replace(
            base_settings,
            realtime_url=backend.url.replace("http", "ws") + "/v1/realtime",
            realtime_model="local-demo",
            bot_tools="bot.example_tools",
            transcription_model="local",
        )
        async with run_app(settings) as bridge:
            question = audioop.lin2ulaw(tone(300, 1.0, 8000, dbfs=-12), 2)
            result = await simulate(
                bridge.url, auth_token=LOCAL_SECRET, say=question, duration_s=3.5
            )
            await asyncio.sleep(0.4)
    # Speech from 0 (no room for the prefix padding) to 1 s, plus the 500 ms of silence
    # that ended the turn, as the hosted API commits it.
    assert stt.heard_ms and stt.heard_ms[0] == pytest.approx(1500, abs=40)
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


class Broken:
    """Every service fails: one raises, one hangs, one raises."""

    async def transcribe(self, pcm16_24k: bytes) -> str:
        raise RuntimeError("speech model crashed")

    async def stream(self, instructions: str, messages: list, tools: list):  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)  # hangs past the timeout
        yield None

    async def synthesize(self, text: str, voice: str) -> bytes:
        raise RuntimeError("voice crashed")


async def test_failing_providers_give_error_events_and_the_session_goes_on() -> None:
    from bot.localrt.server import serve_realtime

    broken = Broken()
    incoming: asyncio.Queue[str] = asyncio.Queue()
    sent: list[dict] = []

    async def send(text: str) -> None:
        event = json.loads(text)
        validate(event, "ga")
        sent.append(event)

    server = asyncio.create_task(
        serve_realtime(
            incoming.get,
            send,
            Providers(broken, broken, broken),  # type: ignore[arg-type]
            model="local",
            dialect="ga",
            provider_timeout_s=0.2,
        )
    )
    await incoming.put(json.dumps({"type": "response.create"}))
    await asyncio.sleep(0.5)
    kinds = [e["type"] for e in sent]
    assert "error" in kinds and kinds[-1] == "response.done"
    assert sent[-1]["response"]["status"] == "failed"
    # Speech the model could not transcribe: a failed transcription, and the call goes on.
    loud = tone(300, 0.5, 24000, dbfs=-12) + bytes(int(0.6 * 24000) * 2)
    await incoming.put(
        json.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": __import__("base64").b64encode(loud).decode(),
            }
        )
    )
    await asyncio.sleep(0.6)
    assert "conversation.item.input_audio_transcription.failed" in [e["type"] for e in sent]
    await incoming.put(
        json.dumps(
            {
                "type": "session.update",
                "session": {"type": "realtime", "instructions": "Still here?"},
            }
        )
    )
    await asyncio.sleep(0.1)
    assert sent[-1]["type"] == "session.updated"
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server


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
        client = AsyncOpenAI(api_key="unused", websocket_base_url=url + "/v1")
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

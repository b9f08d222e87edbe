"""Every call lands in the call log as it happens, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from twilio.request_validator import RequestValidator

from bot.core.codec import pcm16_to_ulaw
from bot.simulator import simulate
from bot.store.store import Store
from tests.audio_tools import dominant_hz, tone
from tests.conftest import LOCAL_SECRET, run_app, settings_from, stored_call
from tests.fake_realtime import FakeRealtime, pcm16_tone

ANSWER_WORDS = " ".join(f"word{i}" for i in range(1, 31))  # 30 words over 3 s


async def test_a_conversation_is_recorded_turn_by_turn(database_env: dict[str, str]) -> None:
    async with FakeRealtime(
        answer=pcm16_tone(1000, 1.0),
        answer_text="Your order ships today.",
        caller_texts=("I would like to check my order",),
        auto_respond=True,
    ) as fake:
        settings = settings_from(database_env, REALTIME_URL=fake.url, FORWARD_DTMF="false")
        async with run_app(settings) as app:
            question = pcm16_to_ulaw(tone(600, 1.0, 8000, dbfs=-10))
            result = await simulate(
                app.url,
                auth_token=LOCAL_SECRET,
                say=question,
                duration_s=3.5,
                dtmf=[(2.8, "5")],
                from_number="+15551230001",
                to_number="+15559870002",
            )
            await app.calls_done()
    call = await stored_call(settings, result.call_sid)
    assert call["direction"] == "inbound"
    assert (call["from_number"], call["to_number"]) == ("+15551230001", "+15559870002")
    assert call["started_at"] <= call["answered_at"] <= call["ended_at"]
    assert (call["ended_by"], call["end_reason"]) == ("caller", "caller hung up")
    assert call["stream_sid"] == result.stream_sid
    assert (call["provider"], call["model"]) == ("127.0.0.1", "gpt-realtime")
    assert (call["dialect"], call["audio_mode"]) == ("ga", "pcm16")
    assert (call["input_tokens"], call["output_tokens"], call["total_tokens"]) == (20, 37, 57)
    caller, bot = call["turns"]
    assert caller["speaker"] == "caller" and caller["text"] == "I would like to check my order"
    assert caller["started_ms"] < 200 and 900 <= caller["ended_ms"] <= 1200
    assert bot["speaker"] == "assistant" and bot["text"] == "Your order ships today."
    assert not bot["interrupted"] and bot["heard_text"] is None
    # From the end of the caller's speech (plus the 300 ms the VAD waits) to the first
    # acknowledged mark of the answer.
    assert 300 <= bot["latency_ms"] <= 1000
    assert bot["started_ms"] >= caller["ended_ms"]
    assert bot["ended_ms"] - bot["started_ms"] == pytest.approx(1000, abs=80)
    [dtmf] = [e for e in call["events"] if e["kind"] == "dtmf"]
    assert dtmf["detail"] == "5" and dtmf["at_ms"] == pytest.approx(2800, abs=60)


async def test_a_barge_in_is_recorded_with_the_heard_text_and_the_audio(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    async with FakeRealtime(
        answer=pcm16_tone(440, 3.0, dbfs=-12), answer_text=ANSWER_WORDS
    ) as fake:
        settings = settings_from(
            base_env,
            REALTIME_URL=fake.url,
            BOT_GREETING="Hi",
            RECORD_AUDIO="true",
            INTERRUPTIONS="instant",
        )
        async with run_app(settings) as app:
            result = await simulate(
                app.url,
                auth_token=LOCAL_SECRET,
                barge_in_at_s=1.0,
                barge_in=pcm16_to_ulaw(tone(2000, 1.0, 8000, dbfs=-6)),
                duration_s=2.5,
            )
            await app.calls_done()
    call = await stored_call(settings, result.call_sid)
    assert call["interruptions"] == 1
    [bot] = [t for t in call["turns"] if t["speaker"] == "assistant"]
    assert bot["interrupted"] and bot["text"] == ANSWER_WORDS
    heard_words = bot["heard_text"].split()
    assert ANSWER_WORDS.startswith(bot["heard_text"])
    assert len(heard_words) == pytest.approx(10, abs=2)  # about a third of 3 s was heard
    [cut] = [e for e in call["events"] if e["kind"] == "interruption"]
    assert cut["at_ms"] == pytest.approx(1050, abs=150)

    # The recording: caller left, what the caller heard right, on one timeline.
    path = Path(call["recording_path"])
    assert path.parent == settings.calllog.recordings_path
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = wav.readframes(wav.getnframes())
    stereo = np.frombuffer(frames, "<i2")
    left, right = stereo[0::2], stereo[1::2]
    assert len(left) / 8000 == pytest.approx(2.5, abs=0.1)

    def section(x: np.ndarray, start_s: float, end_s: float) -> bytes:
        return x[int(start_s * 8000) : int(end_s * 8000)].tobytes()

    assert dominant_hz(section(left, 1.1, 1.9), 8000) == pytest.approx(2000, abs=10)
    assert np.abs(left[: int(0.9 * 8000)]).max() < 100  # the caller was silent before
    assert dominant_hz(section(right, 0.1, 0.9), 8000) == pytest.approx(440, abs=10)
    assert np.abs(right[int(1.2 * 8000) :]).max() < 100  # flushed audio was never heard


async def test_twilio_status_callbacks_update_the_call(base_env: dict[str, str]) -> None:
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.3)
            url = app.url + "/twilio/status"
            params = {"CallSid": result.call_sid, "CallStatus": "completed", "CallDuration": "42"}
            async with aiohttp.ClientSession() as http:
                forged = {"X-Twilio-Signature": "bm9wZQ=="}
                async with http.post(
                    url, data={**params, "CallStatus": "failed"}, headers=forged
                ) as r:
                    assert r.status == 403
                signature = RequestValidator(LOCAL_SECRET).compute_signature(url, params)
                async with http.post(
                    url, data=params, headers={"X-Twilio-Signature": signature}
                ) as r:
                    assert r.status == 204
            await app.calls_done()
    call = await stored_call(settings, result.call_sid)
    assert (call["twilio_status"], call["twilio_duration_s"]) == ("completed", 42)


async def test_several_instances_share_one_postgresql_log(
    base_env: dict[str, str], postgres_url: str
) -> None:
    """Two instances start together (one migrates, the other waits) and log to one place."""
    import contextlib

    async with FakeRealtime(answer=pcm16_tone(800, 0.3), vad_threshold_rms=1e9) as fake:
        settings = settings_from(
            base_env, REALTIME_URL=fake.url, DATABASE_URL=postgres_url, BOT_GREETING="Hi"
        )
        async with contextlib.AsyncExitStack() as stack:
            first, second = await asyncio.gather(
                stack.enter_async_context(run_app(settings)),
                stack.enter_async_context(run_app(settings)),
            )
            calls = await asyncio.gather(
                simulate(first.url, auth_token=LOCAL_SECRET, duration_s=0.8),
                simulate(second.url, auth_token=LOCAL_SECRET, duration_s=0.8),
            )
            await first.calls_done()
            await second.calls_done()
    store = await Store.open(settings.calllog.database)
    try:
        for result in calls:
            call = await store.calls.get_call(result.call_sid)
            assert call is not None and call["ended_by"] == "caller"
            assert call["status"] == "ended"  # no status callback: derived from the end
    finally:
        await store.close()

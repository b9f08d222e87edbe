"""Bad input and broken peers: the call ends politely or carries on; other calls never notice."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
import websockets

from bot.app import call_services
from bot.call.loop import serve_stream
from bot.core import twilio
from bot.core.codec import pcm16_to_ulaw
from bot.core.tokens import issue_stream_token
from bot.core.twilio import TwilioEvent, TwilioMessage
from bot.simulator import simulate
from tests.audio_tools import dominant_hz, tone
from tests.conftest import LOCAL_SECRET, TEST_KEY, eventually, run_app, settings_from, stored_call
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.twilio_client import (
    fetch_twiml,
    media_frame,
    new_call_sid,
    start_frame,
    stream_parameters,
)

SILENCE = b"\xff" * 160


async def test_malformed_frames_are_skipped_and_other_calls_keep_streaming(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with FakeRealtime(answer=pcm16_tone(1000, 1.5), vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            healthy = asyncio.create_task(
                simulate(
                    app.url,
                    auth_token=LOCAL_SECRET,
                    say=pcm16_to_ulaw(tone(600, 2.0, 8000)),
                    duration_s=2.5,
                )
            )
            call = new_call_sid()
            _, twiml = await fetch_twiml(app.url, LOCAL_SECRET, call)
            stream_url, params = stream_parameters(twiml)
            garbage: list[str | bytes] = [
                "this is not json",
                b"\x00\x01binary",
                '{"event":"media","media":{"payload":"!!!not base64!!!"}}',
                '{"event":"media","media":{"payload":"' + "A" * 100_000 + '"}}',
                '{"event":"surprise","data":1}',
                '{"event":"mark"}',
                "[1, 2, 3]",
                "[" * 50_000,  # deeper than the JSON parser recurses (found by fuzzing)
            ]
            async with websockets.connect(stream_url, max_size=None, max_queue=None) as ws:
                await ws.send(start_frame(call, params))
                valid = 0
                for _ in range(3):
                    for frame in garbage:
                        await ws.send(frame)
                        await ws.send(media_frame(SILENCE, valid))
                        valid += 1

                def all_valid_frames_appended() -> bool:
                    return any(len(c.input_audio) == valid * 960 for c in fake.connections)

                await eventually(all_valid_frames_appended, what="every valid frame appended")
                await ws.send('{"event":"stop"}')
            result = await healthy
    garbled_call = next(
        c
        for c in fake.connections
        if c.of_type("input_audio_buffer.append") and len(c.input_audio) == valid * 960
    )
    assert garbled_call.frames_in == valid == 24
    # The healthy call was untouched: its tone went through and its answer came back.
    healthy_conn = next(c for c in fake.connections if c is not garbled_call)
    assert dominant_hz(healthy_conn.input_pcm16()[: 24000 * 2], 24000) == pytest.approx(600, abs=5)
    assert result.bytes_received == 12000
    # Each kind of malformed frame is logged once, with the call's sids.
    warnings_ = [r.getMessage() for r in caplog.records if "skipped malformed" in r.getMessage()]
    assert len(warnings_) == 7  # the unknown event is ignored silently
    assert all(call in message for message in warnings_)
    summary = [
        r.getMessage()
        for r in caplog.records
        if call in r.getMessage() and "call ended" in r.getMessage()
    ]
    assert len(summary) == 1 and "3 x" in summary[0]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ws://127.0.0.1:{port}/v1/realtime", "refused"),
        ("ws://realtime.does-not-exist.invalid/v1/realtime", "does not resolve"),
    ],
)
async def test_realtime_unreachable_at_start_closes_the_stream_for_the_fallback(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture, url: str, why: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    settings = settings_from(base_env, REALTIME_URL=url.format(port=dead_port))
    async with run_app(settings) as app:
        started = time.monotonic()
        result = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=10)
        elapsed = time.monotonic() - started
    assert result.close_code == 1000  # Twilio then plays the <Say> fallback and hangs up
    assert elapsed < 2
    assert result.bytes_received == 0
    assert "Realtime unavailable" in caplog.text and why in caplog.text


async def test_realtime_rejecting_the_key_is_logged_without_the_key(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeRealtime(reject_status=401) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=10)
    assert result.close_code == 1000 and result.duration_s < 2
    assert "HTTP 401 (check the API key)" in caplog.text
    assert TEST_KEY not in caplog.text and LOCAL_SECRET not in caplog.text


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        (None, 1011, "closed with code 1011"),
        (
            {"type": "invalid_request_error", "code": "session_expired", "message": "60 min"},
            1001,
            "session_expired",
        ),
    ],
)
async def test_with_reconnects_off_realtime_dropping_mid_call_ends_the_stream(
    base_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    error: dict[str, object] | None,
    code: int,
    expected: str,
) -> None:
    caplog.set_level(logging.INFO)
    async with FakeRealtime(close_after_s=0.5, close_code=code, error_before_close=error) as fake:
        # With reconnects off; tests/integration/test_continuity.py has them on.
        settings = settings_from(base_env, REALTIME_URL=fake.url, REALTIME_RECONNECT_S="0")
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=10)
    assert result.close_code == 1000
    assert 0.4 < result.duration_s < 1.5
    assert expected in caplog.text


async def test_caller_hanging_up_closes_the_realtime_socket_within_a_second(
    base_env: dict[str, str],
) -> None:
    async with FakeRealtime(answer=pcm16_tone(700, 5.0), vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            # A polite hang-up (stop, then close) in the middle of the bot's answer...
            await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=1.0)
            hung_up = time.monotonic()
            polite = fake.connections[0]
            await eventually(
                lambda: polite.closed_at is not None, 1.0, "the Realtime socket closing"
            )
            assert polite.closed_at is not None and polite.closed_at - hung_up < 1.0
            # ...and a phone line that just drops (TCP reset, no stop, no close frame).
            call = new_call_sid()
            _, twiml = await fetch_twiml(app.url, LOCAL_SECRET, call)
            stream_url, params = stream_parameters(twiml)
            ws = await websockets.connect(stream_url)
            await ws.send(start_frame(call, params))
            for index in range(10):
                await ws.send(media_frame(SILENCE, index))
            await eventually(lambda: len(fake.connections) == 2, what="the second call connecting")
            abrupt = fake.connections[1]
            await eventually(lambda: len(abrupt.input_audio) == 10 * 960, what="its audio arriving")
            assert ws.transport is not None
            ws.transport.abort()
            dropped = time.monotonic()
            await eventually(
                lambda: abrupt.closed_at is not None, 1.0, "the Realtime socket closing"
            )
            assert abrupt.closed_at is not None and abrupt.closed_at - dropped < 1.0
            await eventually(lambda: not app.registry.calls, what="the call unregistering")
            assert len(app.registry.calls) == 0


async def test_a_second_stream_with_the_same_token_is_refused_and_the_call_goes_on(
    base_env: dict[str, str],
) -> None:
    """Issue 9, finding 4: a token used to work for its whole lifetime and kicked the live
    stream off the call."""
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            call = new_call_sid()
            _, twiml = await fetch_twiml(app.url, LOCAL_SECRET, call)
            stream_url, params = stream_parameters(twiml)
            async with websockets.connect(stream_url) as first:
                await first.send(start_frame(call, params))
                await first.send(media_frame(SILENCE))
                await eventually(lambda: call in app.registry.calls, what="the first stream")
                async with websockets.connect(stream_url) as second:
                    await second.send(start_frame(call, params))
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(second.recv(), 2)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                # A replayed webhook gets no new token: the call had its stream.
                status, replayed = await fetch_twiml(app.url, LOCAL_SECRET, call)
                assert status == 200 and "<Stream" not in replayed and "<Hangup/>" in replayed
                await first.send(media_frame(SILENCE, 1))
                await eventually(
                    lambda: fake.connections[0].frames_in == 2,
                    what="the first stream's audio still arriving",
                )
                assert len(fake.connections) == 1 and fake.connections[0].closed_at is None
                assert list(app.registry.calls) == [call]


class _ExplodingChannel:
    """A Twilio side that fails in a way no parser anticipates."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.closed_with: int | None = None

    async def receive(self) -> TwilioEvent:
        if not self.frames:
            raise RuntimeError("boom")
        event = twilio.decode(self.frames.pop(0))
        assert event is not None
        return event

    async def send(self, message: TwilioMessage) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = code


async def test_an_internal_error_ends_only_that_call_politely(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            call = new_call_sid()
            token = issue_stream_token(LOCAL_SECRET, call, time.time(), 60, {})
            channel = _ExplodingChannel([start_frame(call, {"token": token}), media_frame(SILENCE)])
            await serve_stream(channel, call_services(app.app))
            assert not app.registry.calls
    row = await stored_call(settings, call)
    assert row["ended_by"] == "bridge"
    assert "internal error" in row["end_reason"]
    assert channel.closed_with == 1000  # Twilio plays the fallback
    assert "bridge failure" in caplog.text and "RuntimeError" in caplog.text
    assert fake.connections[0].closed_at is not None

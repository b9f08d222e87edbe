"""Hostile and broken input against the real server: each finding of issue 9, reproduced.

Every test here failed on the code before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import wave
from pathlib import Path

import aiohttp
import pytest
import websockets
from twilio.request_validator import RequestValidator

from bot import server
from bot.call.core.prompt import say_request
from bot.call.core.session import MAX_CLOCK_STEP_MS
from bot.config import Settings
from bot.core.codec import Pcm16Transcoder
from bot.simulator import simulate
from tests.conftest import (
    LOCAL_SECRET,
    TEST_KEY,
    RunningApp,
    ended_call,
    eventually,
    run_app,
    settings_from,
    stored_call,
)
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.fake_twilio import FakeTwilio
from tests.hostile import (
    MB,
    call_form,
    form_body,
    huge_form,
    huge_frame,
    raw_text_frame,
    rss_bytes,
    signed_stream,
)
from tests.processes import bot_server, clean_env
from tests.twilio_client import (
    fetch_twiml,
    media_at,
    media_frame,
    new_call_sid,
    start_frame,
    stream_parameters,
)

HOSTED = {"REALTIME_URL": "ws://127.0.0.1:9/v1/realtime", "REALTIME_API_KEY": TEST_KEY}


async def test_huge_websocket_frames_cost_no_memory(tmp_path: Path) -> None:
    env = clean_env(tmp_path, PORT="0", **HOSTED)
    async with bot_server(env, tmp_path) as (process, url, _):
        media = url.replace("http", "ws") + "/twilio/media"
        before = rss_bytes(process.pid, peak=True)
        await huge_frame(media, 256 * MB)
        await asyncio.gather(*(huge_frame(media, 16 * MB) for _ in range(80)))
        grown = rss_bytes(process.pid, peak=True) - before
    assert grown < 64 * MB, f"RSS grew by {grown // MB} MB"


async def _worst_pause(url: str, during: asyncio.Task[object]) -> float:
    """The longest `/healthz` takes while `during` runs: how long the event loop froze."""
    worst = 0.0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/healthz"):
            pass  # the first request warms the connection and the app's lazy parts
        while not during.done():
            started = loop.time()
            async with http.get(url + "/healthz") as response:
                assert response.status == 200
            worst = max(worst, loop.time() - started)
            await asyncio.sleep(0.02)
    return worst


@pytest.mark.parametrize("signature", [None, "x" * 28, "Zm9yZ2VkLXNpZ25hdHVyZS0wMDA="])
async def test_a_huge_unsigned_form_never_blocks_the_loop(
    tmp_path: Path, signature: str | None
) -> None:
    """1.5 million fields, 15 MB: refused before the body is read, the loop never waits."""
    env = clean_env(tmp_path, PORT="0", **HOSTED)
    body = form_body()
    async with bot_server(env, tmp_path) as (_, url, _):
        attack = asyncio.create_task(huge_form(url + "/twilio/voice", body, signature))
        worst = await _worst_pause(url, attack)
        answered_after = await attack
    assert answered_after < 1.0, f"answered after {answered_after:.1f} s"
    assert worst < 0.1, f"/healthz waited {worst:.2f} s"


async def test_the_local_realtime_backend_needs_its_key_and_no_proxy(tmp_path: Path) -> None:
    """Finding 5: `/v1/realtime` trusted "the peer is loopback", which every stranger is
    behind a tunnel or a reverse proxy on the same machine."""
    async with bot_server(clean_env(tmp_path, PORT="0"), tmp_path) as (_, url, _):
        realtime = url.replace("http", "ws") + "/v1/realtime?model=local"
        key = (tmp_path / "data" / "local-realtime-key").read_text().strip()
        refusals = [
            ({}, 401),  # a stranger through a tunnel, which adds no header
            ({"Authorization": "Bearer not-the-key"}, 401),
            ({"Authorization": f"Bearer {key}é"}, 401),
            ({"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.9"}, 403),
            ({"Authorization": f"Bearer {key}", "Forwarded": "for=203.0.113.9"}, 403),
            ({"api-key": key, "CF-Connecting-IP": "203.0.113.9"}, 403),
        ]
        for headers, status in refusals:
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(realtime, additional_headers=headers)
            assert refused.value.response.status_code == status, headers
        for headers, subprotocols in (
            ({"Authorization": f"Bearer {key}"}, None),
            ({"api-key": key}, None),
            ({}, ["realtime", f"openai-insecure-api-key.{key}"]),
        ):
            async with websockets.connect(
                realtime, additional_headers=headers, subprotocols=subprotocols
            ) as ws:
                created = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert created["type"] == "session.created"


# ---- finding 8: the smaller faults, and the caps -------------------------------------------

SILENCE = b"\xff" * 160


async def _open_stream(
    app: RunningApp, form: dict[str, str] | None = None
) -> tuple[str, websockets.ClientConnection]:
    call = new_call_sid()
    status, twiml = await fetch_twiml(app.url, LOCAL_SECRET, call, form=form)
    assert status == 200, twiml
    stream_url, params = stream_parameters(twiml)
    ws = await websockets.connect(stream_url)
    await ws.send(start_frame(call, params))
    return call, ws


def _bot_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("bot")
    ]


async def test_a_caller_who_drops_the_line_is_not_a_bridge_failure(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """An abrupt disconnect was logged as ERROR "bridge failure" and counted as
    `outcome=bridge`."""
    caplog.set_level(logging.INFO)
    answer = pcm16_tone(700, 5.0)
    async with FakeRealtime(answer=answer, vad_threshold_rms=1e9, delta_ms=20, speed=1) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            call, ws = await _open_stream(app)
            for index in range(5):
                await ws.send(media_frame(SILENCE, index))
            for _ in range(3):  # the answer is streaming to the phone
                assert '"event":"m' in str(await asyncio.wait_for(ws.recv(), 5))  # media, mark
            ws.transport.abort()  # no close frame: a TCP reset, mid-answer
            await eventually(lambda: not app.registry.calls, what="the call ending")
            await app.calls_done()
            async with aiohttp.ClientSession() as http:
                async with http.get(app.url + "/metrics") as response:
                    metrics = await response.text()
    row = await stored_call(settings, call)
    assert (row["ended_by"], row["end_reason"]) == ("caller", "media socket closed")
    assert "bridge failure" not in caplog.text and _bot_errors(caplog) == []
    assert 'bot_calls_total{outcome="caller"} 1.0' in metrics
    assert 'outcome="bridge"' not in metrics
    assert fake.connections[0].closed_at is not None


async def test_odd_placeholders_in_the_instructions_are_left_as_written(
    base_env: dict[str, str],
) -> None:
    """`{name.first}` raised AttributeError and the caller heard the fallback."""
    template = "Hello {name.first}, {name[0]}, {0}, {} and {name}. {unknown} {{kept}}"
    async with FakeRealtime(answer=pcm16_tone(700, 0.5), vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, BOT_GREETING="Hi")
        async with run_app(settings) as app:
            result = await simulate(
                app.url,
                auth_token=LOCAL_SECRET,
                duration_s=1.5,
                webhook_query={"instructions": template, "var_name": "Ann"},
            )
    updates = fake.connections[0].of_type("session.update")
    told = [u["session"]["instructions"] for u in updates]  # type: ignore[index]
    assert told[-1] == (
        "Hello {name.first}, {name[0]}, {0}, {} and Ann. {unknown} {{kept}}"
        "\n\nAbout this call: name: Ann."
    )
    assert result.bytes_played > 0 and result.close_code == 1000
    row = await stored_call(settings, result.call_sid)
    assert row["ended_by"] == "caller"


async def test_the_media_socket_takes_fragments_pings_and_junk_frames_in_its_stride(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """What a WebSocket allows but Twilio never sends, on the server's own media socket: a
    message in three fragments, a ping, a binary frame (whole and fragmented) and a text
    frame that is not UTF-8.
    The audio gets through, the junk is skipped with a line each, and the call goes on."""
    caplog.set_level(logging.INFO)
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            call, ws = await _open_stream(app)
            frame = media_frame(SILENCE, 0)
            await ws.send([frame[:40], frame[40:100], frame[100:]])
            await asyncio.wait_for(await ws.ping(b"still there?"), 2)
            await ws.send(b"\x00\x01 binary")
            await ws.send([b"\x00\x01 binary, ", b"in two fragments"])
            await ws.send(b"\xff\xfe not UTF-8", text=True)
            await ws.send(media_frame(SILENCE, 1))
            await eventually(lambda: fake.connections[0].frames_in == 2, what="both frames")
            await ws.close()
            await app.calls_done()
    warnings = [r.getMessage() for r in caplog.records if "skipped malformed" in r.getMessage()]
    assert any("binary" in w for w in warnings) and any("UTF-8" in w for w in warnings)
    summary = [r.getMessage() for r in caplog.records if "call ended" in r.getMessage()]
    assert any("2 x twilio: binary frame" in line for line in summary)  # fragmented, too
    row = await stored_call(settings, call)
    assert row["ended_by"] == "caller"


async def test_a_burst_of_frames_is_read_in_full_and_in_order(base_env: dict[str, str]) -> None:
    """Thousands of frames at once: past 64 unread the media socket stops being read, and is
    read again as the call catches up; nothing is lost on the way."""
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            call, ws = await _open_stream(app)
            frames = [bytes([index % 128]) * 160 for index in range(3000)]
            for index, ulaw in enumerate(frames):
                await ws.send(media_frame(ulaw, index))
            await eventually(
                lambda: fake.connections[0].frames_in == len(frames), 10, "every frame"
            )
            await ws.close()
            await app.calls_done()
    # The resampler's output does not depend on the chunking: only the order can change it.
    assert bytes(fake.connections[0].input_audio) == Pcm16Transcoder().to_model(b"".join(frames))


async def test_a_phone_that_stops_reading_is_dropped_not_buffered(
    base_env: dict[str, str],
) -> None:
    """The model streams 20 minutes of audio in seconds to a phone that reads nothing: once
    1 MiB waits unsent (past the kernel's buffers), the call ends, and the log says why."""
    answer = b"\x7f" * (8000 * 1200)
    async with FakeRealtime(answer=answer, speed=2000.0, vad_threshold_rms=1e9) as fake:
        settings = settings_from(
            base_env, REALTIME_URL=fake.url, REALTIME_AUDIO="g711_ulaw", BOT_GREETING="Hi"
        )
        async with run_app(settings) as app:
            call = new_call_sid()
            status, twiml = await fetch_twiml(app.url, LOCAL_SECRET, call)
            assert status == 200, twiml
            stream_url, params = stream_parameters(twiml)
            # max_queue=1: the client stops reading its socket after one unread message.
            ws = await websockets.connect(stream_url, max_queue=1, max_size=None)
            await ws.send(start_frame(call, params))
            await eventually(lambda: call in app.registry.calls, what="the call starting")
            await eventually(lambda: call not in app.registry.calls, 30, "the call ending")
            ws.transport.abort()
    row = await stored_call(settings, call)
    assert row["ended_by"] == "caller", row
    assert "stopped reading" in str(row["end_reason"]), row


async def test_malformed_frames_of_one_kind_log_one_line(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Each distinct size of oversized frame wrote its own warning line."""
    caplog.set_level(logging.INFO)
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            call, ws = await _open_stream(app)
            await ws.send(media_frame(SILENCE))
            for extra in range(40):
                await ws.send('{"event":"media","pad":"' + "x" * (70_000 + extra) + '"}')
                await ws.send("{not json" + " " * extra)
                await ws.send(f'{{"event":"invented-{extra}"}}')
            await ws.send(media_frame(SILENCE, 1))
            await eventually(
                lambda: fake.connections[0].frames_in == 2,
                what="the valid frames passing",
            )
            await ws.close()
            await app.calls_done()
    warnings = [r.getMessage() for r in caplog.records if "skipped malformed" in r.getMessage()]
    assert len(warnings) <= 3, warnings
    assert sum("oversized" in w for w in warnings) == 1
    row = await stored_call(settings, call)
    assert row["ended_by"] == "caller"


async def test_a_stream_that_goes_quiet_is_ended(base_env: dict[str, str]) -> None:
    """A stream that said nothing after `start` stayed open forever."""
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, STREAM_IDLE_SECONDS="1")
        async with run_app(settings) as app:
            call, ws = await _open_stream(app)
            started = asyncio.get_running_loop().time()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            waited = asyncio.get_running_loop().time() - started
            await app.calls_done()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert 1.0 <= waited < 2.5
    row = await stored_call(settings, call)
    assert (row["ended_by"], row["end_reason"]) == ("bridge", "no audio from Twilio for 1 s")
    assert fake.connections[0].closed_at is not None


async def test_past_max_calls_a_caller_hears_the_busy_message(base_env: dict[str, str]) -> None:
    """There was no cap on concurrent calls."""
    busy = "All lines are busy & please call back."
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url, MAX_CALLS="2", BUSY_MESSAGE=busy)
        async with run_app(settings) as app:
            first, first_ws = await _open_stream(app)
            # A ringing call (webhook answered, stream not yet open) holds its place too.
            ringing = new_call_sid()
            status, twiml = await fetch_twiml(app.url, LOCAL_SECRET, ringing)
            assert status == 200 and "<Stream" in twiml
            refused = new_call_sid()
            status, twiml = await fetch_twiml(app.url, LOCAL_SECRET, refused)
            assert status == 200
            assert twiml == (
                "<Response><Say>All lines are busy &amp; please call back.</Say>"
                "<Hangup/></Response>"
            )
            assert len(fake.connections) <= 2  # no Realtime session for the busy caller
            await first_ws.close()
            await eventually(lambda: first not in app.registry.calls, what="the first call")
            app.registry.end_all_calls("test over")  # the ringing call never streams
            await app.calls_done()
            status, twiml = await fetch_twiml(app.url, LOCAL_SECRET, new_call_sid())
            assert status == 200 and "<Stream" in twiml  # a free line again
            async with aiohttp.ClientSession() as http:
                async with http.get(app.url + "/metrics") as response:
                    metrics = await response.text()
    row = await stored_call(settings, refused)
    assert (row["ended_by"], row["end_reason"]) == ("busy", "MAX_CALLS reached")
    assert 'bot_calls_total{outcome="busy"} 1.0' in metrics


async def test_a_call_at_its_time_limit_hears_goodbye(base_env: dict[str, str]) -> None:
    """There was no maximum call duration. The bot says the goodbye, then hangs up."""
    account, token = "AC" + "7" * 32, "twilio-token-for-limits-000"
    async with (
        FakeTwilio(account, token) as fake_twilio,
        FakeRealtime(vad_threshold_rms=1e9, answer=pcm16_tone(500, 0.6)) as fake,
    ):
        settings = settings_from(
            base_env,
            REALTIME_URL=fake.url,
            TWILIO_ACCOUNT_SID=account,
            TWILIO_AUTH_TOKEN=token,
            TWILIO_API_URL=fake_twilio.url,
            PUBLIC_URL="http://127.0.0.1:0",
            MAX_CALL_S="2",
            TIME_LIMIT_MESSAGE="Time is up, goodbye.",
        )
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=token, account_sid=account, duration_s=8)
            await app.calls_done()
    [create] = fake.connections[0].of_type("response.create")
    assert create["response"] == {"instructions": say_request("Time is up, goodbye.")}
    assert result.bytes_played >= 0.6 * 8000 - 160  # the goodbye played...
    [hang_up] = fake_twilio.of("POST", f"/Calls/{result.call_sid}.json")
    assert hang_up.form == {"Status": ["completed"]}  # ...then the call was completed
    assert 2.5 <= result.duration_s < 4.5  # the bridge ended its side, too
    row = await stored_call(settings, result.call_sid)
    assert (row["ended_by"], row["end_reason"]) == (
        "bot",
        "hung up: the call reached its time limit",
    )


@pytest.mark.parametrize("duration", ["²", "٣", "9" * 5000, "-4", "99999999999"])
async def test_odd_call_durations_on_the_status_callback_are_ignored(
    base_env: dict[str, str], duration: str
) -> None:
    """`CallDuration="²"` answered 500."""
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            result = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.3)
            url = app.url + "/twilio/status"
            params = {
                "CallSid": result.call_sid,
                "CallStatus": "completed",
                "CallDuration": duration,
            }
            signature = RequestValidator(LOCAL_SECRET).compute_signature(url, params)
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    url, data=params, headers={"X-Twilio-Signature": signature}
                ) as response:
                    assert response.status == 204
            await app.calls_done()
    row = await stored_call(settings, result.call_sid)
    assert (row["twilio_status"], row["twilio_duration_s"]) == ("completed", None)


async def test_timestamp_leaps_cost_a_recording_no_memory(tmp_path: Path) -> None:
    """Finding 7: a timestamp 30 minutes on allocated a 57.6 MB WAV of silence at once, and
    memory followed the leap (10^9 ms would have needed about 16 GB)."""
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        env = clean_env(tmp_path, PORT="0", REALTIME_URL=fake.url, RECORD_AUDIO="true")
        env["REALTIME_API_KEY"] = TEST_KEY
        async with bot_server(env, tmp_path) as (process, url, _):
            secret = (tmp_path / "data" / "local-secret").read_text().strip()
            await signed_stream(url, secret, call_form(), [])  # warms the call path up
            before = rss_bytes(process.pid, peak=True)
            form = call_form()
            frames = [media_at(b"\x55" * 160, stamp) for stamp in (20, 1_800_000, 10**9, 10**20)]
            await signed_stream(url, secret, form, frames)
            row = await ended_call(Settings.from_env(env), form["CallSid"])
            grown = rss_bytes(process.pid, peak=True) - before
    assert grown < 16 * MB, f"RSS grew by {grown // MB} MB"
    with wave.open(row["recording_path"]) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert seconds <= 4 * MAX_CLOCK_STEP_MS / 1000 + 1  # each frame moves the clock ≤ 2 s


async def test_a_request_head_is_bounded_in_size_and_time(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httptools buffered a header line without limit: 200 MB of header cost 400 MB. And a
    slow head (a slow-loris) held its socket forever."""
    monkeypatch.setattr(server, "REQUEST_HEAD_TIMEOUT_S", 1.0)
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            port = int(app.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 140_000)
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 431 ")
            writer.close()
            # Sent on and on, the header is cut short: the server stops reading it.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent < 64 * MB:
                    writer.write(bytes(MB))
                    await asyncio.wait_for(writer.drain(), 5)
                    sent += MB
            assert sent < 16 * MB  # refused after 128 KiB (plus the sockets' buffers)
            writer.close()
            # A media stream outlives the head timeout: it is not a slow request.
            call, ws = await _open_stream(app)
            slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(b"GET /healthz HTTP/1.1\r\nHo")
            for index in range(100):  # 2 s
                await ws.send(media_frame(SILENCE, index))
                await asyncio.sleep(0.02)
            assert await asyncio.wait_for(slow_reader.read(), 1) == b""  # closed by the server
            slow.close()
            await ws.send(media_frame(SILENCE, 100))
            await ws.send(media_frame(SILENCE, 101))  # a whole append of two frames
            await eventually(
                lambda: fake.connections[0].frames_in == 102,
                what="the stream's frames",
            )
            await ws.close()
    row = await stored_call(settings, call)
    assert row["ended_by"] == "caller"


async def test_strangers_on_the_media_socket_cannot_flood_the_log(
    base_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every socket with junk before its start wrote its own warning, and uvicorn logged an
    ERROR with a traceback for each text frame that was not UTF-8."""
    caplog.set_level(logging.INFO)
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(base_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            media = app.url.replace("http", "ws") + "/twilio/media"

            async def stranger(n: int) -> None:
                await raw_text_frame(media, b"\xff\xfe not UTF-8 " + bytes([0x80 + n]))
                await raw_text_frame(media, b'{"event": "media", "pad": "' + b"x" * n + b"}")
                async with websockets.connect(media) as ws:
                    await ws.send(start_frame(new_call_sid(), {"token": f"{n}.{'a' * 43}"}))
                    with pytest.raises(websockets.ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 5)

            await asyncio.gather(*(stranger(n) for n in range(20)))
    assert not fake.connections  # no stranger got a Realtime session
    lines = [r for r in caplog.records if r.name.startswith(("bot", "uvicorn.error"))]
    noisy = [r.getMessage() for r in lines if r.levelno >= logging.WARNING]
    assert len(noisy) <= 6, noisy  # one line a minute per kind, not one per socket
    assert not [r for r in lines if r.exc_info], "no tracebacks for strangers' input"

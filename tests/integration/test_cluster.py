"""Two instances sharing PostgreSQL behind a real Caddy: a call's webhook, stream, callbacks
and operator actions land on different instances and the call still works; the global cap
holds; a crashed instance's calls are ended in the log by the other one."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from bot.config import Settings
from bot.simulator import simulate
from tests.conftest import ended_call, eventually
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.fake_twilio import FakeTwilio
from tests.processes import bot_server, clean_env, run_bot

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")

ACCOUNT = "AC" + "7" * 32
TOKEN = "twilio-token-for-the-cluster-000"
PASSWORD = "review-password-cluster"
BUSY = "All lines are busy in the cluster test."

# Streams go to instance B; everything else (webhooks, callbacks, the API) to instance A.
CADDYFILE = """
{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    handle /twilio/media* {{
        reverse_proxy 127.0.0.1:{b}
    }}
    handle {{
        reverse_proxy 127.0.0.1:{a}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def call_sid(n: int) -> str:
    return "CA" + f"{n:032x}"


async def signed_post(base: str, path: str, form: dict[str, str]) -> tuple[int, str]:
    url = base + path
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=form, headers={"X-Twilio-Signature": signature}) as response,
    ):
        return response.status, await response.text()


@pytest.mark.timeout(150)
async def test_two_instances_behind_caddy_behave_as_one(tmp_path: Path, postgres_url: str) -> None:
    front_port = free_port()
    front = f"http://127.0.0.1:{front_port}"
    async with (
        FakeRealtime(answer=pcm16_tone(500, 0.5), vad_threshold_rms=1e9) as fake,
        FakeTwilio(ACCOUNT, TOKEN) as twilio,
    ):
        env = {
            "DATABASE_URL": postgres_url,
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM_NUMBER": "+15550009999",
            "TWILIO_API_URL": twilio.url,
            "PUBLIC_URL": front,
            "HOST": "127.0.0.1",
            "PORT": "0",
            "REALTIME_URL": fake.url,
            "REALTIME_API_KEY": "sk-test-cluster",
            "REVIEW_PASSWORD": PASSWORD,
            "MAX_CALLS_TOTAL": "2",
            "BUSY_MESSAGE": BUSY,
            "BOT_GREETING": "Hello from the cluster",
            "LOG_LEVEL": "INFO",
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        env_a = clean_env(tmp_path / "a", **env)
        env_b = clean_env(tmp_path / "b", **env)
        async with (
            bot_server(env_a, tmp_path / "a") as (_, url_a, _lines_a),
            bot_server(env_b, tmp_path / "b") as (process_b, url_b, lines_b),
        ):
            port_a, port_b = (int(u.rsplit(":", 1)[1]) for u in (url_a, url_b))
            caddyfile = tmp_path / "Caddyfile"
            caddyfile.write_text(CADDYFILE.format(port=front_port, a=port_a, b=port_b))
            caddy = await asyncio.create_subprocess_exec(
                "caddy",
                "run",
                "--config",
                str(caddyfile),
                "--adapter",
                "caddyfile",
                env={
                    **os.environ,
                    "XDG_DATA_HOME": str(tmp_path),
                    "XDG_CONFIG_HOME": str(tmp_path),
                },
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                settings = Settings.from_env({"DATABASE_URL": postgres_url})
                await _wait_for(front)
                await _one_call_across_both(fake, twilio, front, settings, env_a, tmp_path)
                await _cap_and_crash(fake, front, url_a, process_b, settings)
            finally:
                caddy.terminate()
                await caddy.wait()
            log_b = "".join(lines_b)
    assert "Traceback" not in log_b


async def _wait_for(front: str) -> None:
    """Caddy is up when it proxies A's health."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(front + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("caddy did not start")


async def _one_call_across_both(
    fake: FakeRealtime,
    twilio: FakeTwilio,
    front: str,
    settings: Settings,
    env: dict[str, str],
    cwd: Path,
) -> None:
    """Webhook on A, stream on B; A's pre-opened Realtime socket is closed within 1 s; the
    AMD verdict and the status callback go to A and reach the call on B; a hang-up asked
    of A's API ends it on B."""
    sid = call_sid(1)
    phone = asyncio.create_task(
        simulate(
            front,
            auth_token=TOKEN,
            call_sid=sid,
            account_sid=ACCOUNT,
            webhook_query={"amd": "1"},
            duration_s=20,
        )
    )
    await eventually(lambda: len(fake.connections) >= 2, 10, "the stream's own session on B")
    prewarmed, streaming = fake.connections[0], fake.connections[1]
    await eventually(lambda: prewarmed.closed_at is not None, 2, "A's unclaimed session closing")
    assert prewarmed.closed_at is not None
    # B claims the call (and A hears of it) before B opens its own session.
    assert abs(prewarmed.closed_at - streaming.opened_at) < 1.0
    print(
        f"A's unclaimed session closed {streaming.opened_at - prewarmed.closed_at:.3f} s "
        "before B's own session opened"
    )
    # Waiting for a person: no greeting yet. The verdict reaches A.
    await asyncio.sleep(0.3)
    assert not streaming.of_type("response.create")
    status, _ = await signed_post(
        front, "/twilio/amd", {"CallSid": sid, "AccountSid": ACCOUNT, "AnsweredBy": "human"}
    )
    assert status == 204
    await eventually(lambda: streaming.of_type("response.create"), 5, "the greeting on B")
    status, _ = await signed_post(
        front,
        "/twilio/status",
        {"CallSid": sid, "AccountSid": ACCOUNT, "CallStatus": "in-progress"},
    )
    assert status == 204
    # "Say this" from the CLI, through A's API, spoken on B.
    code, out, err = await run_bot("calls", "say", sid, "Your table is ready", env=env, cwd=cwd)
    assert code == 0, err
    assert "sent to the instance serving it" in out

    def said() -> bool:
        return any(
            "Your table is ready" in str(event.get("response"))
            for event in streaming.of_type("response.create")
        )

    await eventually(said, 5, "the operator's words asked of the model on B")
    # A hang-up asked of A, which does not hold the call.
    auth = {"Authorization": "Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode()}
    async with (
        aiohttp.ClientSession() as http,
        http.post(front + f"/api/calls/{sid}/hangup", json={}, headers=auth) as response,
    ):
        assert response.status == 202, await response.text()
        assert (await response.json())["delivered"] == "sent"
    asked = time.monotonic()
    result = await asyncio.wait_for(phone, 10)
    assert time.monotonic() - asked < 3
    assert result.close_code == 1000
    [hang_up] = twilio.of("POST", f"/Calls/{sid}.json")
    assert hang_up.one("Status") == "completed"
    row = await ended_call(settings, sid)
    assert row["ended_by"] == "bot" and "asked through the API" in row["end_reason"]
    assert row["answered_by"] == "human" and row["twilio_status"] == "in-progress"


async def _cap_and_crash(
    fake: FakeRealtime,
    front: str,
    url_a: str,
    process_b: asyncio.subprocess.Process,
    settings: Settings,
) -> None:
    """Two calls live (the cap): the third caller hears the busy message. Then B is killed
    with SIGKILL: its call is ended in the log within the heartbeat window; A's goes on."""
    on_b, on_a = call_sid(2), call_sid(3)
    # A call that rings and is never answered holds a slot only until Twilio says so...
    before_ringing = len(fake.connections)
    form = {"CallSid": call_sid(5), "AccountSid": ACCOUNT, "From": "+15550100001", "To": "+1"}
    status, twiml = await signed_post(front, "/twilio/voice", form)
    assert status == 200 and "<Connect>" in twiml
    await eventually(lambda: len(fake.connections) > before_ringing, 5, "A's pre-opened session")
    ringing = fake.connections[before_ringing]
    status, _ = await signed_post(
        front, "/twilio/status", {**form, "CallStatus": "no-answer", "CallDuration": "0"}
    )
    assert status == 204
    # ...and the session opened for it at its webhook is closed then, not 30 s later.
    await eventually(lambda: ringing.closed_at is not None, 2, "the unclaimed session closing")
    before = len(fake.connections)
    phone_b = asyncio.create_task(
        simulate(front, auth_token=TOKEN, call_sid=on_b, account_sid=ACCOUNT, duration_s=30)
    )
    stream_a = url_a.replace("http", "ws", 1) + "/twilio/media"
    phone_a = asyncio.create_task(
        simulate(
            front,
            auth_token=TOKEN,
            call_sid=on_a,
            account_sid=ACCOUNT,
            duration_s=16,
            stream_url=stream_a,
        )
    )

    def streaming() -> int:
        return sum(1 for c in fake.connections[before:] if c.appended_at and c.closed_at is None)

    await eventually(lambda: streaming() == 2, 10, "two calls streaming")
    status, twiml = await signed_post(
        front,
        "/twilio/voice",
        {"CallSid": call_sid(4), "AccountSid": ACCOUNT, "From": "+15550100001", "To": "+1555"},
    )
    assert status == 200 and BUSY in twiml and "<Connect>" not in twiml
    process_b.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    row = await ended_call(settings, on_b, timeout_s=15)
    swept_after = time.monotonic() - killed
    assert row["ended_by"] == "bridge" and "heartbeat" in row["end_reason"]
    assert swept_after < 10  # heartbeats every 2 s; lost after 6 s of silence
    result_b = await asyncio.wait_for(phone_b, 5)
    assert result_b.call_sid == on_b
    print(f"B's call ended in the log {swept_after:.1f} s after kill -9")
    # A's call was untouched: it ran to its end, hung up by the caller.
    result_a = await asyncio.wait_for(phone_a, 20)
    assert result_a.frames_sent == 16 * 50
    row_a = await ended_call(settings, on_a)
    assert row_a["ended_by"] == "caller"
    # Time to first audio: the webhook on A, the stream on B (its own session) or on A (the
    # session A opened at the webhook).
    assert result_a.first_audio_s is not None and result_b.first_audio_s is not None
    print(
        f"first audio: stream on the other instance {result_b.first_audio_s * 1000:.0f} ms, "
        f"on the same instance {result_a.first_audio_s * 1000:.0f} ms"
    )


@pytest.mark.timeout(90)
async def test_workers_share_one_port_and_their_calls(tmp_path: Path, postgres_url: str) -> None:
    """`bot serve --workers 2` with PostgreSQL: calls work whichever worker gets the webhook
    and the stream, and SIGTERM stops every worker."""
    async with FakeRealtime(answer=pcm16_tone(500, 0.3), vad_threshold_rms=1e9) as fake:
        env = clean_env(
            tmp_path,
            DATABASE_URL=postgres_url,
            PORT="0",
            REALTIME_URL=fake.url,
            REALTIME_API_KEY="sk-test-workers",
            BOT_GREETING="Hi",
            LOG_LEVEL="INFO",
            WORKERS="2",
        )
        async with bot_server(env, tmp_path) as (process, url, lines):
            await eventually(
                lambda: "".join(lines).count("joined the cluster") == 2, 20, "both workers up"
            )
            secret = (tmp_path / "data" / "local-secret").read_text().strip()
            results = await asyncio.gather(
                *(simulate(url, auth_token=secret, duration_s=1.5) for _ in range(6))
            )
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
            log = "".join(lines)
    assert process.returncode == 0
    assert all(r.bytes_received > 0 and r.marks_acked == r.marks_received for r in results)
    assert len(fake.connections) >= 6  # a stream on the other worker opened its own session
    assert log.count("stopped after") == 2 and "Traceback" not in log


async def test_workers_that_cannot_start_stop_the_server(tmp_path: Path, postgres_url: str) -> None:
    """A worker that fails at start (here a tools module that does not import) is not
    started again and again: every worker stops and `bot serve` exits with an error."""
    env = clean_env(
        tmp_path,
        DATABASE_URL=postgres_url,
        PORT="0",
        REALTIME_URL="ws://127.0.0.1:9/v1/realtime",
        REALTIME_API_KEY="sk-test-workers",
        BOT_TOOLS="no_such_module_anywhere",
        WORKERS="2",
    )
    code, _, err = await run_bot("serve", env=env, cwd=tmp_path)
    assert code == 1
    assert "failed at start" in err and "no_such_module_anywhere" in err

"""A deploy that drops no call: two instances share PostgreSQL behind Caddy (the deployment's
own deploy/Caddyfile), with a fake Twilio REST API. SIGTERM to the instance holding a call
moves the call to the other one: Twilio is asked to run a new `<Connect><Stream>`, the
phone follows it as Twilio would, and the conversation goes on with its earlier turns."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import websockets
from twilio.request_validator import RequestValidator

from bot.config import Settings
from bot.core import twilio
from bot.core.codec import pcm16_to_ulaw
from tests.audio_tools import tone
from tests.conftest import ended_call, eventually
from tests.fake_realtime import FakeConnection, FakeRealtime, Scripted, pcm16_tone
from tests.fake_twilio import FakeTwilio
from tests.integration.test_cluster import free_port
from tests.processes import bot_server, clean_env

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is not installed")

ACCOUNT = "AC" + "6" * 32
TOKEN = "twilio-token-for-the-handover-0"
CALL_SID = "CA" + "6" * 32
DEPLOY_CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "Caddyfile"
QUIET = b"\xff" * 160


def speech(seconds: float) -> bytes:
    return pcm16_to_ulaw(tone(440, seconds, 8000))


@dataclass
class MovingPhone:
    """Twilio's side of one call, which follows call updates to a new stream the way
    Twilio does: `stop` on the old stream, then the new TwiML's stream from the start."""

    front: str
    script: bytes  # what the caller says, 20 ms a frame, in real time
    streams: list[str] = field(default_factory=list)  # stream sids, in order
    heard: list[tuple[float, int, int]] = field(default_factory=list)  # (at, stream, bytes)
    moved_at: float | None = None
    _ws: websockets.ClientConnection | None = None
    _frame_in_stream = 0
    _sequence = 0

    async def call(self) -> None:
        url = self.front + "/twilio/voice"
        form = {
            "CallSid": CALL_SID,
            "AccountSid": ACCOUNT,
            "From": "+15550100001",
            "To": "+15550100002",
            "Direction": "inbound",
            "CallStatus": "ringing",
        }
        signature = RequestValidator(TOKEN).compute_signature(url, form)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=form, headers={"X-Twilio-Signature": signature}) as r:
                assert r.status == 200
                twiml = await r.text()
        await self._connect(twiml)
        started = time.monotonic()
        for index in range(len(self.script) // 160):
            await asyncio.sleep(max(0.0, started + index * 0.02 - time.monotonic()))
            frame = self.script[index * 160 : index * 160 + 160]
            await self._send(twilio.phone_media(self.streams[-1], frame, self._frame_in_stream))
            self._frame_in_stream += 1
        await self._send(twilio.phone_stop(self.streams[-1], CALL_SID, ACCOUNT, self._next()))
        assert self._ws is not None
        await self._ws.close()

    def follow(self, twiml: str) -> None:
        """Twilio runs a call update: the current stream stops, the new one starts."""
        self.moved_at = time.monotonic()
        asyncio.get_running_loop().create_task(self._move(twiml))

    async def _move(self, twiml: str) -> None:
        old = self._ws
        assert old is not None
        await self._send(twilio.phone_stop(self.streams[-1], CALL_SID, ACCOUNT, self._next()))
        await old.close()
        await self._connect(twiml)

    async def _connect(self, twiml: str) -> None:
        stream = ET.fromstring(twiml).find("./Connect/Stream")
        assert stream is not None
        parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        sid = "MZ" + secrets.token_hex(16)
        ws = await websockets.connect(stream.attrib["url"], compression=None)
        self._ws, self._frame_in_stream = ws, 0
        self.streams.append(sid)
        await self._send(twilio.phone_connected())
        await self._send(twilio.phone_start(sid, CALL_SID, ACCOUNT, parameters, self._next()))
        asyncio.get_running_loop().create_task(self._receive(ws, len(self.streams) - 1))

    async def _receive(self, ws: websockets.ClientConnection, stream: int) -> None:
        try:
            async for raw in ws:
                message = twilio.decode_outbound(raw)
                if isinstance(message, twilio.OutboundMedia):
                    self.heard.append((time.monotonic(), stream, len(message.ulaw)))
                elif isinstance(message, twilio.OutboundMark):  # played at once
                    sid = self.streams[stream]
                    await ws.send(twilio.phone_mark(sid, message.name, self._next()))
        except websockets.ConnectionClosed:
            pass

    async def _send(self, frame: str) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(frame)
        except websockets.ConnectionClosed:
            pass  # moving: the frame is lost, as on Twilio

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence


async def _holder(postgres_url: str) -> int:
    """The pid of the instance whose stream has the call."""
    connection = await asyncpg.connect(postgres_url)
    try:
        instance = await connection.fetchval(
            "SELECT instance_id FROM live_calls WHERE call_sid = $1", CALL_SID
        )
    finally:
        await connection.close()
    return int(str(instance).split("-")[-2])


def seeded(conn: FakeConnection) -> list[tuple[str, str]]:
    shown = []
    for event in conn.of_type("conversation.item.create"):
        item = event["item"]
        [part] = item["content"]
        shown.append((str(item["role"]), str(part["text"])))
    return shown


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mid_answer", [False, True], ids=["at a turn boundary", "mid-answer"])
async def test_sigterm_moves_a_live_call_to_the_other_instance(
    tmp_path: Path, postgres_url: str, mid_answer: bool
) -> None:
    """At a turn boundary; or, with an answer still being given past HANDOVER_WAIT_S, cut
    at what was heard."""
    front_port = free_port()
    front = f"http://127.0.0.1:{front_port}"
    tail = QUIET * (350 if mid_answer else 150)  # the second answer plays out
    phone = MovingPhone(front, QUIET * 75 + speech(0.8) + QUIET * 200 + speech(0.8) + tail)
    fake = FakeRealtime(
        answer=pcm16_tone(500, 4.0 if mid_answer else 1.0),
        answer_text="It ships today.",
        auto_respond=True,
        caller_texts=("Where is my order?", "When does it arrive?"),
        script=[Scripted(pcm16_tone(600, 0.5), "Hello, how can I help?")],
    )
    async with fake, FakeTwilio(ACCOUNT, TOKEN, on_twiml=lambda _, t: phone.follow(t)) as rest:
        env = {
            "DATABASE_URL": postgres_url,
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_API_URL": rest.url,
            "PUBLIC_URL": front,
            "HOST": "127.0.0.1",
            "PORT": "0",
            "REALTIME_URL": fake.url,
            "REALTIME_API_KEY": "sk-test-handover",
            "BOT_GREETING": "Hello",
            "SHUTDOWN_GRACE_SECONDS": "20",
            "HANDOVER_WAIT_S": "0.3",
        }
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        async with (
            bot_server(clean_env(tmp_path / "a", **env), tmp_path / "a") as (proc_a, url_a, log_a),
            bot_server(clean_env(tmp_path / "b", **env), tmp_path / "b") as (proc_b, url_b, log_b),
        ):
            instances = " ".join(u.removeprefix("http://") for u in (url_a, url_b))
            caddy = await asyncio.create_subprocess_exec(
                "caddy",
                "run",
                "--config",
                str(DEPLOY_CADDYFILE),
                "--adapter",
                "caddyfile",
                env={
                    **os.environ,
                    "BOT_SITE": front,
                    "BOT_INSTANCES": instances,
                    "XDG_DATA_HOME": str(tmp_path),
                    "XDG_CONFIG_HOME": str(tmp_path),
                },
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await _wait_for(front)
                call = asyncio.create_task(phone.call())
                # The greeting, a question and its answer: then the deploy.
                kind = "response.created" if mid_answer else "response.done"
                await eventually(
                    lambda: (
                        fake.connections and sum(c.sent.count(kind) for c in fake.connections) >= 2
                    ),
                    15,
                    "the first answer",
                )
                await asyncio.sleep(0.3 if mid_answer else 1.2)
                holder = await _holder(postgres_url)
                stopping, staying = (proc_a, proc_b) if proc_a.pid == holder else (proc_b, proc_a)
                stopping.send_signal(signal.SIGTERM)
                await asyncio.wait_for(call, 30)
                await asyncio.wait_for(stopping.wait(), 25)
                assert stopping.returncode == 0
                settings = Settings.from_env({"DATABASE_URL": postgres_url})
                try:
                    row = await ended_call(settings, CALL_SID, 10)
                except AssertionError:
                    print("".join(log_a), "".join(log_b))  # shown when the test fails
                    raise
            finally:
                caddy.terminate()
                await caddy.wait()
            logs = "".join(log_a) + "".join(log_b)
    assert "Traceback" not in logs
    # The REST API was asked to run a new stream through the public front.
    [update] = [r for r in rest.requests if r.method == "POST" and "Twiml" in r.form]
    stream = ET.fromstring(update.one("Twiml")).find("./Connect/Stream")
    assert (
        stream is not None and stream.attrib["url"] == f"ws://127.0.0.1:{front_port}/twilio/media"
    )
    names = {p.attrib["name"] for p in stream.findall("Parameter")}
    assert {"handover", "token", "from", "to"} <= names and "greeting" not in names
    # The new stream landed on the instance that stayed, which seeded a new session.
    assert len(phone.streams) == 2
    resumed = [c for c in fake.connections if c.of_type("conversation.item.create")]
    assert len(resumed) == 1
    new = resumed[0]
    assert seeded(new) == [
        ("assistant", "Hello, how can I help?"),
        ("user", "Where is my order?"),
        ("assistant", "It ships today."),
    ]
    # Nobody greets again: the bridge asks only for answers to the caller's turns.
    creates = new.of_type("response.create")
    assert all(not create["response"].get("instructions") for create in creates)  # type: ignore[union-attr]
    assert len(creates) <= new.sent.count("input_audio_buffer.committed")
    # The conversation went on: the second question was answered on the new stream.
    assert "response.output_audio.delta" in new.sent
    assert any(stream_index == 1 for _, stream_index, _ in phone.heard), "no answer heard"
    seeded_at = [
        at
        for event, at in zip(new.events, new.received_at, strict=True)
        if event["type"] == "conversation.item.create"
    ][-1]
    gap = seeded_at - update.at
    print(f"handover: the new session was seeded {gap * 1000:.0f} ms after Twilio was asked")
    assert gap < 1.5
    assert row["ended_by"] == "caller"
    handovers = [e for e in row["events"] if e["kind"] == "handover"]
    assert [e["data"]["direction"] for e in handovers] == ["out", "in"]
    assert handovers[0]["data"]["forced"] is mid_answer
    assert json.dumps(row["turns"]).count("It ships today.") == 2


async def _wait_for(front: str) -> None:
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

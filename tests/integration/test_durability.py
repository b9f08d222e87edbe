"""The call log survives what production throws at it: kill -9, a database outage."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.config import load_local_secret
from bot.core.codec import pcm16_to_ulaw
from bot.simulator import simulate
from bot.store.store import Store
from tests.audio_tools import tone
from tests.conftest import LOCAL_SECRET, TEST_KEY, eventually, run_app, settings_from
from tests.fake_realtime import FakeRealtime, pcm16_tone
from tests.processes import bot_server, clean_env

SILENCE_8K = b"\0\0" * 8


def two_turn_backend() -> FakeRealtime:
    """A Realtime server that answers each of the caller's two questions in turn."""
    return FakeRealtime(
        answer=pcm16_tone(1000, 1.0),
        answer_text="Here is my answer.",
        caller_texts=("First question?", "Second question?"),
        auto_respond=True,
    )


def two_questions() -> bytes:
    """Speech 0–1.0 s and 2.6–3.4 s; the fake VAD closes each turn after 300 ms of quiet."""
    pcm = (
        tone(600, 1.0, 8000, dbfs=-10)
        + SILENCE_8K * int(1.6 * 1000)
        + tone(700, 0.8, 8000, dbfs=-10)
    )
    return pcm16_to_ulaw(pcm)


async def test_sigkill_mid_call_keeps_the_transcript_up_to_a_second_before(
    tmp_path: Path,
) -> None:
    async with two_turn_backend() as fake:
        env = clean_env(tmp_path, PORT="0", REALTIME_URL=fake.url, REALTIME_API_KEY=TEST_KEY)
        async with bot_server(env, tmp_path) as (process, url, lines):
            token = load_local_secret(tmp_path / "data", create=False)
            call = asyncio.create_task(
                simulate(url, auth_token=token, say=two_questions(), duration_s=20)
            )
            await eventually(
                lambda: (
                    bool(fake.connections) and fake.connections[0].sent.count("response.done") == 2
                ),
                10,
                "the second answer being played to its end",
            )
            await asyncio.sleep(1.0)  # the promise under test: at most the last second is lost
            process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            result = await asyncio.wait_for(call, 10)
            assert await process.wait() == -signal.SIGKILL
    assert result.close_code is not None and result.duration_s < 7.5
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'calls.db'}")
    try:
        saved = await store.calls.get_call(result.call_sid)
    finally:
        await store.close()
    assert killed
    assert saved is not None
    assert saved["ended_at"] is None  # nobody got to write the end: the process was killed
    said = [(t["speaker"], t["text"]) for t in saved["turns"]]
    assert said == [
        ("caller", "First question?"),
        ("assistant", "Here is my answer."),
        ("caller", "Second question?"),
        ("assistant", "Here is my answer."),
    ]
    assert all(t["ended_ms"] is not None for t in saved["turns"])
    assert saved["turns"][-1]["ended_ms"] < 5500
    assert saved["total_tokens"] == 2 * 57


class FlakyProxy:
    """A TCP proxy on loopback in front of PostgreSQL that can be cut and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._pipes |= {writer, upstream_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self._pipes:
            writer.transport.abort()
        self._pipes.clear()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FlakyProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self.cut()
            self._server.close()


async def test_a_database_outage_mid_call_loses_nothing(
    base_env: dict[str, str], postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pg_port = int(postgres_url.split("@127.0.0.1:", 1)[1].split("/", 1)[0])
    async with FlakyProxy(pg_port).running() as proxy:
        url = postgres_url.replace(f"127.0.0.1:{pg_port}", f"127.0.0.1:{proxy.port}")
        async with two_turn_backend() as fake:
            settings = settings_from(base_env, REALTIME_URL=fake.url, DATABASE_URL=url)
            async with run_app(settings) as app:
                call = asyncio.create_task(
                    simulate(app.url, auth_token=LOCAL_SECRET, say=two_questions(), duration_s=6)
                )
                await eventually(lambda: bool(app.registry.calls), what="the call starting")
                proxy.cut()  # the database goes away for three seconds, mid-conversation
                await asyncio.sleep(3.0)
                proxy.up = True
                result = await call
                assert result.bytes_received == 2 * 8000  # the caller noticed nothing
                await eventually(
                    lambda: "call log: database writes recovered" in caplog.text,
                    what="the call log writing again",
                )
                await app.calls_done()
    assert "call log: database write failed" in caplog.text
    direct = settings_from(base_env, DATABASE_URL=postgres_url)
    store = await Store.open(direct.calllog.database)
    try:
        saved = await store.calls.get_call(result.call_sid)
    finally:
        await store.close()
    assert saved is not None and saved["ended_by"] == "caller"
    assert [t["text"] for t in saved["turns"]] == [
        "First question?",
        "Here is my answer.",
        "Second question?",
        "Here is my answer.",
    ]

"""Issue 9, finding 3: one bad record must not stop the call log for every call. Against
real SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from sqlalchemy import text

from bot.calllog.writer import CallLog
from bot.simulator import simulate
from bot.store.calls import LogBatch
from bot.store.store import Store
from tests.conftest import LOCAL_SECRET, eventually, run_app, settings_from, stored_call
from tests.fake_realtime import FakeRealtime
from tests.twilio_client import (
    fetch_twiml,
    media_at,
    new_call_sid,
    start_frame,
    stream_parameters,
)

QUIET = b"\xff" * 160


async def _hostile_call(
    app: Any, stamps: tuple[int | str, ...], form: dict[str, str] | None = None
) -> str:
    """A call whose frames carry these media timestamps, then a DTMF."""
    call_sid = new_call_sid()
    status, twiml = await fetch_twiml(app.url, LOCAL_SECRET, call_sid, form=form)
    assert status == 200
    stream_url, params = stream_parameters(twiml)
    async with websockets.connect(stream_url) as ws:
        await ws.send(start_frame(call_sid, params))
        for stamp in stamps:
            await ws.send(media_at(QUIET, stamp))
        await ws.send('{"event":"dtmf","streamSid":"MZ' + "0" * 32 + '","dtmf":{"digit":"7"}}')
        await eventually(lambda: call_sid in app.registry.calls, what="the call")
        await asyncio.sleep(0.6)  # two flushes of the writer
    await app.calls_done()
    return call_sid


async def _log_still_works(app: Any) -> tuple[str, str]:
    """A well-behaved call afterwards: its SID, and the metrics page."""
    later = await simulate(app.url, auth_token=LOCAL_SECRET, duration_s=0.5, fast=True)
    await app.calls_done()
    for _ in range(50):  # the call log catching up, or not
        row = await stored_call_or_none(app.settings, later.call_sid)
        if row is not None and row["ended_by"] is not None:
            break
        await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as http:
        async with http.get(app.url + "/metrics") as response:
            return later.call_sid, await response.text()


async def test_hostile_timestamps_never_stop_the_call_log(database_env: dict[str, str]) -> None:
    """A timestamp of 10^20 then a DTMF raised OverflowError on SQLite and the writer died;
    one past 2^31 raised DataError on PostgreSQL and the batch was retried forever. No later
    call was logged, on either."""
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(database_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            hostile = await _hostile_call(app, (0, 10**20, 2**31 + 5, -(10**30), "1e400"))
            later, metrics = await _log_still_works(app)
    assert (await stored_call(settings, later))["ended_by"] == "caller"
    row = await stored_call(settings, hostile)
    assert row["ended_at"] is not None
    [digit] = [e for e in row["events"] if e["kind"] == "dtmf"]
    assert digit["detail"] == "7" and 0 <= digit["at_ms"] <= 2**31 - 1
    assert 'bot_call_log_quarantined_total{kind="event"} 0.0' in metrics


async def test_a_hostile_caller_number_is_cleaned_for_twiml_and_the_log(
    database_env: dict[str, str],
) -> None:
    """A `From` with a NUL made the TwiML unreadable (and PostgreSQL refuses NULs)."""
    async with FakeRealtime(vad_threshold_rms=1e9) as fake:
        settings = settings_from(database_env, REALTIME_URL=fake.url)
        async with run_app(settings) as app:
            odd = {"From": "+1555\0\n" + "9" * 100, "To": "\x01" * 80}
            hostile = await _hostile_call(app, (0, 20, 40), form=odd)
            later, _ = await _log_still_works(app)
    row = await stored_call(settings, hostile)
    assert row["from_number"] == "+1555 " + "9" * 58  # cut to the column
    assert row["to_number"] is None and row["ended_at"] is not None
    assert (await stored_call(settings, later))["ended_by"] == "caller"


async def stored_call_or_none(settings: Any, call_sid: str) -> dict[str, Any] | None:
    store = await Store.open(settings.calllog.database)
    try:
        return await store.calls.get_call(call_sid)
    finally:
        await store.close()


async def _poison_trigger(store: Store) -> None:
    """The database itself refuses one value: a real refusal, not a mock."""
    async with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON call_events "
                    "WHEN NEW.detail = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END"
                )
            )
        else:
            await conn.execute(
                text("ALTER TABLE call_events ADD CONSTRAINT poison CHECK (detail <> 'poison')")
            )


async def test_a_record_the_database_refuses_is_quarantined_alone(
    database_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(database_settings.calllog.database)
    try:
        await _poison_trigger(store)
        call_log = CallLog(store.calls, flush_interval_s=0.05)
        call_log.start()
        sid = "CA" + "1" * 32
        call_log.call(sid, direction="inbound")
        call_log.event(sid, 10, "note", "before")
        call_log.event(sid, 20, "note", "poison")
        call_log.event(sid, 30, "note", "after")
        await eventually(lambda: call_log.quarantined["event"] == 1, what="the quarantine")
        call_log.event(sid, 40, "note", "later")  # the writer goes on
        await eventually(lambda: call_log.pending == 0, what="the later record written")
        await call_log.stop()
        saved = await store.calls.get_call(sid)
    finally:
        await store.close()
    assert saved is not None
    assert [e["detail"] for e in saved["events"]] == ["before", "after", "later"]
    assert "refused a event record (IntegrityError)" in caplog.text
    assert "poison" not in caplog.text.replace("refused", "")  # values are not logged


async def test_an_outage_keeps_a_bounded_queue_and_counts_what_it_drops(tmp_path: Path) -> None:
    """`_requeue` trimmed only events: calls and turns grew without bound."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await store.close()
    (tmp_path / "calls.db").unlink()
    (tmp_path / "calls.db").mkdir()  # the database file is now a folder: every write fails
    call_log = CallLog(store.calls, max_pending=1000)
    try:
        for n in range(3000):
            call_log.call(f"CA{n:032d}", direction="inbound")
            call_log.increment(f"CA{n:032d}", errors=1)
            if n % 300 == 0:
                await call_log.flush()
    finally:
        # The failed flushes opened connections again: closed here, not by a later test's
        # garbage collection in a thread whose event loop is gone. A connection that timed
        # out while opening still has its thread: it must finish while this loop runs.
        await store.close()
        await _aiosqlite_threads_done()
    assert call_log.pending <= 1000
    assert call_log.dropped["increment"] > 0 and call_log.dropped["call"] > 0
    assert sum(call_log.dropped.values()) + call_log.pending == 6000


async def test_the_writer_survives_its_own_bugs(tmp_path: Path) -> None:
    """An OverflowError used to end the writer task silently: nothing was logged again."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    try:
        call_log = CallLog(store.calls, flush_interval_s=0.02)
        real_write = store.calls.write
        bugs = [RuntimeError("a bug"), OverflowError("another")]

        async def write(batch: LogBatch) -> None:
            if bugs:
                raise bugs.pop()
            await real_write(batch)

        async def one_by_one(batch: LogBatch) -> None:
            raise AssertionError("a bug while looking into the first")

        store.calls.write = write  # type: ignore[method-assign]
        call_log._write_one_by_one = one_by_one  # type: ignore[method-assign]
        call_log.start()
        call_log.call("CA" + "1" * 32, direction="inbound")
        await eventually(lambda: call_log.writer_errors == 1, what="a failed flush")
        call_log.call("CA" + "2" * 32, direction="inbound")
        await eventually(lambda: call_log.writer_errors == 2, what="another failed flush")
        call_log.call("CA" + "3" * 32, direction="inbound")
        await eventually(lambda: call_log.pending == 0, what="the next record written")
        await call_log.stop()
        assert await store.calls.get_call("CA" + "3" * 32) is not None
    finally:
        await store.close()


async def _aiosqlite_threads_done(timeout_s: float = 5.0) -> None:
    """Until no aiosqlite worker thread is left to call back into this event loop."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = [
            t
            for t in threading.enumerate()
            if "_connection_worker_thread" in t.name and t.is_alive()
        ]
        if not workers:
            return
        await asyncio.sleep(0.05)

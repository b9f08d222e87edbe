"""The call log writer: records gathered from every call are flushed in one transaction
every 250 ms, so a crash loses at most the last moment of a call.

A database outage never touches the calls: records wait in memory (up to a bound) and are
written when the database is back; the outage and the recovery are logged once each.
A record the database refuses while it is up costs only itself: the batch is retried one
record at a time and the refused one is quarantined (logged, counted, dropped). Nothing
stops the writer: a write that hangs times out, and an unexpected error is logged and
the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any, Final

from bot.call.core.messages import TurnRecord
from bot.log import ThrottledLog
from bot.store.calls import CallRecords, LogBatch
from bot.store.schema import utcnow

__all__ = ["CallLog"]

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S: Final = 0.25
MAX_PENDING: Final = 50_000  # records kept through an outage; then the oldest go
WRITE_TIMEOUT_S: Final = 30.0  # a database that neither answers nor fails is down
PING_TIMEOUT_S: Final = 5.0


class CallLog:
    def __init__(
        self,
        records: CallRecords,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_pending: int = MAX_PENDING,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.records = records
        self._batch = LogBatch()
        self._interval = flush_interval_s
        self._max_pending = max_pending
        self._write_timeout_s = write_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._failing = False
        self._refusals = ThrottledLog(logger)
        self.quarantined: Counter[str] = Counter()  # records the database refused, by kind
        self.dropped: Counter[str] = Counter()  # records dropped past the bound, by kind
        self.writer_errors = 0  # unexpected errors the writer survived

    # ---- recording facts (never blocks, never raises) -------------------------------------

    def call(self, call_sid: str, **fields: Any) -> None:
        self._batch.calls.append((call_sid, fields))
        self._bound()

    def increment(self, call_sid: str, **counts: int) -> None:
        counts = {name: n for name, n in counts.items() if n > 0}
        if counts:
            self._batch.increments.append((call_sid, counts))
            self._bound()

    def turn(self, call_sid: str, record: TurnRecord) -> None:
        self._batch.turns.append(
            {
                "call_sid": call_sid,
                "item_id": record.item_id,
                "speaker": record.speaker,
                "started_ms": record.started_ms,
                "ended_ms": record.ended_ms,
                "text": record.text,
                "heard_text": record.heard_text,
                "interrupted": record.interrupted,
                "latency_ms": record.latency_ms,
            }
        )
        self._bound()

    def event(
        self, call_sid: str, at_ms: int | None, kind: str, detail: str, data: Any = None
    ) -> None:
        self._batch.events.append(
            {
                "call_sid": call_sid,
                "at_ms": at_ms,
                "kind": kind,
                "detail": detail,
                "data": data,
                "created_at": utcnow(),
            }
        )
        self._bound()

    @property
    def pending(self) -> int:
        """Records not yet written, the batch being written included."""
        return len(self._batch) + self._in_flight

    def _bound(self) -> None:
        if len(self._batch) > self._max_pending:
            # Trim to 90 % so that a full queue is not trimmed on every record.
            dropped = self._batch.trim(self._max_pending * 9 // 10)
            self.dropped.update(dropped)
            logger.error(
                "call log: %d records waiting, the oldest dropped: %s",
                self._max_pending,
                ", ".join(f"{n} {kind}" for kind, n in dropped.items()),
            )

    # ---- writing --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call log writer")

    async def stop(self) -> None:
        """Finish the write under way, then write what is left. Cancelling a write could
        repeat it: the database may have committed it before the cancellation arrived."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self._write_timeout_s + PING_TIMEOUT_S)
            except TimeoutError:
                pass  # wait_for cancelled it
        await self.flush()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            try:
                await self.flush()
            except Exception:  # a bug must not end the call log for every call
                self.writer_errors += 1
                logger.exception("call log: the writer failed; it carries on")

    async def flush(self) -> None:
        batch, self._batch = self._batch, LogBatch()
        if not len(batch):
            return
        self._in_flight = len(batch)
        try:
            await self._flush(batch)
        finally:
            self._in_flight = 0

    async def _flush(self, batch: LogBatch) -> None:
        try:
            await self._write(batch)
        except asyncio.CancelledError:
            self._requeue(batch)  # stopping mid-write: the final flush writes it
            raise
        except Exception as exc:
            if not await self._reachable():
                self._outage(exc, batch)
                return
            await self._write_one_by_one(batch)
        if self._failing:
            logger.warning("call log: database writes recovered")
            self._failing = False

    async def _write(self, batch: LogBatch) -> None:
        await asyncio.wait_for(self.records.write(batch), self._write_timeout_s)

    async def _reachable(self) -> bool:
        try:
            await asyncio.wait_for(self.records.ping(), PING_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    async def _write_one_by_one(self, batch: LogBatch) -> None:
        """The database is up but refused the batch: find the records it refuses."""
        singles = batch.singles()
        for index, single in enumerate(singles):
            try:
                await self._write(single)
            except asyncio.CancelledError:
                self._requeue(_joined(singles[index:]))
                raise
            except Exception as exc:
                if not await self._reachable():
                    self._outage(exc, _joined(singles[index:]))
                    return
                self._quarantine(single, exc)

    def _quarantine(self, single: LogBatch, exc: Exception) -> None:
        kind, call_sid = _describe(single)
        self.quarantined[kind] += 1
        # The error's type only: its message can quote the refused values.
        self._refusals.note(
            f"call log: the database refused a {kind} record ({type(exc).__name__}); "
            f"it is dropped, the rest of the call is kept (call {call_sid})",
            key=f"{kind} {type(exc).__name__}",
        )

    def _outage(self, exc: Exception, batch: LogBatch) -> None:
        if not self._failing:
            logger.error(
                "call log: database write failed (%s); keeping records and retrying",
                type(exc).__name__,
            )
        self._failing = True
        self._requeue(batch)

    def _requeue(self, failed: LogBatch) -> None:
        newer, self._batch = self._batch, failed
        self._batch.extend(newer)
        self._bound()


def _joined(batches: list[LogBatch]) -> LogBatch:
    joined = LogBatch()
    for batch in batches:
        joined.extend(batch)
    return joined


def _describe(single: LogBatch) -> tuple[str, str]:
    """What one record is, and its call."""
    if single.calls:
        return "call", single.calls[0][0]
    if single.increments:
        return "increment", single.increments[0][0]
    if single.turns:
        return "turn", str(single.turns[0]["call_sid"])
    return "event", str(single.events[0]["call_sid"])

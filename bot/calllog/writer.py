"""The call log writer: records gathered from every call are flushed in one transaction
every 250 ms, so a crash loses at most the last moment of a call.

A database outage never touches the calls: records wait in memory (up to a bound) and are
written when the database is back; the outage and the recovery are logged once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError

from bot.call.core.messages import TurnRecord
from bot.store.calls import CallRecords, LogBatch
from bot.store.schema import utcnow

__all__ = ["CallLog"]

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S: Final = 0.25
MAX_PENDING: Final = 50_000  # records kept through an outage before the oldest events go


class CallLog:
    def __init__(self, records: CallRecords, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.records = records
        self._batch = LogBatch()
        self._interval = flush_interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    # ---- recording facts (never blocks, never raises) -------------------------------------

    def call(self, call_sid: str, **fields: Any) -> None:
        self._batch.calls.append((call_sid, fields))

    def increment(self, call_sid: str, **counts: int) -> None:
        counts = {name: n for name, n in counts.items() if n}
        if counts:
            self._batch.increments.append((call_sid, counts))

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

    # ---- writing --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call log writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        batch, self._batch = self._batch, LogBatch()
        if not len(batch):
            return
        try:
            await self.records.write(batch)
        except asyncio.CancelledError:
            self._requeue(batch)  # stopping mid-write: the final flush writes it
            raise
        except (SQLAlchemyError, OSError) as exc:
            if not self._failing:
                logger.error(
                    "call log: database write failed (%s); keeping records and retrying",
                    type(exc).__name__,
                )
            self._failing = True
            self._requeue(batch)
            return
        if self._failing:
            logger.warning("call log: database writes recovered")
            self._failing = False

    def _requeue(self, failed: LogBatch) -> None:
        newer, self._batch = self._batch, failed
        self._batch.calls += newer.calls
        self._batch.increments += newer.increments
        self._batch.turns += newer.turns
        self._batch.events += newer.events
        excess = len(self._batch) - MAX_PENDING
        if excess > 0:
            del self._batch.events[:excess]
            logger.error("call log: outage too long, %d oldest events dropped", excess)

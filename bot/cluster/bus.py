"""This instance among the others: with a PostgreSQL call log, workers and instances share
the global cap, claim each call's stream once, heartbeat, and pass messages to the
instance that serves a call (LISTEN/NOTIFY). Alone (SQLite), all of it is local.

Why PostgreSQL and not Redis: it is the production store already, so a deployment has one
engine to run; a claim and the call log live in the same database; LISTEN/NOTIFY carries
the few messages a call needs (a stream started, a verdict, an operator's action) and
advisory locks order the cap. Redis would add a service and a second source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from bot.call.registry import CallRegistry
from bot.cluster.core.messages import (
    Claimed,
    ClusterMessage,
    Control,
    ControlAction,
    Delivery,
    Over,
    Verdict,
    decode,
    encode,
)
from bot.store.cluster import ClaimResult, ClusterRecords
from bot.store.schema import utcnow

__all__ = ["CHANNEL", "Cluster", "ClusterTimings"]

logger = logging.getLogger("bot.cluster")

CHANNEL: Final = "bot_calls"


@dataclass(frozen=True)
class ClusterTimings:
    heartbeat_s: float = 2.0
    lost_after_s: float = 6.0  # three missed heartbeats: the instance is gone
    ringing_for_s: float = 300.0  # a reserved slot with no stream is freed (the token's life)


class Cluster:
    def __init__(
        self,
        registry: CallRegistry,
        records: ClusterRecords | None,
        database_url: str,
        max_calls_total: int,
        timings: ClusterTimings = ClusterTimings(),
    ) -> None:
        self.registry = registry
        self.records = (
            records if records is not None and records.engine.dialect.name == "postgresql" else None
        )
        self.instance_id = f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_calls_total = max_calls_total
        self.timings = timings
        self._dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._listener: Any = None  # asyncpg.Connection
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        return self.records is not None

    async def start(self) -> None:
        if self.records is None:
            return
        await self.records.join(self.instance_id, utcnow())
        await self._listen()
        self._heartbeat = asyncio.create_task(self._beat(), name="cluster heartbeat")
        logger.info("instance %s joined the cluster", self.instance_id)

    async def stop(self) -> None:
        if self.records is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(Exception):
            await self.records.leave(self.instance_id)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    # ---- calls --------------------------------------------------------------------------

    async def reserve(self, call_sid: str) -> bool:
        """A slot under the global cap for a call whose webhook is being answered."""
        if self.records is None:
            return True
        return await self.records.reserve(
            call_sid,
            self.instance_id,
            self.max_calls_total,
            self.timings.ringing_for_s,
            utcnow(),
        )

    async def claim(self, call_sid: str, handover: str | None = None) -> ClaimResult:
        """The call's stream starts here: refused if another stream has it (unless it is
        being handed over with this nonce); any Realtime session another instance opened
        for it is closed, and an instance that handed it over lets it go."""
        if self.records is None:
            return ClaimResult(True, None)
        result = await self.records.claim(call_sid, self.instance_id, utcnow(), handover)
        if result.claimed:
            await self._send(Claimed(call_sid, self.instance_id))
        return result

    async def mark_moving(self, call_sid: str, nonce: str) -> bool:
        """Hand the call over: the stream with `nonce` may claim it, on any instance."""
        return self.records is not None and await self.records.mark_moving(
            call_sid, self.instance_id, nonce
        )

    async def unmark_moving(self, call_sid: str) -> None:
        if self.records is not None:
            await self.records.unmark_moving(call_sid, self.instance_id)

    async def release(self, call_sid: str) -> None:
        if self.records is not None:
            await self.records.release(call_sid, self.instance_id)

    async def call_over(self, call_sid: str) -> None:
        """Twilio reports the call over: a slot reserved at its webhook and never streamed
        is freed (a streaming call frees its own when the stream ends)."""
        self.registry.drop_prewarmed(call_sid)
        if self.records is not None:
            await self.records.forget_ringing(call_sid)
            await self._send(Over(call_sid))

    async def deliver_verdict(self, call_sid: str, answered_by: str) -> None:
        """Answering-machine detection's verdict, for the call wherever its stream is."""
        if call_sid in self.registry.calls or self.records is None:
            self.registry.deliver_verdict(call_sid, answered_by)
            return
        holder = await self.records.note_verdict(call_sid, answered_by)
        if holder is not None:
            await self._send(Verdict(call_sid, answered_by))

    async def control(self, call_sid: str, action: ControlAction, words: str = "") -> Delivery:
        """An operator's action for a live call, wherever it runs."""
        if self.registry.control(call_sid, action, words):
            return "here"
        if self.records is None or await self.records.holder(call_sid) is None:
            return "not live"
        await self._send(Control(call_sid, action, words))
        return "sent"

    # ---- messages and heartbeats --------------------------------------------------------

    async def _send(self, message: ClusterMessage) -> None:
        assert self.records is not None
        await self.records.notify(CHANNEL, encode(message))

    async def _listen(self) -> None:
        self._listener = await asyncpg.connect(self._dsn)
        await self._listener.add_listener(CHANNEL, self._heard)

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        message = decode(payload)
        registry = self.registry
        match message:
            case Claimed(call_sid, instance) if instance != self.instance_id:
                registry.drop_prewarmed(call_sid)
                registry.moved(call_sid)
            case Over(call_sid):
                registry.drop_prewarmed(call_sid)
            case Verdict(call_sid, answered_by) if call_sid in registry.calls:
                registry.deliver_verdict(call_sid, answered_by)
            case Control(call_sid, action, words):
                registry.control(call_sid, action, words)
            case _:
                pass

    async def _beat(self) -> None:
        assert self.records is not None
        steady = False  # the previous heartbeat went through too
        while True:
            await asyncio.sleep(self.timings.heartbeat_s)
            try:
                if not await self.records.heartbeat(self.instance_id, utcnow()):
                    logger.error("this instance was given up for lost; joining again")
                    await self.records.join(self.instance_id, utcnow())
                if not steady:
                    # Just back from a database outage: the others could not beat either,
                    # and must have a heartbeat's time to show they are alive.
                    steady = True
                    continue
                swept = await self.records.sweep(self.timings.lost_after_s, utcnow())
                if swept:
                    logger.warning(
                        "an instance stopped answering: %d of its call(s) marked ended",
                        len(swept),
                    )
                if self._listener is None or self._listener.is_closed():
                    logger.warning("the cluster's notification connection was lost; again")
                    await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down: calls go on, try again
                steady = False
                logger.warning("cluster heartbeat failed (%s)", type(exc).__name__)

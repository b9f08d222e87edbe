"""What instances sharing PostgreSQL know of each other: heartbeats, the calls live anywhere
with the global cap on them, and which instance serves each call's stream.

The cap and the claim are each one transaction. On PostgreSQL a transaction-level advisory
lock orders the reservations of all instances, so two webhooks at the same moment cannot
both take the last slot; the claim is a conditional update, so exactly one stream gets a
call. Notifications (`pg_notify`) carry messages to the instance that holds a call.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.store.schema import calls, cluster_instances, live_calls

__all__ = ["ClaimResult", "ClusterRecords"]

_RESERVE_LOCK: Final = 0x6361_7073  # "caps"
_SWEEP_LOCK: Final = 0x7377_6570  # "swep"
RINGING: Final = "ringing"
STREAMING: Final = "streaming"
MOVING: Final = "moving:"  # + the handover's nonce: the next stream with it takes the call


@dataclass(frozen=True)
class ClaimResult:
    claimed: bool
    answered_by: str | None  # a verdict that arrived before the stream


class ClusterRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def _lock(self, conn: AsyncConnection, key: int) -> None:
        if self._postgres:
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({key})"))

    async def join(self, instance_id: str, now: dt.datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(cluster_instances).values(
                    instance_id=instance_id, started_at=now, heartbeat_at=now
                )
            )

    async def leave(self, instance_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(live_calls).where(live_calls.c.instance_id == instance_id))
            await conn.execute(
                delete(cluster_instances).where(cluster_instances.c.instance_id == instance_id)
            )

    async def heartbeat(self, instance_id: str, now: dt.datetime) -> bool:
        """False if this instance was given up for lost (it must not carry on as if not)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(cluster_instances)
                .where(cluster_instances.c.instance_id == instance_id)
                .values(heartbeat_at=now)
            )
        return result.rowcount == 1

    async def reserve(
        self, call_sid: str, instance_id: str, cap: int, ringing_for_s: float, now: dt.datetime
    ) -> bool:
        """A slot for a call whose webhook is being answered; False past the global cap. A
        call that has a row already keeps it (a replayed webhook takes no second slot)."""
        async with self.engine.begin() as conn:
            await self._lock(conn, _RESERVE_LOCK)
            stale = now - dt.timedelta(seconds=ringing_for_s)
            await conn.execute(
                delete(live_calls).where(
                    live_calls.c.state == RINGING, live_calls.c.updated_at < stale
                )
            )
            existing = await conn.scalar(
                select(live_calls.c.call_sid).where(live_calls.c.call_sid == call_sid)
            )
            if existing is not None:
                return True
            if cap > 0:  # 0: no global cap
                live = await conn.scalar(select(func.count()).select_from(live_calls))
                if (live or 0) >= cap:
                    return False
            await conn.execute(
                insert(live_calls).values(
                    call_sid=call_sid, state=RINGING, instance_id=instance_id, updated_at=now
                )
            )
        return True

    async def claim(
        self, call_sid: str, instance_id: str, now: dt.datetime, handover: str | None = None
    ) -> ClaimResult:
        """The call's stream starts on this instance; refused if another stream has it,
        unless that instance is handing the call over with this `handover` nonce."""
        async with self.engine.begin() as conn:
            await self._lock(conn, _RESERVE_LOCK)
            row = (
                await conn.execute(
                    select(live_calls.c.state, live_calls.c.answered_by).where(
                        live_calls.c.call_sid == call_sid
                    )
                )
            ).first()
            if row is not None and row.state == STREAMING:
                return ClaimResult(False, row.answered_by)
            if row is not None and row.state.startswith(MOVING):
                if handover is None or row.state != MOVING + handover:
                    return ClaimResult(False, row.answered_by)
            values = {"state": STREAMING, "instance_id": instance_id, "updated_at": now}
            if row is None:  # no webhook reserved it (placed before, or the row expired)
                await conn.execute(insert(live_calls).values(call_sid=call_sid, **values))
                return ClaimResult(True, None)
            await conn.execute(
                update(live_calls).where(live_calls.c.call_sid == call_sid).values(**values)
            )
            return ClaimResult(True, row.answered_by)

    async def mark_moving(self, call_sid: str, instance_id: str, nonce: str) -> bool:
        """This instance hands its call over: the stream that shows `nonce` may claim it."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(live_calls)
                .where(
                    live_calls.c.call_sid == call_sid,
                    live_calls.c.instance_id == instance_id,
                    live_calls.c.state == STREAMING,
                )
                .values(state=MOVING + nonce)
            )
            return bool(result.rowcount)

    async def unmark_moving(self, call_sid: str, instance_id: str) -> None:
        """The handover did not happen: the call stays here."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(live_calls)
                .where(
                    live_calls.c.call_sid == call_sid,
                    live_calls.c.instance_id == instance_id,
                    live_calls.c.state.startswith(MOVING),
                )
                .values(state=STREAMING)
            )

    async def rekey(self, old: str, new: str) -> None:
        """A slot reserved before its call had a CallSid (a campaign's) takes the CallSid."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(live_calls).where(live_calls.c.call_sid == old).values(call_sid=new)
            )

    async def forget_ringing(self, call_sid: str) -> None:
        """The call ended before any stream claimed it (the caller hung up while it rang):
        its slot is free now, not when the reservation expires."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(live_calls).where(
                    live_calls.c.call_sid == call_sid, live_calls.c.state == RINGING
                )
            )

    async def forget(self, call_sid: str) -> None:
        """The call is over, whoever held it (a campaign's call that was never answered)."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(live_calls).where(live_calls.c.call_sid == call_sid))

    async def release(self, call_sid: str, instance_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(live_calls).where(
                    live_calls.c.call_sid == call_sid, live_calls.c.instance_id == instance_id
                )
            )

    async def note_verdict(self, call_sid: str, answered_by: str) -> str | None:
        """Keep an answering-machine verdict for the call's stream; the instance serving it
        now, if any."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(live_calls)
                .where(live_calls.c.call_sid == call_sid)
                .values(answered_by=answered_by)
            )
            return await self._holder(conn, call_sid)

    async def holder(self, call_sid: str) -> str | None:
        """The instance serving the call's stream; None if it is not streaming anywhere."""
        async with self.engine.connect() as conn:
            return await self._holder(conn, call_sid)

    async def _holder(self, conn: AsyncConnection, call_sid: str) -> str | None:
        holder: str | None = await conn.scalar(
            select(live_calls.c.instance_id).where(
                live_calls.c.call_sid == call_sid, live_calls.c.state == STREAMING
            )
        )
        return holder

    async def live_count(self) -> int:
        """Calls live anywhere, ringing ones included."""
        async with self.engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(live_calls)) or 0

    async def sweep(self, lost_after_s: float, now: dt.datetime) -> list[str]:
        """Instances silent for `lost_after_s` crashed: their calls end in the call log and
        leave the live list. Returns the calls ended. One instance sweeps at a time."""
        async with self.engine.begin() as conn:
            if self._postgres:
                got = await conn.scalar(text(f"SELECT pg_try_advisory_xact_lock({_SWEEP_LOCK})"))
                if not got:
                    return []
            cutoff = now - dt.timedelta(seconds=lost_after_s)
            lost = list(
                await conn.scalars(
                    select(cluster_instances.c.instance_id).where(
                        cluster_instances.c.heartbeat_at < cutoff
                    )
                )
            )
            if not lost:
                return []
            ended = list(
                await conn.scalars(
                    select(live_calls.c.call_sid).where(
                        live_calls.c.instance_id.in_(lost), live_calls.c.state == STREAMING
                    )
                )
            )
            if ended:
                await conn.execute(
                    update(calls)
                    .where(calls.c.call_sid.in_(ended), calls.c.ended_at.is_(None))
                    .values(
                        ended_at=now,
                        ended_by="bridge",
                        end_reason="its instance stopped answering (no heartbeat)",
                        updated_at=now,
                    )
                )
            await conn.execute(delete(live_calls).where(live_calls.c.instance_id.in_(lost)))
            await conn.execute(
                delete(cluster_instances).where(cluster_instances.c.instance_id.in_(lost))
            )
            return ended

    async def notify(self, channel: str, payload: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {
                    "channel": channel,
                    "payload": payload,
                },
            )

"""Campaign runner: calls a contact list with a concurrency cap, pacing, calling hours in each
callee's time zone, a do-not-call list and retries, keeping all state in the database.

Never twice by accident: a contact is claimed (state `calling`, committed) before Twilio is
asked to call. A runner that stops after the claim leaves the contact `calling`; the next
run asks Twilio how that call ended, or, if no CallSid was saved, marks it `unknown` for a
person to check instead of dialling again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from bot.config import Settings
from bot.errors import BotError
from bot.outbound import OutboundCall, place_call
from bot.sansio.campaign import FINAL_STATUSES, Contact, Policy, Window, after_call
from bot.storage import CallStore, campaign_contacts, utcnow
from bot.twilio_rest import TwilioRest

__all__ = ["ACTIVE_STATES", "CampaignOptions", "CampaignRunner"]

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("pending", "retry", "calling")
Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class CampaignOptions:
    name: str
    policy: Policy = Policy()
    window: Window = Window()
    concurrency: int = 2
    calls_per_second: float = 1.0
    poll_interval_s: float = 3.0
    instructions: str | None = None
    greeting: str | None = None


class CampaignRunner:
    def __init__(
        self,
        store: CallStore,
        rest: TwilioRest | None,  # None: reading state only
        settings: Settings,
        options: CampaignOptions,
        *,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        on_progress: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.store = store
        self.rest = rest
        self.settings = settings
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.on_progress = on_progress
        self._table = campaign_contacts
        self._mine = campaign_contacts.c.campaign == options.name

    async def load(self, contacts: list[Contact], dnc: frozenset[str]) -> int:
        """Add the list. Contacts already known keep their state (that is how runs resume)."""
        now = self.clock()
        async with self.store.engine.begin() as conn:
            known = set(
                (await conn.execute(select(self._table.c.phone).where(self._mine))).scalars()
            )
            new = [
                {
                    "campaign": self.options.name,
                    "line": contact.line,
                    "phone": contact.phone,
                    "timezone": contact.timezone,
                    "variables": contact.variables,
                    "state": "skipped" if contact.phone in dnc else "pending",
                    "note": "on the do-not-call list" if contact.phone in dnc else None,
                    "updated_at": now,
                }
                for contact in contacts
                if contact.phone not in known
            ]
            if new:
                await conn.execute(self._table.insert(), new)
            if dnc:  # the list may have grown since the last run
                await conn.execute(
                    update(self._table)
                    .where(self._mine, self._table.c.phone.in_(dnc))
                    .where(self._table.c.state.in_(("pending", "retry")))
                    .values(state="skipped", note="on the do-not-call list", updated_at=now)
                )
        return len(new)

    async def counts(self) -> dict[str, int]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(self._table.c.state, func.count())
                .where(self._mine)
                .group_by(self._table.c.state)
            )
            return {state: int(n) for state, n in rows}

    async def states(self) -> dict[str, str]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(self._table.c.phone, self._table.c.state).where(self._mine)
            )
            return {phone: state for phone, state in rows}

    async def run(self) -> dict[str, int]:
        """Call until every contact is done, failed, skipped or unknown."""
        options = self.options
        while True:
            now = self.clock()
            await self._reconcile(now)
            active = await self._count(("calling",))
            for contact in await self._due(now):
                if active >= options.concurrency:
                    break
                if not options.window.open_at(now, contact["timezone"]):
                    await self._set(
                        contact["id"],
                        next_attempt_at=options.window.next_open(now, contact["timezone"]),
                    )
                    continue
                if not await self._claim(contact["id"], now):
                    continue  # another runner took it
                await self._place(contact)
                active += 1
                await self.sleep(1 / options.calls_per_second)
                now = self.clock()
            counts = await self.counts()
            if self.on_progress is not None:
                self.on_progress(counts)
            if not any(counts.get(state, 0) for state in ACTIVE_STATES):
                return counts
            await self.sleep(await self._wait_s(active))

    async def _wait_s(self, active: int) -> float:
        """Poll while calls are up; otherwise sleep until the next contact may be called."""
        if active:
            return self.options.poll_interval_s
        async with self.store.engine.connect() as conn:
            earliest = (
                await conn.execute(
                    select(func.min(self._table.c.next_attempt_at)).where(
                        self._mine, self._table.c.state.in_(("pending", "retry"))
                    )
                )
            ).scalar_one()
        if earliest is None:
            return self.options.poll_interval_s
        if earliest.tzinfo is None:
            earliest = earliest.replace(tzinfo=dt.UTC)
        until_next: float = (earliest - self.clock()).total_seconds()
        return max(self.options.poll_interval_s, until_next)

    async def _count(self, states: tuple[str, ...]) -> int:
        async with self.store.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(self._mine, self._table.c.state.in_(states))
                    )
                ).scalar_one()
            )

    async def _due(self, now: dt.datetime) -> list[dict[str, Any]]:
        async with self.store.engine.connect() as conn:
            rows = await conn.execute(
                select(self._table)
                .where(
                    self._mine,
                    self._table.c.state.in_(("pending", "retry")),
                    or_(
                        self._table.c.next_attempt_at.is_(None),
                        self._table.c.next_attempt_at <= now,
                    ),
                )
                .order_by(self._table.c.id)
            )
            return [dict(row._mapping) for row in rows]

    async def _claim(self, contact_id: int, now: dt.datetime) -> bool:
        async with self.store.engine.begin() as conn:
            result = await conn.execute(
                update(self._table)
                .where(
                    and_(
                        self._table.c.id == contact_id,
                        self._table.c.state.in_(("pending", "retry")),
                    )
                )
                .values(
                    state="calling",
                    attempts=self._table.c.attempts + 1,
                    call_sid=None,
                    next_attempt_at=None,
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    async def _set(self, contact_id: int, **values: Any) -> None:
        async with self.store.engine.begin() as conn:
            await conn.execute(
                update(self._table)
                .where(self._table.c.id == contact_id)
                .values(**values, updated_at=self.clock())
            )

    async def _place(self, contact: dict[str, Any]) -> None:
        call = OutboundCall(
            contact["phone"],
            contact["variables"] or {},
            self.options.instructions,
            self.options.greeting,
            campaign=self.options.name,
        )
        assert self.rest is not None
        try:
            call_sid = await place_call(self.settings, self.rest, self.store, call)
        except (BotError, ValueError) as exc:
            logger.warning("campaign %s: calling %s failed: %s", self.options.name, call.to, exc)
            await self._finish(contact["id"], contact["attempts"] + 1, "failed", str(exc))
            return
        await self._set(contact["id"], call_sid=call_sid)
        logger.info("campaign %s: calling %s (%s)", self.options.name, call.to, call_sid)

    async def _finish(self, contact_id: int, attempts: int, status: str, detail: str = "") -> None:
        outcome = after_call(status, attempts, self.clock(), self.options.policy)
        await self._set(
            contact_id,
            state=outcome.state,
            next_attempt_at=outcome.next_attempt_at,
            last_status=status,
            note=f"{outcome.note}{': ' + detail if detail else ''}",
        )

    async def _reconcile(self, now: dt.datetime) -> None:
        """Settle contacts whose calls are over; flag ones a stopped run left unclear."""
        async with self.store.engine.connect() as conn:
            calling = [
                dict(row._mapping)
                for row in await conn.execute(
                    select(self._table).where(self._mine, self._table.c.state == "calling")
                )
            ]
        for contact in calling:
            if contact["call_sid"] is None:
                await self._set(
                    contact["id"],
                    state="unknown",
                    note="a run stopped while placing this call; check before calling again",
                )
                continue
            assert self.rest is not None
            try:
                status = await self.rest.call_status(contact["call_sid"])
            except BotError as exc:
                logger.warning(
                    "campaign %s: status of %s: %s", self.options.name, contact["call_sid"], exc
                )
                continue
            if status in FINAL_STATUSES:
                await self._finish(contact["id"], contact["attempts"], status)

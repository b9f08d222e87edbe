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
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final

from bot.errors import BotError
from bot.outbound.core.campaign import FINAL_STATUSES, CampaignOptions, Contact, after_call
from bot.outbound.core.request import Caller, OutboundCall
from bot.outbound.placing import place_call
from bot.store.campaigns import NewContact
from bot.store.schema import utcnow
from bot.store.store import Store
from bot.twilio_rest import TwilioRest

__all__ = ["ACTIVE_STATES", "CampaignRunner"]

logger = logging.getLogger(__name__)

ACTIVE_STATES: Final = ("pending", "retry", "calling")
Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]


class CampaignRunner:
    def __init__(
        self,
        store: Store,
        rest: TwilioRest,
        caller: Caller,
        options: CampaignOptions,
        *,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        on_progress: Callable[[dict[str, int]], None] | None = None,
        max_calls_total: int = 0,
    ) -> None:
        self.store = store
        self.contacts = store.campaigns
        self.rest = rest
        self.caller = caller
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.on_progress = on_progress
        # The global cap binds campaigns too, where instances share PostgreSQL.
        shared = store.engine.dialect.name == "postgresql"
        self.max_calls_total = max_calls_total if shared else 0
        self.waiting_for_slot = 0  # rounds that found no free slot

    async def load(self, contacts: list[Contact], dnc: frozenset[str]) -> int:
        """Add the list. Contacts already known keep their state (that is how runs resume)."""
        new = [NewContact(c.line, c.phone, c.timezone, c.variables) for c in contacts]
        return await self.contacts.add(self.options.name, new, dnc, self.clock())

    async def run(self) -> dict[str, int]:
        """Call until every contact is done, failed, skipped or unknown."""
        options, name = self.options, self.options.name
        while True:
            now = self.clock()
            await self._reconcile()
            active = len(await self.contacts.in_state(name, "calling"))
            for contact in await self.contacts.due(name, now):
                if active >= options.concurrency:
                    break
                if not options.window.open_at(now, contact["timezone"]):
                    opens = options.window.next_open(now, contact["timezone"])
                    await self.contacts.set(contact["id"], now, next_attempt_at=opens)
                    continue
                slot = await self._slot(contact["id"])
                if slot is None:
                    self.waiting_for_slot += 1
                    logger.info("campaign %s: waiting for a free slot (MAX_CALLS_TOTAL)", name)
                    break
                if not await self.contacts.claim(contact["id"], now):
                    await self._free(slot)
                    continue  # another runner took it
                await self._place(contact, slot)
                active += 1
                await self.sleep(1 / options.calls_per_second)
                now = self.clock()
            counts = await self.contacts.counts(name)
            if self.on_progress is not None:
                self.on_progress(counts)
            if not any(counts.get(state, 0) for state in ACTIVE_STATES):
                return counts
            await self.sleep(await self._wait_s(active))

    async def _wait_s(self, active: int) -> float:
        """Poll while calls are up; otherwise sleep until the next contact may be called."""
        if active:
            return self.options.poll_interval_s
        earliest = await self.contacts.next_attempt(self.options.name)
        if earliest is None:
            return self.options.poll_interval_s
        return max(self.options.poll_interval_s, (earliest - self.clock()).total_seconds())

    async def _slot(self, contact_id: int) -> str | None:
        """A slot under the global cap, held under a name of its own until the call has a
        CallSid; "" when there is no cap; None when every slot is taken."""
        if not self.max_calls_total:
            return ""
        key = f"campaign-{contact_id}-{secrets.token_hex(6)}"
        cluster = self.store.cluster
        reserved = await cluster.reserve(key, "campaign", self.max_calls_total, 300, self.clock())
        return key if reserved else None

    async def _free(self, slot: str) -> None:
        if slot:
            await self.store.cluster.forget(slot)

    async def _place(self, contact: dict[str, Any], slot: str = "") -> None:
        call = OutboundCall(
            contact["phone"],
            contact["variables"] or {},
            self.options.instructions,
            self.options.greeting,
            campaign=self.options.name,
            turn_taking=self.options.turn_taking,
        )
        try:
            call_sid = await place_call(self.caller, self.rest, self.store.calls, call)
        except (BotError, ValueError) as exc:
            logger.warning("campaign %s: calling %s failed: %s", self.options.name, call.to, exc)
            await self._free(slot)
            await self._finish(contact["id"], contact["attempts"] + 1, "failed", str(exc))
            return
        if slot:
            await self.store.cluster.rekey(slot, call_sid)
        await self.contacts.set(contact["id"], self.clock(), call_sid=call_sid)
        logger.info("campaign %s: calling %s (%s)", self.options.name, call.to, call_sid)

    async def _finish(self, contact_id: int, attempts: int, status: str, detail: str = "") -> None:
        now = self.clock()
        outcome = after_call(status, attempts, now, self.options.policy)
        await self.contacts.set(
            contact_id,
            now,
            state=outcome.state,
            next_attempt_at=outcome.next_attempt_at,
            last_status=status,
            note=f"{outcome.note}{': ' + detail if detail else ''}",
        )

    async def _reconcile(self) -> None:
        """Settle contacts whose calls are over; flag ones a stopped run left unclear."""
        for contact in await self.contacts.in_state(self.options.name, "calling"):
            if contact["call_sid"] is None:
                await self.contacts.set(
                    contact["id"],
                    self.clock(),
                    state="unknown",
                    note="a run stopped while placing this call; check before calling again",
                )
                continue
            try:
                status = await self.rest.call_status(contact["call_sid"])
            except BotError as exc:
                logger.warning(
                    "campaign %s: status of %s: %s", self.options.name, contact["call_sid"], exc
                )
                continue
            if status in FINAL_STATUSES:
                if self.max_calls_total:  # a call nobody answered never freed its slot
                    await self.store.cluster.forget(contact["call_sid"])
                await self._finish(contact["id"], contact["attempts"], status)

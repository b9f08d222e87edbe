"""Campaign contacts: who is on a list, what state each is in, and claiming one to call.

A contact is claimed (state `calling`, committed) before Twilio is asked to call it, and a
claim succeeds only for a contact still `pending` or `retry`, so two runners never call the
same person.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.schema import campaign_contacts

__all__ = ["CALLABLE_STATES", "CampaignContacts", "NewContact"]

CALLABLE_STATES: Final = ("pending", "retry")
_table: Final = campaign_contacts


@dataclass(frozen=True)
class NewContact:
    line: int
    phone: str
    timezone: str
    variables: Mapping[str, str]


class CampaignContacts:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(
        self, campaign: str, contacts: Iterable[NewContact], dnc: Collection[str], now: dt.datetime
    ) -> int:
        """Add the contacts not yet known; those already known keep their state. Numbers on
        the do-not-call list are skipped, including known ones still waiting."""
        mine = _table.c.campaign == campaign
        async with self.engine.begin() as conn:
            known = set((await conn.execute(select(_table.c.phone).where(mine))).scalars())
            new = [
                {
                    "campaign": campaign,
                    "line": contact.line,
                    "phone": contact.phone,
                    "timezone": contact.timezone,
                    "variables": dict(contact.variables),
                    "state": "skipped" if contact.phone in dnc else "pending",
                    "note": "on the do-not-call list" if contact.phone in dnc else None,
                    "updated_at": now,
                }
                for contact in contacts
                if contact.phone not in known
            ]
            if new:
                await conn.execute(_table.insert(), new)
            if dnc:  # the list may have grown since the last run
                await conn.execute(
                    update(_table)
                    .where(mine, _table.c.phone.in_(list(dnc)))
                    .where(_table.c.state.in_(CALLABLE_STATES))
                    .values(state="skipped", note="on the do-not-call list", updated_at=now)
                )
        return len(new)

    async def counts(self, campaign: str) -> dict[str, int]:
        """How many contacts are in each state."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(_table.c.state, func.count())
                .where(_table.c.campaign == campaign)
                .group_by(_table.c.state)
            )
            return {state: int(n) for state, n in rows}

    async def states(self, campaign: str) -> dict[str, str]:
        """Each phone number's state."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(_table.c.phone, _table.c.state).where(_table.c.campaign == campaign)
            )
            return {phone: state for phone, state in rows}

    async def in_state(self, campaign: str, state: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(_table).where(_table.c.campaign == campaign, _table.c.state == state)
            )
            return [dict(row._mapping) for row in rows]

    async def due(self, campaign: str, now: dt.datetime) -> list[dict[str, Any]]:
        """Contacts that may be called now, in list order."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(_table)
                .where(
                    _table.c.campaign == campaign,
                    _table.c.state.in_(CALLABLE_STATES),
                    or_(_table.c.next_attempt_at.is_(None), _table.c.next_attempt_at <= now),
                )
                .order_by(_table.c.id)
            )
            return [dict(row._mapping) for row in rows]

    async def next_attempt(self, campaign: str) -> dt.datetime | None:
        """When the earliest waiting contact may be called."""
        async with self.engine.connect() as conn:
            earliest: dt.datetime | None = (
                await conn.execute(
                    select(func.min(_table.c.next_attempt_at)).where(
                        _table.c.campaign == campaign, _table.c.state.in_(CALLABLE_STATES)
                    )
                )
            ).scalar_one()
        if earliest is not None and earliest.tzinfo is None:
            earliest = earliest.replace(tzinfo=dt.UTC)
        return earliest

    async def claim(self, contact_id: int, now: dt.datetime) -> bool:
        """Mark a contact `calling` and count the attempt; False if another runner has it."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(_table)
                .where(and_(_table.c.id == contact_id, _table.c.state.in_(CALLABLE_STATES)))
                .values(
                    state="calling",
                    attempts=_table.c.attempts + 1,
                    call_sid=None,
                    next_attempt_at=None,
                    updated_at=now,
                )
            )
            return result.rowcount == 1

    async def set(self, contact_id: int, now: dt.datetime, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_table).where(_table.c.id == contact_id).values(**values, updated_at=now)
            )

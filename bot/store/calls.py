"""Call-log records: calls, their turns and events, written in batches and read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import case, func, literal, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from bot.store.fit import INT_MAX, fit_int, fit_row
from bot.store.schema import call_events, calls, turns, utcnow

__all__ = ["CallFilter", "CallRecords", "LogBatch"]

_KEEP_FIRST: Final = frozenset({"started_at", "direction", "from_number", "to_number"})


@dataclass(frozen=True)
class CallFilter:
    number: str | None = None
    direction: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    search: str | None = None


@dataclass
class LogBatch:
    """Writes collected over a moment, applied in one transaction, in order."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    increments: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.calls) + len(self.increments) + len(self.turns) + len(self.events)

    def extend(self, newer: LogBatch) -> None:
        self.calls += newer.calls
        self.increments += newer.increments
        self.turns += newer.turns
        self.events += newer.events

    def singles(self) -> list[LogBatch]:
        """One batch per record, in the order `write` applies them."""
        return (
            [LogBatch(calls=[c]) for c in self.calls]
            + [LogBatch(increments=[i]) for i in self.increments]
            + [LogBatch(turns=[t]) for t in self.turns]
            + [LogBatch(events=[e]) for e in self.events]
        )

    def trim(self, limit: int) -> dict[str, int]:
        """Drop the oldest records until at most `limit` are left, and say how many of each
        kind went: events go first, call updates last, since they say that a call happened
        and how it ended."""
        dropped: dict[str, int] = {}
        for kind, records in (
            ("event", self.events),
            ("increment", self.increments),
            ("turn", self.turns),
            ("call", self.calls),
        ):
            excess = len(self) - limit
            if excess <= 0:
                break
            cut = min(excess, len(records))
            if cut:
                del records[:cut]
                dropped[kind] = cut
        return dropped


def _status_expression() -> ColumnElement[str]:
    return func.coalesce(
        calls.c.twilio_status,
        case((calls.c.ended_at.is_(None), "in-progress"), else_="ended"),
    )


class CallRecords:
    """Calls, turns and events: written in batches by the call log, read by the review."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # ---- writing --------------------------------------------------------------------------

    async def write(self, batch: LogBatch) -> None:
        """Apply `batch` in one transaction, every value fitted to its column first."""
        async with self.engine.begin() as conn:
            for call_sid, fields in _merge_calls(batch.calls):
                await self._upsert_call(conn, call_sid, fields)
            for call_sid, counts in batch.increments:
                await conn.execute(
                    update(calls)
                    .where(calls.c.call_sid == call_sid)
                    .values({name: _add_capped(name, n) for name, n in counts.items()})
                )
            for row in _latest_turns(batch.turns):
                statement = self._insert(turns).values(**row)
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["call_sid", "item_id"],
                        set_={
                            k: statement.excluded[k]
                            for k in row
                            if k not in ("call_sid", "item_id")
                        },
                    )
                )
            if batch.events:
                events = [fit_row(call_events, event) for event in batch.events]
                await conn.execute(call_events.insert(), events)

    async def ping(self) -> None:
        """Raises if the database cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _upsert_call(
        self, conn: AsyncConnection, call_sid: str, fields: dict[str, Any]
    ) -> None:
        values = fit_row(calls, {**fields, "updated_at": utcnow()})
        statement = self._insert(calls).values(call_sid=call_sid, **values)
        # The webhook and the stream may be served by different instances, in any order:
        # the first word on when and between whom a call started is kept.
        updates = {
            k: func.coalesce(calls.c[k], statement.excluded[k])
            if k in _KEEP_FIRST
            else statement.excluded[k]
            for k in values
        }
        await conn.execute(
            statement.on_conflict_do_update(index_elements=["call_sid"], set_=updates)
        )

    async def record_placed(
        self, call_sid: str, from_number: str | None, to_number: str, direction: str
    ) -> None:
        """A call we placed, logged at once: calls nobody answers never reach the webhook."""
        batch = LogBatch()
        batch.calls.append(
            (
                call_sid,
                {
                    "direction": direction,
                    "from_number": from_number,
                    "to_number": to_number,
                    "started_at": utcnow(),
                    "twilio_status": "queued",
                },
            )
        )
        await self.write(batch)

    async def had_stream(self, call_sid: str) -> bool:
        """Whether a media stream of this call was admitted (by any instance)."""
        async with self.engine.connect() as conn:
            stream_sid = (
                await conn.execute(select(calls.c.stream_sid).where(calls.c.call_sid == call_sid))
            ).scalar_one_or_none()
        return stream_sid is not None

    async def clear_recording(self, call_sid: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(calls).where(calls.c.call_sid == call_sid).values(recording_path=None)
            )

    # ---- reading --------------------------------------------------------------------------

    def _where(self, query_filter: CallFilter) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if query_filter.number:
            pattern = f"%{query_filter.number}%"
            clauses.append(or_(calls.c.from_number.like(pattern), calls.c.to_number.like(pattern)))
        if query_filter.direction:
            clauses.append(calls.c.direction == query_filter.direction)
        if query_filter.status:
            clauses.append(_status_expression() == query_filter.status)
        if query_filter.since:
            clauses.append(calls.c.started_at >= query_filter.since)
        if query_filter.until:
            clauses.append(calls.c.started_at < query_filter.until)
        if query_filter.search:
            needle = f"%{query_filter.search.lower()}%"
            clauses.append(
                calls.c.call_sid.in_(
                    select(turns.c.call_sid).where(func.lower(turns.c.text).like(needle))
                )
            )
        return clauses

    async def list_calls(
        self, query_filter: CallFilter, *, limit: int = 25, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        where = self._where(query_filter)
        turn_count = (
            select(func.count()).where(turns.c.call_sid == calls.c.call_sid).scalar_subquery()
        )
        query = (
            select(calls, _status_expression().label("status"), turn_count.label("turn_count"))
            .where(*where)
            .order_by(calls.c.started_at.desc().nulls_last(), calls.c.call_sid)
            .limit(limit)
            .offset(offset)
        )
        async with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(query)]
            total = (
                await conn.execute(select(func.count()).select_from(calls).where(*where))
            ).scalar_one()
        return rows, int(total)

    async def get_call(self, call_sid: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(calls, _status_expression().label("status")).where(
                        calls.c.call_sid == call_sid
                    )
                )
            ).first()
            if row is None:
                return None
            call = dict(row._mapping)
            call["turns"] = [
                dict(r._mapping)
                for r in await conn.execute(
                    select(turns)
                    .where(turns.c.call_sid == call_sid)
                    .order_by(turns.c.started_ms.nulls_last(), turns.c.id)
                )
            ]
            call["events"] = [
                dict(r._mapping)
                for r in await conn.execute(
                    select(call_events)
                    .where(call_events.c.call_sid == call_sid)
                    .order_by(call_events.c.at_ms, call_events.c.id)
                )
            ]
        return call

    async def iter_calls(
        self, query_filter: CallFilter, *, page: int = 200
    ) -> AsyncIterator[dict[str, Any]]:
        offset = 0
        while True:
            rows, _ = await self.list_calls(query_filter, limit=page, offset=offset)
            sids = [row["call_sid"] for row in rows]
            by_call: dict[str, dict[str, list[dict[str, Any]]]] = {
                sid: {"turns": [], "events": []} for sid in sids
            }
            async with self.engine.connect() as conn:
                for name, table, order in (
                    ("turns", turns, (turns.c.started_ms.nulls_last(), turns.c.id)),
                    ("events", call_events, (call_events.c.at_ms, call_events.c.id)),
                ):
                    query = select(table).where(table.c.call_sid.in_(sids)).order_by(*order)
                    for record in await conn.execute(query):
                        by_call[record.call_sid][name].append(dict(record._mapping))
            for row in rows:
                row.pop("turn_count", None)
                yield {**row, **by_call[row["call_sid"]]}
            if len(rows) < page:
                return
            offset += page

    async def count_calls(self, query_filter: CallFilter) -> int:
        return (await self.list_calls(query_filter, limit=1))[1]

    async def recordings_older_than(self, cutoff: dt.datetime) -> list[tuple[str, str]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(calls.c.call_sid, calls.c.recording_path).where(
                    calls.c.recording_path.is_not(None), calls.c.started_at < cutoff
                )
            )
            return [(row.call_sid, row.recording_path) for row in rows]


def _add_capped(column: str, n: int) -> ColumnElement[int]:
    """`column + n`, never past what an integer column holds."""
    total = calls.c[column] + (fit_int(n) or 0)
    return case((total > literal(INT_MAX), literal(INT_MAX)), else_=total)


def _merge_calls(updates: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    merged: dict[str, dict[str, Any]] = {}
    for call_sid, fields in updates:
        merged.setdefault(call_sid, {}).update(fields)
    return list(merged.items())


def _latest_turns(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        latest[(row["call_sid"], row["item_id"])] = fit_row(turns, row)
    return list(latest.values())

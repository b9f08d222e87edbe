"""The call log in SQL (SQLite by default, PostgreSQL for production), via SQLAlchemy 2 async.

Schema changes are Alembic migrations in `bot/migrations/`, applied at start. On PostgreSQL
an advisory lock makes several instances starting together migrate once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    case,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "CallFilter",
    "CallStore",
    "call_events",
    "calls",
    "campaign_contacts",
    "metadata",
    "turns",
    "utcnow",
]

_MIGRATION_LOCK: Final = 0x6361_6C6C  # "call"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on SQLite (naive text) and PostgreSQL (timestamptz) alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("stream_sid", String(64)),
    Column("direction", String(32)),
    Column("from_number", String(64)),
    Column("to_number", String(64)),
    Column("started_at", UtcDateTime),
    Column("answered_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("ended_by", String(32)),
    Column("end_reason", Text),
    Column("twilio_status", String(32)),
    Column("twilio_duration_s", Integer),
    Column("answered_by", String(32)),
    Column("provider", String(255)),
    Column("model", String(255)),
    Column("dialect", String(16)),
    Column("audio_mode", String(16)),
    Column("recording_path", Text),
    Column("input_tokens", Integer, nullable=False, server_default="0"),
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("total_tokens", Integer, nullable=False, server_default="0"),
    Column("interruptions", Integer, nullable=False, server_default="0"),
    Column("errors", Integer, nullable=False, server_default="0"),
    Column("updated_at", UtcDateTime),
    Index("ix_calls_started_at", "started_at"),
)

turns = Table(
    "turns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False, index=True),
    Column("item_id", String(128), nullable=False),
    Column("speaker", String(16), nullable=False),
    Column("started_ms", Integer),
    Column("ended_ms", Integer),
    Column("text", Text),
    Column("heard_text", Text),
    Column("interrupted", Boolean, nullable=False, server_default="0"),
    Column("latency_ms", Integer),
    UniqueConstraint("call_sid", "item_id", name="uq_turns_call_item"),
)

call_events = Table(
    "call_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False, index=True),
    Column("at_ms", Integer),
    Column("kind", String(32), nullable=False),
    Column("detail", Text),
    Column("data", JSON),
    Column("created_at", UtcDateTime),
)

campaign_contacts = Table(
    "campaign_contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(128), nullable=False),
    Column("line", Integer, nullable=False),
    Column("phone", String(32), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("variables", JSON),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime),
    Column("call_sid", String(64)),
    Column("last_status", String(32)),
    Column("note", Text),
    Column("updated_at", UtcDateTime),
    UniqueConstraint("campaign", "phone", name="uq_campaign_phone"),
    Index("ix_campaign_contacts_state", "campaign", "state"),
)

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


def _status_expression() -> ColumnElement[str]:
    return func.coalesce(
        calls.c.twilio_status,
        case((calls.c.ended_at.is_(None), "in-progress"), else_="ended"),
    )


class CallStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    @classmethod
    async def open(cls, url: str) -> CallStore:
        """Connect, create the SQLite file if needed, and migrate to the newest schema."""
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        await migrate(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # ---- writing --------------------------------------------------------------------------

    async def write(self, batch: LogBatch) -> None:
        async with self.engine.begin() as conn:
            for call_sid, fields in _merge_calls(batch.calls):
                await self._upsert_call(conn, call_sid, fields)
            for call_sid, counts in batch.increments:
                await conn.execute(
                    update(calls)
                    .where(calls.c.call_sid == call_sid)
                    .values({name: calls.c[name] + n for name, n in counts.items()})
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
                await conn.execute(call_events.insert(), batch.events)

    async def _upsert_call(
        self, conn: AsyncConnection, call_sid: str, fields: dict[str, Any]
    ) -> None:
        values = {**fields, "updated_at": utcnow()}
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


def _merge_calls(updates: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    merged: dict[str, dict[str, Any]] = {}
    for call_sid, fields in updates:
        merged.setdefault(call_sid, {}).update(fields)
    return list(merged.items())


def _latest_turns(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        latest[(row["call_sid"], row["item_id"])] = dict(row)
    return list(latest.values())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the call writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash in WAL mode
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    from alembic import command
    from alembic.config import Config

    def upgrade(sync_connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "head")

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        await conn.run_sync(upgrade)

"""The one front door to the database: `Store.open` connects and migrates; `store.calls`,
`store.campaigns` and `store.cluster` are the only places SQL runs.

SQLite by default, PostgreSQL for production, through SQLAlchemy 2 async. Schema changes
are Alembic migrations in `bot/store/migrations/`, applied at start; on PostgreSQL an
advisory lock makes several instances starting together migrate once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.store.calls import CallRecords
from bot.store.campaigns import CampaignContacts
from bot.store.cluster import ClusterRecords

__all__ = ["Store"]

_MIGRATION_LOCK: Final = 0x6361_6C6C  # "call"


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.calls = CallRecords(engine)
        self.campaigns = CampaignContacts(engine)
        self.cluster = ClusterRecords(engine)

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect, create the SQLite file if needed, and migrate to the newest schema."""
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        await _migrate(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the call writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash in WAL mode
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


async def _migrate(engine: AsyncEngine) -> None:
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

"""The database schema: tables of the call log, of campaigns and of several instances working
as one, with UTC timestamps."""

from __future__ import annotations

import datetime as dt

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
)

__all__ = [
    "UtcDateTime",
    "call_events",
    "calls",
    "campaign_contacts",
    "cluster_instances",
    "live_calls",
    "metadata",
    "turns",
    "utcnow",
]


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

# Several instances sharing PostgreSQL: each one's heartbeat, and every call live anywhere
# (`ringing`: its webhook was answered; `streaming`: an instance serves its stream).
cluster_instances = Table(
    "cluster_instances",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
)

live_calls = Table(
    "live_calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("instance_id", String(64), index=True),
    Column("answered_by", String(32)),
    Column("updated_at", UtcDateTime, nullable=False),
)

"""Call log: calls, turns, call_events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from bot.store.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("stream_sid", sa.String(64)),
        sa.Column("direction", sa.String(32)),
        sa.Column("from_number", sa.String(64)),
        sa.Column("to_number", sa.String(64)),
        sa.Column("started_at", UtcDateTime),
        sa.Column("answered_at", UtcDateTime),
        sa.Column("ended_at", UtcDateTime),
        sa.Column("ended_by", sa.String(32)),
        sa.Column("end_reason", sa.Text),
        sa.Column("twilio_status", sa.String(32)),
        sa.Column("twilio_duration_s", sa.Integer),
        sa.Column("provider", sa.String(255)),
        sa.Column("model", sa.String(255)),
        sa.Column("dialect", sa.String(16)),
        sa.Column("audio_mode", sa.String(16)),
        sa.Column("recording_path", sa.Text),
        sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("interruptions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", UtcDateTime),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("speaker", sa.String(16), nullable=False),
        sa.Column("started_ms", sa.Integer),
        sa.Column("ended_ms", sa.Integer),
        sa.Column("text", sa.Text),
        sa.Column("heard_text", sa.Text),
        sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("latency_ms", sa.Integer),
        sa.UniqueConstraint("call_sid", "item_id", name="uq_turns_call_item"),
    )
    op.create_index("ix_turns_call_sid", "turns", ["call_sid"])
    op.create_table(
        "call_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("at_ms", sa.Integer),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("data", sa.JSON),
        sa.Column("created_at", UtcDateTime),
    )
    op.create_index("ix_call_events_call_sid", "call_events", ["call_sid"])


def downgrade() -> None:
    op.drop_table("call_events")
    op.drop_table("turns")
    op.drop_table("calls")

"""Several instances as one: their heartbeats, and the calls live anywhere.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from bot.store.schema import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_instances",
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("heartbeat_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "live_calls",
        sa.Column("call_sid", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.String(64), index=True),
        sa.Column("answered_by", sa.String(32)),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("live_calls")
    op.drop_table("cluster_instances")

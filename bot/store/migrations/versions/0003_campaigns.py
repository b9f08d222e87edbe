"""Campaign contacts and their calling state.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from bot.store.schema import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_contacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign", sa.String(128), nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("variables", sa.JSON),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UtcDateTime),
        sa.Column("call_sid", sa.String(64)),
        sa.Column("last_status", sa.String(32)),
        sa.Column("note", sa.Text),
        sa.Column("updated_at", UtcDateTime),
        sa.UniqueConstraint("campaign", "phone", name="uq_campaign_phone"),
    )
    op.create_index("ix_campaign_contacts_state", "campaign_contacts", ["campaign", "state"])


def downgrade() -> None:
    op.drop_table("campaign_contacts")

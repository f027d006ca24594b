"""holds, usage records and accounts.held_nano

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("held_nano", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("prompt_price_nano", sa.BigInteger(), nullable=False),
        sa.Column("completion_price_nano", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("amount_nano", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("resolved_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_holds_account_id_accounts"
        ),
    )
    op.create_index("ix_holds_account_id", "holds", ["account_id"])
    op.create_index("ix_holds_state_expires_ms", "holds", ["state", "expires_ms"])
    op.create_table(
        "usage_records",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_nano", sa.BigInteger(), nullable=False),
        sa.Column("held_nano", sa.BigInteger(), nullable=False),
        sa.Column("settled_by", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("capped", sa.Boolean(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("settled_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_usage_records"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["holds.id"], name="fk_usage_records_request_id_holds"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_usage_records_account_id_accounts"
        ),
    )
    op.create_index(
        "ix_usage_records_account_id_started_ms", "usage_records", ["account_id", "started_ms"]
    )


def downgrade() -> None:
    op.drop_table("usage_records")
    op.drop_table("holds")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("held_nano")

"""receipts and the transparency log: transparency_leaves, receipts, receipt_keys

The log's leaves are append-only rows keyed by their index; `entry_id` makes an
append of the same verdict or key idempotent. Receipts are stored signed, as the
canonical JSON the client verifies (hashes and counts only).

Revision ID: 0006_receipts_log
Revises: 0004_key_policy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_receipts_log"
down_revision = "0005_hold_lease_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transparency_leaves",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.String(128), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_transparency_leaves"),
        sa.UniqueConstraint("entry_id", name="uq_transparency_leaves_entry_id"),
    )
    op.create_table(
        "receipts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("signed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_receipts"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_receipts_account_id_accounts"
        ),
    )
    op.create_table(
        "receipt_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("private_key", sa.LargeBinary(32), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_receipt_keys"),
    )


def downgrade() -> None:
    op.drop_table("receipt_keys")
    op.drop_table("receipts")
    op.drop_table("transparency_leaves")

"""hold leases, progress checkpoints and idempotency keys

A running request renews its hold's lease (`expires_ms`, `renewed_ms`) and
checkpoints the output it has delivered (`output_bytes`): the reaper settles only
holds whose lease lapsed, at what the checkpoint shows was delivered. A hold
placed with a client's Idempotency-Key keeps the key's SHA-256 and the body's
(`idempotency_key`, `fingerprint`); the unique index is partial, so a hold without
a key (the common case) writes no index page for it.

Revision ID: 0005_hold_lease_idempotency
Revises: 0004_key_policy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_hold_lease_idempotency"
down_revision = "0004_key_policy"
branch_labels = None
depends_on = None

KEYED = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("holds") as batch:
        batch.add_column(sa.Column("renewed_ms", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("output_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("idempotency_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_index(
        "ux_holds_account_idempotency_key",
        "holds",
        ["account_id", "idempotency_key"],
        unique=True,
        sqlite_where=KEYED,
        postgresql_where=KEYED,
    )


def downgrade() -> None:
    op.drop_index("ux_holds_account_idempotency_key", table_name="holds")
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("fingerprint")
        batch.drop_column("idempotency_key")
        batch.drop_column("output_bytes")
        batch.drop_column("renewed_ms")

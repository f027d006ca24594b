"""key policy: api_keys.policy and spend budgets

api_keys.policy is one JSON text column rather than a column per clause (model
allow-list, attestation floor, token limit): the request path never queries by a
clause, it reads the whole policy with the key (and parses it once per distinct
text), and NULL, the common case, costs a key nothing.

budgets keeps each key's and account's spend budgets and what is held and spent
against them. Whether a hold moves them is known with its key (the auth cache) and
carried by the hold in memory, so a hold without a budget costs the ledger no extra
statement; the reaper, which reads holds back, asks the budgets table instead.

Revision ID: 0004_key_policy
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_key_policy"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("policy", sa.Text(), nullable=True))
    op.create_table(
        "budgets",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("limit_nano", sa.BigInteger(), nullable=False),
        sa.Column("period_start_ms", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("spent_nano", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("held_nano", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("account_id", "key_id", "period", name="pk_budgets"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_budgets_account_id_accounts"
        ),
    )


def downgrade() -> None:
    op.drop_table("budgets")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("policy")

"""dashboard: sign-in logins, invites, browser sessions and Stripe events posted

Each secret here (an invite token, a session token) is stored as its SHA-256: the
tokens are 256 random bits, so a plain hash is enough to make a stolen table
useless, and a lookup stays one indexed equality.

payment_events holds one row per Stripe event id that posted credit; its primary
key is what makes a webhook delivered twice, or replayed, post nothing the second
time (the credit is written in the same transaction as the row).

Revision ID: 0007_dashboard
Revises: 0004_key_policy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_dashboard"
down_revision = "0006_receipts_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "logins",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_logins"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_logins_account_id_accounts"
        ),
        sa.UniqueConstraint("email", name="uq_logins_email"),
    )
    op.create_table(
        "login_invites",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("used_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_login_invites"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_login_invites_account_id_accounts"
        ),
    )
    op.create_table(
        "dashboard_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_dashboard_sessions"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_dashboard_sessions_account_id_accounts"
        ),
    )
    op.create_table(
        "payment_events",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount_nano", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_payment_events"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_payment_events_account_id_accounts"
        ),
    )


def downgrade() -> None:
    op.drop_table("payment_events")
    op.drop_table("dashboard_sessions")
    op.drop_table("login_invites")
    op.drop_table("logins")

"""api_keys.policy: each key's own policy (model allow-list, attestation floor)

One JSON text column rather than a column per clause: the request path never
queries by a clause, it reads the whole policy with the key (and parses it once
per distinct text), and NULL, the common case, costs a key nothing.

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


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("policy")

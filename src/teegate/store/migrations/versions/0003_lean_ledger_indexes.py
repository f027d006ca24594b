"""fewer pages written per hold and settlement

Every b-tree a ledger write touches is one more page in that commit's WAL frames,
and at one request at a time each commit writes its own: the WAL traffic, not the
SQL, is what a request's two commits cost most. So:

- holds: no index on account_id (nothing reads holds by account but the admin's
  open-holds listing, which the open-holds index serves); the reaper's index only
  keeps open holds (partial), so it stays a page or two however many holds exist.
- usage_records (SQLite): WITHOUT ROWID, so the row lives in its primary key's
  b-tree instead of a table b-tree plus an index on request_id.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OPEN = sa.text("state = 'open'")


def upgrade() -> None:
    op.drop_index("ix_holds_account_id", table_name="holds")
    op.drop_index("ix_holds_state_expires_ms", table_name="holds")
    op.create_index(
        "ix_holds_open_expires_ms",
        "holds",
        ["expires_ms"],
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_usage_records(with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_usage_records(with_rowid=True)
    op.drop_index("ix_holds_open_expires_ms", table_name="holds")
    op.create_index("ix_holds_state_expires_ms", "holds", ["state", "expires_ms"])
    op.create_index("ix_holds_account_id", "holds", ["account_id"])


def _rebuild_usage_records(*, with_rowid: bool) -> None:
    """Nothing references usage_records, so SQLite's copy-and-rename rebuild is safe."""
    with op.batch_alter_table(
        "usage_records", recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}
    ):
        pass

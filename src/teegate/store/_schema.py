"""Tables. Alembic's migrations create them; this module is what code queries.

Times are integer epoch milliseconds and money integer nano-USD on every engine,
so SQLite and PostgreSQL compare and add them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("balance_nano", BigInteger, nullable=False, server_default="0"),
    Column("created_ms", BigInteger, nullable=False),
    # the sum of open holds; available = balance_nano - held_nano, never negative
    Column("held_nano", BigInteger, nullable=False, server_default="0"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("amount_nano", BigInteger, nullable=False),
    Column("reference", String(64), nullable=True, unique=True),
    Column("memo", String(128), nullable=False, server_default=""),
    Column("created_ms", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(64), nullable=False, server_default=""),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("hint", String(32), nullable=False),
    Column("rpm", Integer, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    # The key's policy as JSON (apikeys.KeyPolicy); NULL for none (migration 0004_key_policy).
    Column("policy", Text, nullable=True),
)

OPEN = text("state = 'open'")

# A pending debit, placed before the upstream call. Its id is the request id:
# the idempotency key that makes settlement exactly-once. State moves once,
# from 'open' to 'posted', 'voided' or 'expired'; rows are kept as the audit trail.
# Indexes are few on purpose: each is one more page in every hold's commit
# (migration 0003 says why).
KEYED = text("idempotency_key IS NOT NULL")

holds = Table(
    "holds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("prompt_price_nano", BigInteger, nullable=False),
    Column("completion_price_nano", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("amount_nano", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("resolved_ms", BigInteger, nullable=True),
    # the lease: the running request renews expires_ms, and checkpoints what it has
    # delivered, which is what the reaper charges if the lease lapses
    Column("renewed_ms", BigInteger, nullable=True),
    Column("output_bytes", BigInteger, nullable=False, server_default="0"),
    # a client's Idempotency-Key (SHA-256, hex) and its request body's, never the body
    Column("idempotency_key", String(64), nullable=True),
    Column("fingerprint", String(64), nullable=True),
    Index("ix_holds_open_expires_ms", "expires_ms", sqlite_where=OPEN, postgresql_where=OPEN),
    Index(
        "ux_holds_account_idempotency_key",
        "account_id",
        "idempotency_key",
        unique=True,
        sqlite_where=KEYED,
        postgresql_where=KEYED,
    ),
)

# Spend budgets: one row per key (key_id) or account (key_id '') and period ('day',
# 'month', 'lifetime'). held_nano counts the open budgeted holds against it, and
# spent_nano what settled in the period starting at period_start_ms; a write in a later
# period counts spent as 0 first (billing._budget). Rows change only while their
# account's row is locked by the same transaction, so a budget is decided exactly as
# the balance is.
budgets = Table(
    "budgets",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("limit_nano", BigInteger, nullable=False),
    Column("period_start_ms", BigInteger, nullable=False, server_default="0"),
    Column("spent_nano", BigInteger, nullable=False, server_default="0"),
    Column("held_nano", BigInteger, nullable=False, server_default="0"),
)

# One row per settled request: tokens, cost, how it was settled and timings.
# Never any prompt or completion text.
usage_records = Table(
    "usage_records",
    metadata,
    Column("request_id", String(64), ForeignKey("holds.id"), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cost_nano", BigInteger, nullable=False),
    Column("held_nano", BigInteger, nullable=False),
    Column("settled_by", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("capped", Boolean, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("settled_ms", BigInteger, nullable=False),
    Index("ix_usage_records_account_id_started_ms", "account_id", "started_ms"),
    sqlite_with_rowid=False,
)

# The transparency log (migration 0006_receipts_log): one row per leaf, a verdict or a
# receipt key as canonical JSON, indexed from 0 without gaps. Rows are only ever
# inserted; an append takes the next indices under a lock (PostgreSQL: an advisory
# lock; SQLite: its one writer), so replicas share one log.
transparency_leaves = Table(
    "transparency_leaves",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("entry_id", String(128), nullable=False, unique=True),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# Signed receipts: hashes and counts only (never text), read by their owner.
receipts = Table(
    "receipts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("signed", LargeBinary, nullable=False),
)

# Ed25519 receipt keys, oldest first; the newest signs, older ones stay valid (each is
# a leaf of the log), so a rotation overlaps.
receipt_keys = Table(
    "receipt_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("private_key", LargeBinary(32), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# The dashboard (migration 0007_dashboard). An account may have one login: an email
# and, once set, an argon2 password hash. Invite and session tokens are stored as
# their SHA-256 only.
logins = Table(
    "logins",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
)

login_invites = Table(
    "login_invites",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("used_ms", BigInteger, nullable=True),
)

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)

# One row per Stripe event that posted credit: the primary key makes a replayed or
# redelivered event post nothing (written in the credit's own transaction).
payment_events = Table(
    "payment_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount_nano", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

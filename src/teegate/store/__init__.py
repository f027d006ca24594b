"""Storage: schema, migrations and repositories over SQLite or PostgreSQL. No HTTP here."""

from teegate.errors import StoreConflict, StoreNotFound
from teegate.store._accounts import (
    Account,
    AccountStore,
    ApiKey,
    KeyOwner,
    now_ms,
)
from teegate.store._dashboard import DashboardStore, LedgerEntry, Login, UsageDay
from teegate.store._database import create_engine, ping
from teegate.store._group import GroupCommitter, writer_for
from teegate.store._ledger import Ledger
from teegate.store._migrate import is_current, upgrade
from teegate.store._outage import (
    OUTAGE_VERDICTS,
    OutageVerdict,
    asyncpg_outage_verdicts,
    is_outage,
    is_retryable,
)
from teegate.store._receipts import ReceiptLog
from teegate.store._schema import metadata
from teegate.store._writers import Writer

__all__ = [
    "OUTAGE_VERDICTS",
    "Account",
    "AccountStore",
    "ApiKey",
    "DashboardStore",
    "GroupCommitter",
    "KeyOwner",
    "Ledger",
    "LedgerEntry",
    "Login",
    "OutageVerdict",
    "ReceiptLog",
    "StoreConflict",
    "StoreNotFound",
    "UsageDay",
    "Writer",
    "asyncpg_outage_verdicts",
    "create_engine",
    "is_current",
    "is_outage",
    "is_retryable",
    "metadata",
    "now_ms",
    "ping",
    "upgrade",
    "writer_for",
]

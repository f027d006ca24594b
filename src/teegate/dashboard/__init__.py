"""The web dashboard: server-rendered pages (Jinja2) for an account's keys, balance,
ledger, usage, receipts and the catalog, and the billing page with Stripe top-up.

An edge like `api/`: its pages reach accounts, keys, payments and receipts only
through the Protocols here (`Console`, `TopUp`, `Receipts`), which `app.py` wires to
`teegate.console`, `teegate.payments` and `teegate.receipts`; nothing here reaches
the store.
"""

from teegate.dashboard._chart import Chart, usage_chart
from teegate.dashboard._pages import dashboard_routes, invite_link
from teegate.dashboard._security import CSRF_FIELD, PRESESSION_COOKIE, SESSION_COOKIE
from teegate.dashboard._services import (
    Console,
    Dashboard,
    DayUsage,
    KeyRow,
    LedgerRow,
    NewKey,
    Receipts,
    TopUp,
)

__all__ = [
    "CSRF_FIELD",
    "PRESESSION_COOKIE",
    "SESSION_COOKIE",
    "Chart",
    "Console",
    "Dashboard",
    "DayUsage",
    "KeyRow",
    "LedgerRow",
    "NewKey",
    "Receipts",
    "TopUp",
    "dashboard_routes",
    "invite_link",
    "usage_chart",
]

"""The ledger's writes on SQLite: separate statements in the writer's transaction.

The SQLite writer (`_sqlite_writer.py`) runs `apply` for each write of a batch, in
order, inside one BEGIN IMMEDIATE ... COMMIT on its own sqlite3 connection: plain
SQL, no SQLAlchemy, since these few statements are every request's.

A hold is one conditional UPDATE, so no read-then-write race can overdraw an
account; the hold's row follows only if it fitted. A settlement claims the hold
with a conditional UPDATE too, so a second settlement of the same request changes
nothing (exactly once); the release, the debit and the usage record follow it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from teegate.billing import Hold, Placement, Settlement
from teegate.store._ledger_budgets import (
    SQLITE_HOLD,
    SQLITE_OVER,
    SQLITE_SETTLE,
    SQLITE_UNHOLD,
    budget_use,
    hold_params,
    settle_params,
)
from teegate.store._ledger_rows import (
    DEBIT_COLUMNS,
    HOLD_COLUMNS,
    KEYED_HOLD_COLUMNS,
    PRIOR_IS_FREE,
    USAGE_COLUMNS,
    LedgerWrite,
    hold_row,
    keyed_hold_row,
    names,
    placed,
    prior_hold,
    refused,
    unclaimed,
    usage_row,
)
from teegate.store._schema import holds, usage_records


def apply(conn: sqlite3.Connection, write: LedgerWrite) -> Placement | bool:
    """Run one write inside the caller's transaction; what its kind returns."""
    if isinstance(write, Hold):
        return place_hold(conn, write)
    return settle(conn, write)


_HOLD_IF_IT_FITS = (
    "UPDATE accounts SET held_nano = held_nano + ?1"
    " WHERE id = ?2 AND balance_nano - held_nano >= ?1"
    " RETURNING balance_nano, held_nano"
)
_AVAILABLE = "SELECT balance_nano - held_nano FROM accounts WHERE id = ?"
_INSERT_HOLD = (
    f"INSERT INTO holds ({names(holds, HOLD_COLUMNS)})"  # noqa: S608 (constants only)
    f" VALUES ({', '.join('?' * len(HOLD_COLUMNS))})"
)


_PRIOR = "SELECT id, state, fingerprint FROM holds WHERE account_id = ? AND idempotency_key = ?"
_FREE_KEY = "UPDATE holds SET idempotency_key = NULL WHERE id = ?"
_INSERT_KEYED_HOLD = (
    f"INSERT INTO holds ({names(holds, KEYED_HOLD_COLUMNS)})"  # noqa: S608 (constants only)
    f" VALUES ({', '.join('?' * len(KEYED_HOLD_COLUMNS))})"
)


def place_hold(conn: sqlite3.Connection, hold: Hold) -> Placement:
    """One conditional UPDATE decides; the hold row follows in the same transaction.
    A hold with an Idempotency-Key first looks for the account's hold with that key
    (the writer's transaction holds the database's write lock, so no other can race)."""
    if hold.idempotency_key is not None:
        prior = conn.execute(_PRIOR, (hold.account_id, hold.idempotency_key)).fetchone()
        if prior is not None and prior[1] != PRIOR_IS_FREE:
            available = conn.execute(_AVAILABLE, (hold.account_id,)).fetchone()
            return replace(refused(available), prior=prior_hold(hold, prior))
        if prior is not None:
            conn.execute(_FREE_KEY, (prior[0],))
    row = conn.execute(_HOLD_IF_IT_FITS, (hold.amount_nano, hold.account_id)).fetchone()
    if row is None:
        available = conn.execute(_AVAILABLE, (hold.account_id,)).fetchone()
        return refused(available)
    if hold.budgeted:
        params = hold_params(hold)
        over = conn.execute(SQLITE_OVER, params).fetchone()
        if over is not None:
            conn.execute(SQLITE_UNHOLD, (hold.amount_nano, hold.account_id))
            return Placement(False, row[0] - row[1] + hold.amount_nano, budget_use(over))
        conn.execute(SQLITE_HOLD, params)
    if hold.idempotency_key is None:
        conn.execute(_INSERT_HOLD, hold_row(hold))
    else:
        conn.execute(_INSERT_KEYED_HOLD, keyed_hold_row(hold))
    return placed(hold, row[0], row[1])


_CLAIM_OPEN_HOLD = (
    "UPDATE holds SET state = ?, resolved_ms = ?"
    " WHERE id = ? AND state = 'open' AND account_id = ? AND amount_nano = ?"
)
_RELEASE_AND_DEBIT = (
    "UPDATE accounts SET held_nano = held_nano - ?, balance_nano = balance_nano - ? WHERE id = ?"
)
_INSERT_DEBIT = f"INSERT INTO ledger_entries ({DEBIT_COLUMNS}) VALUES (?, 'debit', ?, ?, ?, ?)"  # noqa: S608
_INSERT_USAGE = (
    f"INSERT INTO usage_records ({names(usage_records, USAGE_COLUMNS)})"  # noqa: S608 (constants)
    f" VALUES ({', '.join('?' * len(USAGE_COLUMNS))})"
)
_OPEN_HOLD = "SELECT account_id, amount_nano FROM holds WHERE id = ? AND state = 'open'"


def settle(conn: sqlite3.Connection, settlement: Settlement) -> bool:
    """Resolve the hold if still open; post the debit and write the usage record.

    The claim matches the hold's account and amount too, so a settlement that does
    not match its hold changes nothing before the invariant reports it.
    """
    hold = settlement.hold
    claimed = conn.execute(
        _CLAIM_OPEN_HOLD,
        (settlement.hold_state, settlement.settled_ms, hold.request_id, hold.account_id,
         hold.amount_nano),
    ).rowcount  # fmt: skip
    if claimed == 0:
        return unclaimed(hold, conn.execute(_OPEN_HOLD, (hold.request_id,)).fetchone())
    conn.execute(_RELEASE_AND_DEBIT, (hold.amount_nano, settlement.cost_nano, hold.account_id))
    if hold.budgeted:
        conn.execute(SQLITE_SETTLE, settle_params(settlement))
    if settlement.cost_nano > 0:
        conn.execute(
            _INSERT_DEBIT,
            (hold.account_id, -settlement.cost_nano, hold.request_id, settlement.settled_by,
             settlement.settled_ms),
        )  # fmt: skip
    conn.execute(_INSERT_USAGE, usage_row(settlement))
    return True

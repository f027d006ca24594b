"""What every ledger backend shares: its rows' columns, records as rows and rows as
records, and the results each write reports the same way on every engine.

The writes bind rows by position (`hold_row`, `usage_row`), against column lists
written once here, so the SQLite and PostgreSQL statements cannot disagree on them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, select

from teegate.billing import Hold, Placement, PriorHold, Rates, Settlement, UsageRecord
from teegate.invariants import invariant
from teegate.store._schema import accounts, ledger_entries, usage_records

LedgerWrite = Hold | Settlement
"""A write the ledger's writers run: a hold to place, or a settlement to apply."""

HOLD_COLUMNS = (
    "id", "account_id", "key_id", "model", "stream", "prompt_price_nano",
    "completion_price_nano", "prompt_tokens", "completion_tokens", "amount_nano", "state",
    "created_ms", "expires_ms",
)  # fmt: skip
USAGE_COLUMNS = (
    "request_id", "account_id", "key_id", "model", "stream", "prompt_tokens",
    "completion_tokens", "cost_nano", "held_nano", "settled_by", "status", "capped",
    "started_ms", "settled_ms",
)  # fmt: skip


def names(table: Table, columns: tuple[str, ...]) -> str:
    return ", ".join(table.c[name].name for name in columns)  # a typo fails at import


KEYED_HOLD_COLUMNS = (*HOLD_COLUMNS, "idempotency_key", "fingerprint")
"""A hold placed with an Idempotency-Key: the key and body hashes follow its row."""


def keyed_hold_row(hold: Hold) -> tuple[Any, ...]:
    return (*hold_row(hold), hold.idempotency_key, hold.fingerprint)


def prior_hold(hold: Hold, row: Any) -> PriorHold:
    """The hold that has `hold`'s Idempotency-Key: (id, state, fingerprint) as read."""
    return PriorHold(row[0], row[1], row[2] == hold.fingerprint)


PRIOR_IS_FREE = "voided"
"""A key whose hold was voided (nothing delivered, nothing charged) may be used again:
its retry is the first request that runs."""

DEBIT_COLUMNS = names(
    ledger_entries, ("account_id", "kind", "amount_nano", "reference", "memo", "created_ms")
)


def hold_row(hold: Hold) -> tuple[Any, ...]:
    return (
        hold.request_id, hold.account_id, hold.key_id, hold.model, hold.stream,
        hold.rates.prompt_nano_per_mtok, hold.rates.completion_nano_per_mtok,
        hold.prompt_tokens, hold.completion_tokens, hold.amount_nano, "open",
        hold.created_ms, hold.expires_ms,
    )  # fmt: skip


def usage_row(settlement: Settlement) -> tuple[Any, ...]:
    hold = settlement.hold
    return (
        hold.request_id, hold.account_id, hold.key_id, hold.model, hold.stream,
        settlement.prompt_tokens, settlement.completion_tokens, settlement.cost_nano,
        hold.amount_nano, settlement.settled_by, settlement.status, settlement.capped,
        hold.created_ms, settlement.settled_ms,
    )  # fmt: skip


def placed(hold: Hold, balance_nano: int, held_nano: int) -> Placement:
    invariant(held_nano <= balance_nano, f"hold {hold.request_id} overdrew its account")
    return Placement(True, balance_nano - held_nano + hold.amount_nano)


def refused(available: Any) -> Placement:
    return Placement(False, int(available[0]) if available is not None else 0)


def unclaimed(hold: Hold, open_hold: Any) -> bool:
    """No open hold matched: resolved already (False), unless the open hold by that id
    is another account's or amount (a bug, reported before anything changed)."""
    invariant(
        open_hold is None or (open_hold[0], open_hold[1]) == (hold.account_id, hold.amount_nano),
        f"settlement of {hold.request_id} does not match its hold",
    )
    return False


def hold_record(row: Any) -> Hold:
    return Hold(
        request_id=row.id,
        account_id=row.account_id,
        key_id=row.key_id,
        model=row.model,
        stream=bool(row.stream),
        rates=Rates(row.prompt_price_nano, row.completion_price_nano),
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        amount_nano=row.amount_nano,
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
        budgeted=bool(row.budgeted),
        idempotency_key=row.idempotency_key,
        fingerprint=row.fingerprint,
        output_bytes=row.output_bytes,
    )


def usage_select() -> Select[Any]:
    return (
        select(usage_records, accounts.c.name.label("account_name"))
        .join(accounts, accounts.c.id == usage_records.c.account_id)
        .order_by(usage_records.c.started_ms.desc(), usage_records.c.request_id)
    )


def usage_record(row: Any) -> UsageRecord:
    return UsageRecord(
        request_id=row.request_id,
        account_id=row.account_id,
        account=row.account_name,
        key_id=row.key_id,
        model=row.model,
        stream=bool(row.stream),
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_nano=row.cost_nano,
        held_nano=row.held_nano,
        settled_by=row.settled_by,
        status=row.status,
        capped=bool(row.capped),
        started_ms=row.started_ms,
        settled_ms=row.settled_ms,
    )

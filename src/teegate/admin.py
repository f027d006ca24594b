"""The operator's operations on accounts, credit, keys, limits and usage: one service
that the `teegate` command and the admin API (`/admin/v1`) both call, so each
operation is done one way whichever door it comes through.

Answers are JSON-ready: money as decimal USD strings beside exact nano-USD integers,
never floats; a created or rotated key's secret appears in that one answer only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from teegate import apikeys, auth
from teegate.apikeys import KEEP, KeyChange, KeyPolicy
from teegate.billing import (
    BUDGET_PERIODS,
    Balance,
    LedgerStore,
    UsageQuery,
    describe_budget,
    describe_generation,
    iso_utc,
    nano_to_usd,
    wall_ms,
)
from teegate.config import Settings
from teegate.errors import ConfigError, PolicyError
from teegate.store import Account, AccountStore, ApiKey


async def _nothing_under_way() -> None:
    return None


class Admin:
    """Accounts, credit, keys and usage, as the operator manages them.

    `settled` waits for this process's settlements under way (the gateway's meter),
    so usage read right after an answer includes it; the command has none.
    """

    def __init__(
        self,
        store: AccountStore,
        ledger: LedgerStore,
        settings: Settings,
        *,
        settled: Callable[[], Awaitable[None]] = _nothing_under_way,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._settings = settings
        self._settled = settled

    def __repr__(self) -> str:
        return "Admin()"

    # ---- accounts and credit ----

    async def create_account(self, name: str, credit_nano: int | None = None) -> dict[str, Any]:
        if not name.strip():
            raise PolicyError("name: an account needs a name")
        await self._store.create_account(name)
        if credit_nano is not None:
            await self._store.credit(name, credit_nano, memo="initial credit")
        return await self.get_account(name)

    async def list_accounts(self) -> list[dict[str, Any]]:
        return [describe_account(a) for a in await self._store.list_accounts()]

    async def get_account(self, name: str) -> dict[str, Any]:
        """With its holds and what is available, and its own spend budgets."""
        await self._settled()
        account = await self._store.get_account(name)
        balance = await self._ledger.balance(account.id) or Balance(account.id, 0, 0)
        budgets = await self._ledger.budgets(account.id, "", wall_ms())
        return describe_account(account) | {
            "held": nano_to_usd(balance.held_nano),
            "available": nano_to_usd(balance.available_nano),
            "budgets": [describe_budget(b) for b in budgets if b.key_id is None],
        }

    async def credit(self, name: str, amount_nano: int, memo: str = "credit") -> dict[str, Any]:
        account = await self._store.credit(name, amount_nano, memo=memo)
        return describe_account(account)

    async def set_budgets(
        self, account: str, budgets: Mapping[str, int | None], key_id: str | None = None
    ) -> None:
        """Set (an amount) or drop (None) spend budgets by period, the account's own
        or (key_id) one key's; every period is checked before any is written."""
        _check_periods(budgets)
        for period, limit_nano in budgets.items():
            await self._store.set_budget(account, key_id, period, limit_nano)

    # ---- keys ----

    async def create_key(
        self,
        account: str,
        *,
        name: str = "",
        rpm: int | None = None,
        policy: KeyPolicy | None = None,
        budgets: Mapping[str, int | None] | None = None,
    ) -> dict[str, Any]:
        """The key with its secret (`key`), shown here once and never stored."""
        policy = policy or KeyPolicy()
        auth.check_policy(policy, self._settings)
        _check_periods(budgets or {})
        token, key = await auth.issue_key(
            self._store,
            account=account,
            prefix=self._settings.key_prefix,
            secret=self._key_secret(),
            name=name,
            rpm=rpm,
            policy=policy,
        )
        await self.set_budgets(account, budgets or {}, key.id)
        return await self.get_key(key.id) | {"key": token}

    async def list_keys(self, account: str | None = None) -> list[dict[str, Any]]:
        if account is not None:
            await self._store.get_account(account)  # an unknown name is an error, not []
        return [describe_key(k) for k in await self._store.list_keys(account)]

    async def get_key(self, key_id: str) -> dict[str, Any]:
        """With the key's spend budgets and its account's, as they stand now."""
        await self._settled()
        key = await self._store.get_key(key_id)
        budgets = await self._ledger.budgets(key.account_id, key.id, wall_ms())
        return describe_key(key) | {"budgets": [describe_budget(b) for b in budgets]}

    async def update_key(self, key_id: str, change: KeyChange) -> dict[str, Any]:
        key = await self._store.get_key(key_id)
        policy = change.applied_to(apikeys.load_policy(key.policy) or KeyPolicy())
        auth.check_policy(policy, self._settings)
        budgets = change.budgets or {}
        _check_periods(budgets)
        rpm = key.rpm if change.rpm is KEEP else change.rpm
        await self._store.update_key(key_id, rpm=rpm, policy=policy.dumps())
        await self.set_budgets(key.account_name, budgets, key.id)
        return await self.get_key(key_id)

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        return describe_key(await self._store.revoke_key(key_id))

    async def rotate_key(self, key_id: str) -> dict[str, Any]:
        """A new key with the old one's account, name, limit and policy; the old one is
        revoked. The new secret (`key`) is shown here once."""
        token, key = await auth.rotate_key(
            self._store, key_id, prefix=self._settings.key_prefix, secret=self._key_secret()
        )
        return await self.get_key(key.id) | {"key": token, "replaces": key_id}

    # ---- usage ----

    async def usage(
        self, *, account: str | None = None, since_ms: int | None = None, limit: int
    ) -> list[dict[str, Any]]:
        """One record per request, newest first, each with its account's name."""
        if account is not None:
            await self._store.get_account(account)  # an unknown name is an error, not []
        await self._settled()
        query = UsageQuery(limit=limit, account_name=account, since_ms=since_ms)
        records = await self._ledger.usage(query)
        return [{"account": r.account, **describe_generation(r)} for r in records]

    def _key_secret(self) -> bytes:
        secret = self._settings.key_hash_secret
        if secret is None:
            raise ConfigError(
                "key_hash_secret is not set (TEEGATE_KEY_HASH_SECRET or key_hash_secret_file)"
            )
        return secret.get_secret_value().encode()


def _check_periods(budgets: Mapping[str, int | None]) -> None:
    """Every period checked before anything is written: a bad one changes nothing."""
    for period in budgets:
        if period not in BUDGET_PERIODS:
            raise PolicyError(
                f"budget period '{period}': expected one of {', '.join(BUDGET_PERIODS)}"
            )


def describe_account(account: Account) -> dict[str, Any]:
    return {
        "object": "account",
        "id": account.id,
        "name": account.name,
        "balance": nano_to_usd(account.balance_nano),
        "balance_nano": account.balance_nano,
        "created_at": iso_utc(account.created_ms),
    }


def describe_key(key: ApiKey) -> dict[str, Any]:
    """A key as operators see it: never its secret or hash, only its hint."""
    policy = apikeys.load_policy(key.policy) or KeyPolicy()
    return {
        "id": key.id,
        "object": "api_key",
        "account": key.account_name,
        "name": key.name,
        "hint": key.hint,
        "rpm": key.rpm,
        "active": key.active,
        "created_at": iso_utc(key.created_ms),
        "revoked_at": iso_utc(key.revoked_ms) if key.revoked_ms is not None else None,
        "policy": policy.to_json(),
    }

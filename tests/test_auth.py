"""auth.py and apikeys.py: key format, hashing, resolution, the 1 s cache, issue/rotate."""

from __future__ import annotations

import asyncio
import dataclasses
import string
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from teegate import apikeys, auth
from teegate.apikeys import Principal
from teegate.auth import (
    KEY_CACHE_TTL_S,
    KEY_IDLE_S,
    KEY_REFRESH_S,
    Authenticator,
    issue_key,
    rotate_key,
)
from teegate.errors import InvalidApiKey, ServiceUnavailable
from teegate.store import AccountStore, KeyOwner, StoreNotFound, create_engine, upgrade

PREFIX = "vgpu_sk_"
SECRET = b"unit-test-hash-secret"
BODY = "A" * 21 + "z" * 21 + "9"  # 43 base62 characters
KEY = PREFIX + BODY

# apikeys ---------------------------------------------------------------------


def test_generated_keys_are_well_formed_and_unique() -> None:
    keys = {apikeys.generate_key(PREFIX) for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith(PREFIX)
        assert len(key) == len(PREFIX) + 43
        assert set(key[len(PREFIX) :]) <= set(string.ascii_letters + string.digits)
        assert apikeys.is_well_formed(key, PREFIX)


def test_generated_key_ids() -> None:
    ids = {apikeys.generate_key_id() for _ in range(50)}
    assert len(ids) == 50
    for key_id in ids:
        assert key_id.startswith("key_")
        assert len(key_id) == 4 + 16
        assert len(key_id) <= 32  # fits api_keys.id


def test_base62_alphabet() -> None:
    assert len(apikeys.BASE62) == 62
    assert len(set(apikeys.BASE62)) == 62
    assert apikeys.SECRET_CHARS == 43
    assert 62**43 > 2**256


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        (KEY, True),
        (PREFIX + "0" * 43, True),
        (PREFIX + BODY[:-1], False),  # 42 characters
        (KEY + "a", False),  # 44 characters
        ("sk_" + BODY, False),  # wrong prefix
        ("VGPU_SK_" + BODY, False),  # the prefix is case-sensitive
        (PREFIX[:-1] + BODY + "a", False),  # prefix cut short
        (PREFIX + BODY[:-1] + "-", False),
        (PREFIX + BODY[:-1] + "_", False),
        (PREFIX + BODY[:-1] + " ", False),
        (PREFIX + BODY[:-1] + "é", False),
        (PREFIX + BODY[:-1] + "٣", False),  # a non-ASCII digit
        (BODY, False),
        ("", False),
    ],
)
def test_is_well_formed(token: str, ok: bool) -> None:
    assert apikeys.is_well_formed(token, PREFIX) is ok


def test_hash_key_is_keyed_hmac_sha256() -> None:
    digest = apikeys.hash_key(KEY, SECRET)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert digest == apikeys.hash_key(KEY, SECRET)
    assert digest != apikeys.hash_key(KEY, b"another-secret")
    assert digest != apikeys.hash_key(KEY[:-1] + "8", SECRET)
    assert BODY not in digest


def test_same_hash() -> None:
    digest = apikeys.hash_key(KEY, SECRET)
    assert apikeys.same_hash(digest, digest)
    assert not apikeys.same_hash(digest, digest[:-1] + ("0" if digest[-1] != "0" else "1"))


def test_key_hint_shows_only_the_last_four() -> None:
    hint = apikeys.key_hint(KEY, PREFIX)
    assert hint == f"{PREFIX}...{KEY[-4:]}"
    assert BODY[:-4] not in hint
    assert len(hint) <= 32  # fits api_keys.hint


# Authenticator with a fake lookup ----------------------------------------------


class FakeLookup:
    """A KeyLookup over a dict, counting the queries the cache did not save."""

    def __init__(self) -> None:
        self.owners: dict[str, KeyOwner] = {}
        self.calls = 0
        self.asked: list[list[str]] = []
        self.down = False

    def add(self, token: str, *, key_id: str = "key_1", rpm: int | None = 60) -> KeyOwner:
        key_hash = apikeys.hash_key(token, SECRET)
        owner = KeyOwner(key_id, key_hash, account_id=7, rpm=rpm, revoked=False)
        self.owners[key_hash] = owner
        return owner

    def revoke(self, token: str) -> None:
        key_hash = apikeys.hash_key(token, SECRET)
        self.owners[key_hash] = dataclasses.replace(self.owners[key_hash], revoked=True)

    async def find_key_owners(self, key_hashes: Sequence[str]) -> dict[str, KeyOwner]:
        self.calls += 1
        self.asked.append(list(key_hashes))
        if self.down:
            raise ServiceUnavailable("the database is down")
        await asyncio.sleep(0)  # a real lookup yields: concurrent callers overlap
        return {h: self.owners[h] for h in key_hashes if h in self.owners}


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


@pytest.fixture
def lookup() -> FakeLookup:
    return FakeLookup()


@pytest.fixture
def authenticator(lookup: FakeLookup) -> Authenticator:
    return Authenticator(lookup, prefix=PREFIX, secret=SECRET)


async def test_valid_key_resolves_to_its_principal(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY, key_id="key_abc", rpm=42)
    principal = await authenticator.authenticate(f"Bearer {KEY}")
    assert principal == Principal(key_id="key_abc", account_id=7, rpm=42)


@pytest.mark.parametrize(
    "header",
    [f"bearer {KEY}", f"BEARER {KEY}", f"Bearer   {KEY}  ", f"Bearer {KEY}\t"],
)
async def test_bearer_scheme_is_case_insensitive_and_trimmed(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock, header: str
) -> None:
    lookup.add(KEY)
    assert (await authenticator.authenticate(header)).key_id == "key_1"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "You didn't provide an API key"),
        ("", "You didn't provide an API key"),
        ("Bearer", "Send the API key as 'Authorization: Bearer <key>'"),
        ("Bearer    ", "Send the API key as 'Authorization: Bearer <key>'"),
        (f"Basic {KEY}", "Send the API key as 'Authorization: Bearer <key>'"),
        (KEY, "Send the API key as 'Authorization: Bearer <key>'"),
        (f"Bearer {KEY[:-1]}", "Malformed API key"),
        (f"Bearer sk-{BODY}", "Malformed API key"),
        (f"Bearer {KEY}!", "Malformed API key"),
    ],
)
async def test_missing_or_malformed_key(
    authenticator: Authenticator,
    lookup: FakeLookup,
    clock: Clock,
    header: str | None,
    message: str,
) -> None:
    lookup.add(KEY)
    with pytest.raises(InvalidApiKey, match=message) as info:
        await authenticator.authenticate(header)
    assert (info.value.status, info.value.error_code) == (401, "invalid_api_key")
    assert lookup.calls == 0  # refused without a query
    assert BODY not in info.value.message


async def test_unknown_key(authenticator: Authenticator, lookup: FakeLookup, clock: Clock) -> None:
    lookup.add(KEY)
    other = PREFIX + "b" * 43
    with pytest.raises(InvalidApiKey, match="Incorrect API key provided"):
        await authenticator.authenticate(f"Bearer {other}")
    assert lookup.calls == 1


async def test_key_under_another_secret_is_unknown(lookup: FakeLookup, clock: Clock) -> None:
    lookup.add(KEY)
    other_server = Authenticator(lookup, prefix=PREFIX, secret=b"a-different-secret")
    with pytest.raises(InvalidApiKey):
        await other_server.authenticate(f"Bearer {KEY}")


async def test_revoked_key(authenticator: Authenticator, lookup: FakeLookup, clock: Clock) -> None:
    lookup.add(KEY)
    lookup.revoke(KEY)
    with pytest.raises(InvalidApiKey, match="revoked"):
        await authenticator.authenticate(f"Bearer {KEY}")


async def test_owner_with_a_different_hash_is_refused(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    """The constant-time recheck: a lookup answering for another hash grants nothing."""
    key_hash = apikeys.hash_key(KEY, SECRET)
    lookup.owners[key_hash] = KeyOwner("key_x", "0" * 64, 7, None, revoked=False)
    with pytest.raises(InvalidApiKey):
        await authenticator.authenticate(f"Bearer {KEY}")


async def test_cache_saves_queries_within_the_ttl(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    for _ in range(5):
        await authenticator.authenticate(f"Bearer {KEY}")
        clock.now += KEY_CACHE_TTL_S / 10
    assert lookup.calls == 1


async def test_revoked_key_stops_working_after_the_ttl(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    assert KEY_CACHE_TTL_S == 1.0
    lookup.add(KEY)
    await authenticator.authenticate(f"Bearer {KEY}")
    lookup.revoke(KEY)
    clock.now += 0.999
    assert (await authenticator.authenticate(f"Bearer {KEY}")).key_id == "key_1"  # cached
    clock.now += 0.001  # exactly the TTL: the entry has expired
    with pytest.raises(InvalidApiKey):
        await authenticator.authenticate(f"Bearer {KEY}")
    assert lookup.calls == 2


async def test_unknown_results_are_cached_too(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    with pytest.raises(InvalidApiKey):
        await authenticator.authenticate(f"Bearer {KEY}")
    lookup.add(KEY)
    with pytest.raises(InvalidApiKey):
        await authenticator.authenticate(f"Bearer {KEY}")
    assert lookup.calls == 1
    clock.now += KEY_CACHE_TTL_S + 0.01
    assert (await authenticator.authenticate(f"Bearer {KEY}")).account_id == 7
    assert lookup.calls == 2


async def test_cache_is_bounded(
    authenticator: Authenticator,
    lookup: FakeLookup,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "KEY_CACHE_MAX_ENTRIES", 3)
    tokens = [PREFIX + c * 43 for c in "abcd"]
    for token in tokens:
        lookup.add(token)
        await authenticator.authenticate(f"Bearer {token}")
    assert len(authenticator._cache) <= 3
    assert lookup.calls == 4


async def test_concurrent_requests_for_an_unknown_key_share_one_query(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    principals = await asyncio.gather(
        *(authenticator.authenticate(f"Bearer {KEY}") for _ in range(20))
    )
    assert {p.key_id for p in principals} == {"key_1"}
    assert lookup.calls == 1


async def test_a_flood_of_unknown_keys_costs_one_query_at_a_time(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    """Each of 2,000 random keys once cost a query and a pooled connection of its own."""
    lookup.add(KEY)
    flood = [apikeys.generate_key(PREFIX) for _ in range(2000)]
    results = await asyncio.gather(
        authenticator.authenticate(f"Bearer {KEY}"),
        *(authenticator.authenticate(f"Bearer {token}") for token in flood),
        return_exceptions=True,
    )
    assert isinstance(results[0], Principal)
    assert all(isinstance(r, InvalidApiKey) for r in results[1:])
    assert lookup.calls == 1
    assert len(lookup.asked[0]) == 2001


async def test_keys_asked_for_during_a_lookup_wait_for_the_next_one(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    first = asyncio.ensure_future(authenticator.authenticate(f"Bearer {KEY}"))
    await asyncio.sleep(0)  # the first lookup is under way
    later = [apikeys.generate_key(PREFIX) for _ in range(50)]
    results = await asyncio.gather(
        *(authenticator.authenticate(f"Bearer {token}") for token in later),
        return_exceptions=True,
    )
    assert (await first).key_id == "key_1"
    assert all(isinstance(r, InvalidApiKey) for r in results)
    assert [len(batch) for batch in lookup.asked] == [1, 50]


async def test_a_flood_of_unknown_keys_does_not_evict_keys_in_use(
    authenticator: Authenticator,
    lookup: FakeLookup,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "KEY_CACHE_MAX_ENTRIES", 10)
    lookup.add(KEY)
    await authenticator.authenticate(f"Bearer {KEY}")
    for _ in range(5):
        flood = [apikeys.generate_key(PREFIX) for _ in range(5)]
        await asyncio.gather(
            *(authenticator.authenticate(f"Bearer {t}") for t in flood), return_exceptions=True
        )
    calls = lookup.calls
    assert (await authenticator.authenticate(f"Bearer {KEY}")).key_id == "key_1"
    assert lookup.calls == calls  # still cached
    assert len(authenticator._cache) <= 10


async def test_a_cancelled_lookup_leaves_no_waiter_behind(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    waiting = asyncio.ensure_future(authenticator.authenticate(f"Bearer {KEY}"))
    await asyncio.sleep(0)
    assert authenticator._batches is not None
    authenticator._batches.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await authenticator.authenticate(f"Bearer {KEY}")).key_id == "key_1"


async def test_a_failed_lookup_fails_every_waiter_and_is_not_cached(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    lookup.down = True
    results = await asyncio.gather(
        *(authenticator.authenticate(f"Bearer {KEY}") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ServiceUnavailable) for r in results)
    lookup.down = False
    assert (await authenticator.authenticate(f"Bearer {KEY}")).key_id == "key_1"
    assert lookup.calls == 2


async def test_refresh_keeps_keys_in_use_fresh_with_one_query(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    tokens = [PREFIX + c * 43 for c in "abc"]
    for token in tokens:
        lookup.add(token)
        await authenticator.authenticate(f"Bearer {token}")
    assert lookup.calls == 3
    for _ in range(10):  # ten TTLs later, no request has waited on a lookup
        clock.now += KEY_REFRESH_S
        await authenticator.refresh()
        for token in tokens:
            await authenticator.authenticate(f"Bearer {token}")
    assert lookup.calls == 3 + 10
    assert sorted(lookup.asked[-1]) == sorted(apikeys.hash_key(t, SECRET) for t in tokens)


async def test_a_revocation_reaches_a_refreshed_key_at_the_next_refresh(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    await authenticator.authenticate(f"Bearer {KEY}")
    clock.now += KEY_REFRESH_S
    await authenticator.refresh()
    lookup.revoke(KEY)
    assert (await authenticator.authenticate(f"Bearer {KEY}")).key_id == "key_1"  # not yet read
    clock.now += KEY_REFRESH_S
    await authenticator.refresh()
    with pytest.raises(InvalidApiKey, match="revoked"):
        await authenticator.authenticate(f"Bearer {KEY}")


async def test_while_refreshes_fail_answers_expire_after_the_ttl(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    await authenticator.authenticate(f"Bearer {KEY}")
    lookup.down = True
    clock.now += KEY_REFRESH_S
    with pytest.raises(ServiceUnavailable):
        await authenticator.refresh()
    clock.now += KEY_CACHE_TTL_S - KEY_REFRESH_S
    with pytest.raises(ServiceUnavailable):  # expired: the request asks, and hears the outage
        await authenticator.authenticate(f"Bearer {KEY}")


async def test_the_refresher_survives_a_failed_refresh(
    authenticator: Authenticator,
    lookup: FakeLookup,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "KEY_REFRESH_S", 0.001)
    lookup.add(KEY)
    await authenticator.authenticate(f"Bearer {KEY}")
    lookup.down = True
    runner = asyncio.ensure_future(authenticator.run())
    try:
        while lookup.calls < 3:
            await asyncio.sleep(0.005)
        lookup.down = False
        calls = lookup.calls
        while lookup.calls < calls + 2:
            await asyncio.sleep(0.005)
        assert not runner.done()
    finally:
        runner.cancel()


async def test_keys_idle_for_a_minute_are_forgotten(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    lookup.add(KEY)
    other = PREFIX + "b" * 43
    lookup.add(other, key_id="key_2")
    await authenticator.authenticate(f"Bearer {KEY}")
    await authenticator.authenticate(f"Bearer {other}")
    for _ in range(int(KEY_IDLE_S / KEY_REFRESH_S)):
        clock.now += KEY_REFRESH_S
        await authenticator.authenticate(f"Bearer {KEY}")
        await authenticator.refresh()
    assert lookup.asked[-1] == [apikeys.hash_key(KEY, SECRET)]
    assert apikeys.hash_key(other, SECRET) not in authenticator._cache


def test_repr_hides_the_secret(authenticator: Authenticator) -> None:
    text = repr(authenticator)
    assert SECRET.decode() not in text
    assert text == f"Authenticator(prefix={PREFIX!r})"


def test_custom_prefix() -> None:
    token = apikeys.generate_key("tg_")
    assert apikeys.is_well_formed(token, "tg_")
    assert not apikeys.is_well_formed(token, PREFIX)


# issue_key / rotate_key on a real SQLite store ------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AccountStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")
    await upgrade(engine)
    store = AccountStore(engine)
    await store.create_account("acme")
    try:
        yield store
    finally:
        await engine.dispose()


async def test_issued_key_authenticates_and_only_its_hash_is_stored(
    store: AccountStore,
) -> None:
    token, key = await issue_key(
        store, account="acme", prefix=PREFIX, secret=SECRET, name="ci", rpm=30
    )
    assert apikeys.is_well_formed(token, PREFIX)
    assert key.hint == apikeys.key_hint(token, PREFIX)
    assert (key.name, key.rpm, key.account_name, key.active) == ("ci", 30, "acme", True)
    owner = await store.find_key_owner(apikeys.hash_key(token, SECRET))
    assert owner is not None
    assert owner.key_id == key.id
    assert token not in repr(await store.list_keys())

    principal = await Authenticator(store, prefix=PREFIX, secret=SECRET).authenticate(
        f"Bearer {token}"
    )
    assert principal == Principal(key.id, key.account_id, 30)


async def test_issue_key_for_unknown_account(store: AccountStore) -> None:
    with pytest.raises(StoreNotFound):
        await issue_key(store, account="nobody", prefix=PREFIX, secret=SECRET)


async def test_rotate_key(store: AccountStore) -> None:
    old_token, old = await issue_key(
        store, account="acme", prefix=PREFIX, secret=SECRET, name="prod", rpm=99
    )
    new_token, new = await rotate_key(store, old.id, prefix=PREFIX, secret=SECRET)
    assert new.id != old.id
    assert new_token != old_token
    assert (new.name, new.rpm, new.account_id) == ("prod", 99, old.account_id)
    assert not (await store.get_key(old.id)).active
    assert (await store.get_key(new.id)).active

    fresh = Authenticator(store, prefix=PREFIX, secret=SECRET)
    with pytest.raises(InvalidApiKey):
        await fresh.authenticate(f"Bearer {old_token}")
    assert (await fresh.authenticate(f"Bearer {new_token}")).key_id == new.id


async def test_rotate_unknown_key(store: AccountStore) -> None:
    with pytest.raises(StoreNotFound):
        await rotate_key(store, "key_missing", prefix=PREFIX, secret=SECRET)


async def test_a_key_with_a_policy_resolves_to_it(
    authenticator: Authenticator, lookup: FakeLookup, clock: Clock
) -> None:
    owner = lookup.add(KEY, key_id="key_abc", rpm=None)
    stored = '{"models": ["deepseek-ai/"]}'
    lookup.owners[owner.key_hash] = dataclasses.replace(owner, policy=stored)
    principal = await authenticator.authenticate(f"Bearer {KEY}")
    assert principal.policy == apikeys.KeyPolicy(models=("deepseek-ai/",))
    assert principal.policy is apikeys.load_policy(stored)  # parsed once per distinct text

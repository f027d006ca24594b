"""API keys and who they name: how keys are made, recognised and hashed, and the
principal a key resolves to.

A key is the configured prefix plus 43 base62 characters (256 random bits).
Only HMAC-SHA256(key_hash_secret, key) is stored: a stolen database yields no
usable key, and without the server's secret not even a guessable one.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from teegate.catalog import AttestationFloor
from teegate.errors import ModelNotAllowed, PolicyError

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
SECRET_CHARS = 43  # 62**43 > 2**256
KEY_ID_CHARS = 16


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What one key may do beyond what every key may: the models it may use, the
    attestation it demands and its token limit. A key without a policy has
    `Principal.policy` None, and the request path checks nothing more for it."""

    models: tuple[str, ...] | None = None
    """Exact model ids, or prefixes ending in '/' or '*' (None: every model)."""
    attestation: AttestationFloor | None = None
    tpm: int | None = None
    """Tokens per minute: what holds reserve (prompt bound and output ceiling) at
    admission, corrected to what was billed at settlement (None: no token limit)."""

    def allows(self, model_id: str) -> bool:
        if self.models is None:
            return True
        return any(_model_matches(pattern, model_id) for pattern in self.models)

    def check_model(self, model_id: str) -> None:
        if not self.allows(model_id):
            raise ModelNotAllowed(model_id)

    @property
    def empty(self) -> bool:
        return self.models is None and self.attestation is None and self.tpm is None

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models) if self.models is not None else None,
            "attestation": self.attestation.to_json() if self.attestation else None,
            "tpm": self.tpm,
        }

    def dumps(self) -> str | None:
        """The stored form; None for an empty policy (stored as NULL)."""
        return None if self.empty else orjson.dumps(self.to_json()).decode()


class Keep(enum.Enum):
    """A part of a key left as it is by an update (None, by contrast, drops it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What an update changes of a key: each part given replaces that part; the
    attestation floor is replaced whole. `rpm` None means the gateway's default."""

    rpm: int | Keep | None = KEEP
    models: tuple[str, ...] | Keep | None = KEEP
    attestation: AttestationFloor | Keep | None = KEEP
    tpm: int | Keep | None = KEEP
    budgets: Mapping[str, int | None] | None = None
    """Spend budgets by period: an amount sets one, None drops it; others stay."""

    def applied_to(self, old: KeyPolicy) -> KeyPolicy:
        return KeyPolicy(
            old.models if isinstance(self.models, Keep) else self.models,
            old.attestation if isinstance(self.attestation, Keep) else self.attestation,
            old.tpm if isinstance(self.tpm, Keep) else self.tpm,
        )


def model_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """An allow-list as given: exact ids, or prefixes ending in '/' or '*'."""
    checked = tuple(dict.fromkeys(p.strip() for p in patterns if p.strip()))
    if not checked:
        raise PolicyError("models: give at least one model id or prefix")
    if any("*" in p[:-1] for p in checked):
        raise PolicyError("models: '*' may only end a prefix ('deepseek-ai/*')")
    return checked


def _model_matches(pattern: str, model_id: str) -> bool:
    if pattern.endswith("*"):
        return model_id.startswith(pattern[:-1])
    if pattern.endswith("/"):
        return model_id.startswith(pattern)
    return model_id == pattern


@functools.lru_cache(maxsize=4096)
def load_policy(stored: str | None) -> KeyPolicy | None:
    """A stored policy, parsed once per distinct text (keys are re-read every half
    second; most share a handful of policies, or have none)."""
    if stored is None:
        return None
    try:
        document = orjson.loads(stored)
    except orjson.JSONDecodeError as exc:
        raise PolicyError(f"a stored key policy is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PolicyError("a stored key policy must be a JSON object")
    models = document.get("models")
    attestation = document.get("attestation")
    tpm = document.get("tpm")
    if tpm is not None and (not isinstance(tpm, int) or isinstance(tpm, bool) or tpm < 1):
        raise PolicyError("tpm must be a positive number of tokens")
    policy = KeyPolicy(
        models=model_patterns(models) if models is not None else None,
        attestation=AttestationFloor.from_json(attestation) if attestation else None,
        tpm=tpm,
    )
    return None if policy.empty else policy


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a valid key names: what billing charges and the limiter counts."""

    key_id: str
    account_id: int
    rpm: int | None
    policy: KeyPolicy | None = None
    budgeted: bool = False
    """The key or its account has a spend budget (billing moves it with each hold)."""


def describe_key(principal: Principal, default_rpm: int) -> dict[str, Any]:
    """`GET /v1/key`: the caller's own key, its limits and policy, as OpenRouter's
    `/api/v1/key` answers (never its secret or hash)."""
    policy = principal.policy or KeyPolicy()
    return {
        "id": principal.key_id,
        "object": "key",
        "rate_limit": {
            "requests_per_minute": principal.rpm or default_rpm,
            "tokens_per_minute": policy.tpm,
            "interval": "1m",
        },
        "models": list(policy.models) if policy.models is not None else None,
        "attestation": policy.attestation.to_json() if policy.attestation else None,
    }


def generate_key(prefix: str) -> str:
    return prefix + "".join(secrets.choice(BASE62) for _ in range(SECRET_CHARS))


def generate_key_id() -> str:
    return "key_" + "".join(secrets.choice(BASE62) for _ in range(KEY_ID_CHARS))


_SECRET_BODY = re.compile(f"[0-9A-Za-z]{{{SECRET_CHARS}}}", re.ASCII)


def is_well_formed(token: str, prefix: str) -> bool:
    return token.startswith(prefix) and _SECRET_BODY.fullmatch(token, len(prefix)) is not None


def key_hasher(secret: bytes) -> Callable[[str], str]:
    """HMAC-SHA256 keyed once. Every request hashes its key: copying the keyed state
    costs a fraction of keying anew (OpenSSL 3 also looks the digest up per call)."""
    keyed = hmac.new(secret, digestmod=hashlib.sha256)

    def hash_key(token: str) -> str:
        digest = keyed.copy()
        digest.update(token.encode())
        return digest.hexdigest()

    return hash_key


def hash_key(token: str, secret: bytes) -> str:
    return key_hasher(secret)(token)


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


ADMIN_TOKEN_PREFIX = "tgadm_"  # noqa: S105 (a prefix, not a secret)
"""Admin tokens look unlike API keys, so neither is mistaken for the other in a config
or a log; each door checks its own kind only (an admin token is no API key anywhere)."""


def generate_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + "".join(secrets.choice(BASE62) for _ in range(SECRET_CHARS))


def token_sha256(token: str) -> str:
    """What settings keep of an admin token: 256 random bits need no salt or stretching."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_matches(authorization: str | None, accepted: Iterable[str | None]) -> bool:
    """Whether `Authorization: Bearer <token>` carries a token whose SHA-256 is one of
    `accepted` (None entries are unset tokens), compared in constant time against each."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    presented = token_sha256(token.strip())
    matched = False
    for expected in accepted:
        if expected is not None:
            matched |= hmac.compare_digest(presented, expected)
    return matched


def key_hint(token: str, prefix: str) -> str:
    """What lists show of a key: enough to recognise it, never enough to use it."""
    return f"{prefix}...{token[-4:]}"

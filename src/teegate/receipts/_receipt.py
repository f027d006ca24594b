"""What a receipt says, built from what the answer knew once it was settled.

Only hashes and counts: SHA-256 of the exact request bytes received and of the
exact bytes sent back (the SSE stream as written, or the ciphertext of an encrypted
answer), never a byte of text. The verdict part is the same object as the verdict's
leaf in the transparency log, so a client compares the two byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from teegate.attestation import Verdict
from teegate.billing import Settlement, Usage
from teegate.catalog import Admitted

RECEIPT_VERSION = 2


@dataclass(frozen=True, slots=True)
class Served:
    """One answer, sent and settled: everything its receipt is built from."""

    receipt_id: str
    request_sha256: bytes
    response_sha256: bytes
    response_bytes: int
    admitted: Admitted
    settlement: Settlement
    usage: Usage | None
    policy: Mapping[str, Any] | None
    finished_ms: int


def verdict_entry(verdict: Verdict) -> dict[str, Any]:
    """A verdict as the log records it: what it concluded and what it relied on."""
    evidence = verdict.evidence
    quote = evidence.quote if evidence is not None else None
    spki = verdict.tls_spki_sha256
    return {
        "type": "verdict",
        "id": verdict.id,
        "upstream": verdict.upstream,
        "instance": verdict.instance_id,
        "mode": verdict.mode,
        "passed": verdict.passed,
        "quote_sha256": hashlib.sha256(quote).hexdigest() if quote else None,
        "measurements": dict(sorted(verdict.measurements.items())),
        "tcb_status": verdict.tcb_status,
        "advisory_ids": list(verdict.advisory_ids),
        "verified_at": verdict.verified_at_s,
        "expires_at": verdict.expires_at_s,
        "gpus": [asdict(gpu) for gpu in verdict.gpus],
        "tls_spki_sha256": spki.hex() if spki is not None else None,
    }


def receipt_body(
    served: Served,
    *,
    account: str,
    verdict: Mapping[str, Any] | orjson.Fragment | None,
    verdict_leaf: int | None,
) -> dict[str, Any]:
    """The receipt before its signature (the object that is signed, canonicalized).
    `verdict` is the verdict's log entry, or its canonical bytes as an orjson.Fragment."""
    settlement = served.settlement
    hold = settlement.hold
    status = served.admitted.attestation
    pin = status.tls_pin
    usage = served.usage
    return {
        "version": RECEIPT_VERSION,
        "id": served.receipt_id,
        "request_id": hold.request_id,
        "account": account,
        "model": hold.model,
        "upstream": served.admitted.model.upstream,
        "instance": status.verdict.instance_id if status.verdict is not None else None,
        "stream": hold.stream,
        "status": settlement.status,
        "request_sha256": served.request_sha256.hex(),
        "response_sha256": served.response_sha256.hex(),
        "response_bytes": served.response_bytes,
        "attestation_mode": status.mode,
        "verdict": verdict,
        "verdict_leaf_index": verdict_leaf,
        "channel": {
            "binding": status.channel or None,
            "tls_cert_sha256": pin.hex() if pin is not None else None,
        },
        "usage": (
            {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
            if usage is not None
            else None
        ),
        "billed": {
            "prompt_tokens": settlement.prompt_tokens,
            "completion_tokens": settlement.completion_tokens,
            "settled_by": settlement.settled_by,
        },
        "price": {
            "prompt_nano_usd_per_mtok": hold.rates.prompt_nano_per_mtok,
            "completion_nano_usd_per_mtok": hold.rates.completion_nano_per_mtok,
        },
        "cost_nano_usd": settlement.cost_nano,
        "key_policy": dict(served.policy) if served.policy is not None else None,
        "issued_at_ms": served.finished_ms,
    }

"""A logged verdict as an IETF RATS attestation result: an EAR (draft-ietf-rats-ear)
in a JWT signed by the gateway's receipt key (EdDSA, `kid` = the key id).

One submodule per attested upstream instance, named `<upstream>` or
`<upstream>/<instance>`. Its AR4SI trustworthiness vector says what the verdict
established, and only that: `hardware` 2 (a genuine TDX module: the quote chained to
the trusted root), `instance-identity` 2 (report_data bound this instance's TLS key
and the gateway's nonce), `runtime-opaque` 2 (TDX encrypts the TD's memory),
`configuration` 2 for an `UpToDate` TCB and 32 (unsafe configuration, a warning)
for any other status the policy accepted; claims about executables, file system,
storage and sourced data are left out (no claim), since the quote's measurements
are reported, not appraised, unless a measurement allow-list is configured.
A failed verdict is `contraindicated` with `hardware` 97 (unrecognized), though the
log only holds verdicts that passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from teegate.receipts._signing import SigningKey

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
VERIFIER_ID = {"developer": "teegate", "build": "teegate receipts v1"}
AFFIRMING, WARNING, CONTRAINDICATED = 2, 32, 97


def ear_claims(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The EAR for one verdict entry of the transparency log (`verdict_entry`)."""
    if entry.get("type") != "verdict":
        raise ValueError("an attestation result is made from a verdict leaf only")
    passed = bool(entry.get("passed"))
    up_to_date = entry.get("tcb_status") == "UpToDate"
    if not passed:
        vector = {"hardware": CONTRAINDICATED}
        status = "contraindicated"
    else:
        vector = {
            "hardware": AFFIRMING,
            "instance-identity": AFFIRMING,
            "runtime-opaque": AFFIRMING,
            "configuration": AFFIRMING if up_to_date else WARNING,
        }
        status = "affirming" if up_to_date else "warning"
    name = str(entry["upstream"])
    if entry.get("instance"):
        name += f"/{entry['instance']}"
    return {
        "eat_profile": EAR_PROFILE,
        "iat": int(entry["verified_at"]),
        "exp": int(entry["expires_at"]),
        "ear.verifier-id": VERIFIER_ID,
        "submods": {
            name: {
                "ear.status": status,
                "ear.trustworthiness-vector": vector,
                "ear.appraisal-policy-id": f"teegate:attestation:{entry.get('mode')}",
                "ear.teegate.verdict": dict(entry),
            }
        },
    }


def ear_jwt(entry: Mapping[str, Any], key: SigningKey) -> str:
    return jwt.encode(ear_claims(entry), key.private, algorithm="EdDSA", headers={"kid": key.id})

"""A TCB status or collateral change at the PCS is refused at run time within the
documented bound, not at the cached collateral's nextUpdate (issue 18, finding 6).

The simulated PCS flips what it serves while the gateway runs; the gateway must
start answering 400 model_not_confidential before a deadline derived from its
settings (docs/attestation.md, "How fast a change is noticed"). The deadline is
a liveness bound, not a speed assertion: it is minutes, the test usually takes
seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tests.support.gateway import Devstack, Gateway, attested_settings, running_gateway

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
COLLATERAL_REFRESH_S = 1.0
PCS_TIMEOUT_S = 30.0
"""PccsCollateralProvider's timeout per platform's collateral fetch."""
ROUND_S = 3 * 15.0
"""One attestation round: evidence, NRAS attest and NRAS keys, 15 s each at most."""
REFUSAL_BOUND_S = COLLATERAL_REFRESH_S + PCS_TIMEOUT_S + 2 * ROUND_S
"""docs/attestation.md: collateral_refresh_s + one collateral fetch per platform +
two attestation rounds (one that was under way when the collateral was refreshed
finishes first)."""


def _refused(gateway: Gateway, check: str) -> bool:
    try:
        gateway.client(max_retries=0).chat.completions.create(
            model=R1, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    except openai.BadRequestError as exc:
        assert exc.code == "model_not_confidential"
        assert check in exc.message
        return True
    return False


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("tcb-revoked", "tcb_status"),
        ("tcb-outofdate", "tcb_status"),
        ("collateral-expired", "collateral"),
    ],
)
def test_a_change_at_the_pcs_is_refused_within_the_bound(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path: Path,
    fault: str,
    check: str,
) -> None:
    settings = attested_settings(
        tmp_path,
        devstack,
        attestation_services,
        enclave_files,
        collateral_refresh_s=COLLATERAL_REFRESH_S,
    )
    with running_gateway(settings, "acme") as gateway:
        assert not _refused(gateway, check)  # served on the collateral it started with
        attestation_services.set_faults(fault)
        deadline = time.monotonic() + REFUSAL_BOUND_S
        while not _refused(gateway, check):
            assert time.monotonic() < deadline, f"{fault} still served after the bound"
            time.sleep(0.2)
        before = devstack.chat_requests()
        assert _refused(gateway, check)
        assert devstack.chat_requests() == before


def test_the_collateral_is_not_fetched_again_before_its_time(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path: Path,
) -> None:
    """With the default schedule (hours), serving does not fetch collateral per round."""
    settings = attested_settings(tmp_path, devstack, attestation_services, enclave_files)
    with running_gateway(settings, "acme") as gateway:
        fetched = attestation_services.admin("GET", "stats")["pcs_requests"]
        assert not _refused(gateway, "tcb_status")
        assert attestation_services.admin("GET", "stats")["pcs_requests"] == fetched

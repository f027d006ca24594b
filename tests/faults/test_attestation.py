"""Attacks on the attested channel under load, against a real `teegate serve` that
verifies the session's simulated enclave with dcap-qvl: every request is refused
(400 model_not_confidential) before the upstream, and nothing is billed or leaked.

These are the devstack's own evidence faults; the attestation services' (revoked
TCB, expired collateral, bad GPU evidence) are refused one by one in
tests/test_e2e_attestation.py: they are decided at attestation, before any request."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest

from teegate.devstack import SimulatedAttestationServices, SimulatedEnclave
from tests.support.gateway import Devstack
from tests.support.reliability import (
    LOAD,
    Outcome,
    Rig,
    Trial,
    lost_in_books,
    mixed_load,
    settle_resources,
    start_rig,
    tries,
)

ENCLAVE_ATTACKS = ["attest-replay", "attest-unbound", "attest-debug", "attest-tampered",
                   "attest-no-gpu", "attest-down"]  # fmt: skip


def attestation(services: Devstack, enclave_files: Path) -> dict[str, Any]:
    return {
        "pccs_url": services.url,
        "nras_attest_url": f"{services.url}/v3/attest/gpu",
        "nras_jwks_url": f"{services.url}/.well-known/jwks.json",
        "nras_issuer": SimulatedAttestationServices.issuer,
        "dev_root_ca_file": str(enclave_files / "root-ca.der"),
    }


def refused(outcome: Outcome) -> bool:
    return (outcome.status, outcome.code) == (400, "model_not_confidential")


def attacked_rig(
    tmp_path: Path, devstack: Devstack, services: Devstack, enclave_files: Path
) -> Rig:
    """A gateway started while the attack is on: its first attestation meets it. The
    warm-up load is refused too, and the baseline read after it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'teegate.db'}"
    return start_rig(tmp_path, devstack.url, url, attestation=attestation(services, enclave_files))


@pytest.mark.parametrize("attack", ENCLAVE_ATTACKS)
def test_an_attestation_attack_is_refused_and_loses_nothing(
    attack: str,
    enclave: SimulatedEnclave,
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path: Path,
) -> None:
    enclave.attestation_report(secrets.token_bytes(32))  # the earlier nonce a replay replays
    devstack.set_faults(attack)
    before = devstack.chat_requests()
    rig = attacked_rig(tmp_path, devstack, attestation_services, enclave_files)
    trial = Trial("attestation", attack)
    try:
        for _ in range(tries()):
            trial.outcomes += asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD))
            trial.tries += 1
        trial.expect(refused, "400 model_not_confidential")
        if devstack.chat_requests() != before:
            trial.lost.append("a request reached the upstream under attack")
        trial.lost += asyncio.run(lost_in_books(rig.database_url, rig.account, trial.outcomes))
        trial.leaks = settle_resources(rig.gateway.resources, rig.baseline)
        trial.assert_nothing_lost()
    finally:
        rig.gateway.stop()


def test_tls_key_swapped_under_load_loses_nothing(
    devstack: Devstack, attestation_services: Devstack, enclave_files: Path, tmp_path: Path
) -> None:
    """The enclave's key changes after it was attested: connections already pinned
    finish, new ones meet the rogue key and are refused."""
    rig = attacked_rig(tmp_path, devstack, attestation_services, enclave_files)
    trial = Trial("attestation", "tls-key-swap (after attestation)")
    try:
        devstack.set_faults("tls-key-swap")
        for _ in range(tries()):
            trial.outcomes += asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD))
            trial.tries += 1
        trial.expect(
            lambda o: refused(o) or (o.status == 200 and o.complete),
            "200 over a pinned connection or 400 model_not_confidential",
        )
        trial.lost += asyncio.run(lost_in_books(rig.database_url, rig.account, trial.outcomes))
        trial.leaks = settle_resources(rig.gateway.resources, rig.baseline)
        trial.assert_nothing_lost()
    finally:
        rig.gateway.stop()

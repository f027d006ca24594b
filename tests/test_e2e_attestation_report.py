"""GET /v1/attestation/report cannot be turned into an amplifier onto NVIDIA's
attestation service (issue 18, finding 6): without a nonce it answers from the
cached verdicts, with one it is limited per key and coalesced."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Devstack, Gateway, attested_settings, running_gateway
from tests.support.openai_schemas import validate

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
PER_MINUTE = 6


@pytest.fixture(scope="module")
def report_gateway(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """Its own gateway: started moments ago, its background refresh is minutes away,
    so the NRAS counter moves only for what the tests ask."""
    settings = attested_settings(
        tmp_path_factory.mktemp("report"),
        devstack,
        attestation_services,
        enclave_files,
        report_nonce_per_minute=PER_MINUTE,
    )
    with running_gateway(settings, "acme") as gateway:
        yield gateway


def _report(gateway: Gateway, key: str, nonce: str | None = None) -> httpx.Response:
    params = {"model": R1} | ({"nonce": nonce} if nonce else {})
    return httpx.get(
        f"{gateway.url}/v1/attestation/report",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _gpu_attestations(services: Devstack) -> int:
    return int(services.admin("GET", "stats")["gpu_attestations"])


def test_without_a_nonce_the_cached_evidence_is_served(
    report_gateway: Gateway, attestation_services: Devstack
) -> None:
    key = report_gateway.issue_key()
    before = _gpu_attestations(attestation_services)
    for _ in range(PER_MINUTE + 2):  # not counted against the fresh-attestation limit
        response = _report(report_gateway, key)
        assert response.status_code == 200
        [upstream] = response.json()["upstreams"]
        assert upstream["verdicts"][0]["passed"] is True
    assert _gpu_attestations(attestation_services) == before


def test_fresh_attestations_are_limited_per_key(
    report_gateway: Gateway, attestation_services: Devstack
) -> None:
    key = report_gateway.issue_key()
    before = _gpu_attestations(attestation_services)
    for _ in range(PER_MINUTE):
        nonce = secrets.token_hex(32)
        response = _report(report_gateway, key, nonce)
        assert response.status_code == 200
        assert response.json()["upstreams"][0]["verdicts"][0]["evidence"]["nonce"] == nonce
    refused = _report(report_gateway, key, secrets.token_hex(32))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-request-id"].startswith("req_")
    validate(refused.json(), "ErrorResponse")
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "fresh attestations" in refused.json()["error"]["message"]
    assert _gpu_attestations(attestation_services) == before + PER_MINUTE
    assert _report(report_gateway, key).status_code == 200  # cached evidence still served
    other = report_gateway.issue_key()  # another key has its own allowance
    assert _report(report_gateway, other, secrets.token_hex(32)).status_code == 200


def test_concurrent_requests_for_one_nonce_share_one_attestation(
    report_gateway: Gateway, attestation_services: Devstack
) -> None:
    """NRAS made slow (`nras-slow`), so the requests overlap the round they share."""
    keys = [report_gateway.issue_key() for _ in range(4)]
    nonce = secrets.token_hex(32)
    attestation_services.set_faults("nras-slow")
    before = _gpu_attestations(attestation_services)
    with ThreadPoolExecutor(len(keys)) as pool:
        responses = list(pool.map(lambda k: _report(report_gateway, k, nonce), keys))
    assert all(r.status_code == 200 for r in responses)
    verdict_ids = {r.json()["upstreams"][0]["verdicts"][0]["id"] for r in responses}
    attested = _gpu_attestations(attestation_services) - before
    # Concurrent ones share a round; one that arrived after it ended starts another.
    assert attested == len(verdict_ids) < len(keys)


def test_fresh_attestations_of_one_upstream_run_at_most_two_at_a_time(
    report_gateway: Gateway, attestation_services: Devstack
) -> None:
    keys = [report_gateway.issue_key() for _ in range(4)]
    attestation_services.set_faults("nras-slow")
    with ThreadPoolExecutor(len(keys)) as pool:
        responses = list(
            pool.map(lambda k: _report(report_gateway, k, secrets.token_hex(32)), keys)
        )
    assert all(r.status_code == 200 for r in responses)
    assert attestation_services.admin("GET", "stats")["max_concurrent_gpu_attestations"] == 2

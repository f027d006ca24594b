"""The dev/test DCAP PKI: its quotes verify with its own root, never with Intel's."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import dcap_qvl
import jwt
import pytest

from teegate.devstack.tdx_pki import (
    DEFAULT_MR_TD,
    DEFAULT_RTMRS,
    LocalGpuAttestationService,
    TdxTestPki,
    attested_tls_report,
    chutes_evidence_entry,
    collateral_window,
    self_signed_tls_certificate,
)

NOW = 1_800_000_000
ISSUED, NEXT_UPDATE = collateral_window(NOW)
REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def pki() -> TdxTestPki:
    return TdxTestPki()


def _collateral(
    pki: TdxTestPki, tcb_status: str = "UpToDate", advisory_ids: tuple[str, ...] = ()
) -> Any:
    text = pki.collateral_json(
        issued_at=ISSUED, next_update=NEXT_UPDATE, tcb_status=tcb_status, advisory_ids=advisory_ids
    )
    return dcap_qvl.QuoteCollateralV3.from_json(text)


def test_quote_verifies_against_own_root(pki: TdxTestPki) -> None:
    report = dcap_qvl.verify_with_root_ca(
        pki.quote(REPORT_DATA), _collateral(pki), pki.root_der, NOW
    )
    assert report.status == "UpToDate"
    assert list(report.advisory_ids) == []


def test_quote_is_refused_with_intel_root(pki: TdxTestPki) -> None:
    with pytest.raises(ValueError, match="root CA CRL"):
        dcap_qvl.verify(pki.quote(REPORT_DATA), _collateral(pki), NOW)


def test_quote_is_refused_with_another_pki_root(pki: TdxTestPki) -> None:
    other = TdxTestPki()
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(pki.quote(REPORT_DATA), _collateral(pki), other.root_der, NOW)


def test_quote_fields_are_what_was_asked(pki: TdxTestPki) -> None:
    mr_td = b"\x42" * 48
    rtmrs = (b"\x01" * 48, b"\x02" * 48, b"\x03" * 48, b"\x04" * 48)
    parsed = dcap_qvl.parse_quote(pki.quote(REPORT_DATA, mr_td=mr_td, rtmrs=rtmrs))
    assert parsed.header.tee_type == 0x81
    assert parsed.header.version == 4
    assert bytes(parsed.report.mr_td) == mr_td
    assert bytes(parsed.report.rt_mr2) == rtmrs[2]
    assert bytes(parsed.report.report_data) == REPORT_DATA
    assert bytes(parsed.report.td_attributes)[0] & 1 == 0


def test_debug_knob_sets_the_debug_bit(pki: TdxTestPki) -> None:
    parsed = dcap_qvl.parse_quote(pki.quote(REPORT_DATA, debug=True))
    assert bytes(parsed.report.td_attributes)[0] & 1 == 1


@pytest.mark.parametrize("status", ["OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded"])
def test_tcb_status_and_advisories_knobs(pki: TdxTestPki, status: str) -> None:
    collateral = _collateral(pki, tcb_status=status, advisory_ids=("INTEL-SA-00837",))
    report = dcap_qvl.verify_with_root_ca(pki.quote(REPORT_DATA), collateral, pki.root_der, NOW)
    assert report.status == status
    assert list(report.advisory_ids) == ["INTEL-SA-00837"]


def test_revoked_knob_is_refused_by_dcap(pki: TdxTestPki) -> None:
    collateral = _collateral(pki, tcb_status="Revoked")
    with pytest.raises(ValueError, match="Revoked"):
        dcap_qvl.verify_with_root_ca(pki.quote(REPORT_DATA), collateral, pki.root_der, NOW)


def test_collateral_window_knob(pki: TdxTestPki) -> None:
    collateral = _collateral(pki)
    late = int(NEXT_UPDATE.timestamp()) + 1
    with pytest.raises(ValueError, match=r"(?i)expired"):
        dcap_qvl.verify_with_root_ca(pki.quote(REPORT_DATA), collateral, pki.root_der, late)
    early = int(ISSUED.timestamp()) - 1
    with pytest.raises(ValueError, match="future"):
        dcap_qvl.verify_with_root_ca(pki.quote(REPORT_DATA), collateral, pki.root_der, early)


def test_unknown_tcb_status_is_a_programming_error(pki: TdxTestPki) -> None:
    with pytest.raises(ValueError, match="unknown TCB status"):
        pki.collateral_json(issued_at=ISSUED, next_update=NEXT_UPDATE, tcb_status="Fine")


def test_bad_sizes_are_refused(pki: TdxTestPki) -> None:
    with pytest.raises(ValueError):
        pki.quote(b"short")
    with pytest.raises(ValueError):
        pki.quote(REPORT_DATA, rtmrs=DEFAULT_RTMRS[:3])
    with pytest.raises(ValueError):
        TdxTestPki(fmspc=b"\0")


def test_quotes_are_fast_enough_for_runtime_use(pki: TdxTestPki) -> None:
    started = time.perf_counter()
    for _ in range(50):
        pki.quote(REPORT_DATA, mr_td=DEFAULT_MR_TD)
    assert (time.perf_counter() - started) / 50 < 0.005


def test_collateral_is_cached_per_arguments(pki: TdxTestPki) -> None:
    first = pki.collateral_json(issued_at=ISSUED, next_update=NEXT_UPDATE)
    assert pki.collateral_json(issued_at=ISSUED, next_update=NEXT_UPDATE) is first


def test_repr_shows_no_key_material(pki: TdxTestPki) -> None:
    text = repr(pki)
    assert "TdxTestPki(" in text
    assert "PRIVATE" not in text and "_key" not in text


def test_collateral_window_brackets_now() -> None:
    issued, next_update = collateral_window(NOW, before_s=10, after_s=20)
    assert issued == dt.datetime.fromtimestamp(NOW - 10, tz=dt.UTC)
    assert next_update == dt.datetime.fromtimestamp(NOW + 20, tz=dt.UTC)


def test_local_gpu_service_signs_es384_tokens_its_jwks_verifies() -> None:
    service = LocalGpuAttestationService()
    overall, detached = service.attest([{"evidence": "AAAA"}], "ab" * 32)
    key = jwt.PyJWK(service.jwks()["keys"][0])
    claims = jwt.decode(overall[1], key.key, algorithms=["ES384"], issuer=service.issuer)
    assert claims["x-nvidia-overall-att-result"] is True
    assert claims["eat_nonce"] == "ab" * 32
    assert jwt.get_unverified_header(detached["GPU-0"])["kid"] == service.kid
    assert "_key" not in repr(service)


def test_attested_tls_report_binds_the_tls_key(pki: TdxTestPki) -> None:
    cert_pem, _ = self_signed_tls_certificate()
    nonce = b"\x05" * 32
    body = attested_tls_report(pki, nonce, cert_pem, gpu=LocalGpuAttestationService())
    parsed = dcap_qvl.parse_quote(bytes.fromhex(body["quote"]))
    assert bytes(parsed.report.report_data)[32:] == nonce
    assert len(body["gpu_evidence"]["evidence_list"]) == 1
    assert body["nvidia_token"][0][0] == "JWT"


def test_chutes_entry_has_the_documented_shape(pki: TdxTestPki) -> None:
    cert_pem, _ = self_signed_tls_certificate()
    entry = chutes_evidence_entry(
        pki, b"\x01" * 32, instance_id="i-1", e2e_pubkey_b64="cGs=", certificate_pem=cert_pem
    )
    assert set(entry) == {"instance_id", "quote", "certificate", "gpu_evidence"}

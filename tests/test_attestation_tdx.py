"""TDX quote verification with the real dcap-qvl verifier: Intel samples and every attack.

Intel's samples exercise the production trust path (Intel SGX Root CA) at the fixed
times from tests/fixtures/tdx/README.md; the test PKI forges the attacks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest

from teegate.attestation import (
    AttestationPolicy,
    CheckLog,
    Collateral,
    MeasurementAllowList,
    verify_tdx_quote,
)
from teegate.devstack.tdx_pki import DEFAULT_MR_TD, TdxTestPki, collateral_window
from teegate.errors import AttestationFailed

FIXTURES = Path(__file__).parent / "fixtures" / "tdx"
NOW = 1_800_000_000
RD = bytes(range(64))
STRICT = AttestationPolicy()


def _fixture(name: str) -> bytes:
    raw = (FIXTURES / name).read_bytes()
    return bytes.fromhex(raw.decode().strip()) if name.endswith(".txt") else raw


def _intel_collateral(name: str) -> Collateral:
    return Collateral.from_json((FIXTURES / name).read_text(), source=f"fixture:{name}")


@pytest.fixture(scope="module")
def pki() -> TdxTestPki:
    return TdxTestPki()


def _collateral(
    pki: TdxTestPki, tcb_status: str = "UpToDate", advisories: tuple[str, ...] = ()
) -> Collateral:
    issued, next_update = collateral_window(NOW)
    text = pki.collateral_json(
        issued_at=issued, next_update=next_update, tcb_status=tcb_status, advisory_ids=advisories
    )
    return Collateral.from_json(text, source="test-pki")


def _verify(pki: TdxTestPki, quote: bytes, collateral: Collateral | None = None, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "expected_report_data": RD,
        "policy": STRICT,
        "now_s": NOW,
        "root_ca_der": pki.root_der,
    }
    options.update(kw)
    return verify_tdx_quote(quote, collateral or _collateral(pki), **options)


def _rejected(check: str, pki: TdxTestPki, quote: bytes, **kw: Any) -> AttestationFailed:
    with pytest.raises(AttestationFailed) as info:
        _verify(pki, quote, **kw)
    assert info.value.check == check, info.value
    return info.value


# ---- the production trust path: real Intel-signed samples at their fixed times ----


@pytest.mark.parametrize(
    ("quote", "collateral", "at"),
    [
        ("tdx_quote", "tdx_quote_collateral.json", 1752919234),
        ("near_quote_hex.txt", "near_quote_collateral.json", 1759388630),
    ],
)
def test_intel_samples_verify_with_intel_root(quote: str, collateral: str, at: int) -> None:
    raw = _fixture(quote)
    result = verify_tdx_quote(
        raw,
        _intel_collateral(collateral),
        expected_report_data=dcap_qvl.parse_quote(raw).report.report_data,
        policy=STRICT,
        now_s=at,
        root_ca_der=None,
    )
    assert result.tcb_status == "UpToDate"
    assert result.advisory_ids == ()
    assert result.trust_root == "intel"


def test_intel_v5_outdated_sample_is_refused() -> None:
    raw = _fixture("tdx_quote_outdated")
    with pytest.raises(AttestationFailed) as info:
        verify_tdx_quote(
            raw,
            _intel_collateral("tdx_quote_outdated_collateral.json"),
            expected_report_data=dcap_qvl.parse_quote(raw).report.report_data,
            policy=STRICT,
            now_s=1774003274,
            root_ca_der=None,
        )
    assert info.value.check == "tcb_status"
    assert "No matching TCB level" in info.value.reason


def test_intel_sgx_sample_is_refused_as_not_tdx() -> None:
    with pytest.raises(AttestationFailed) as info:
        verify_tdx_quote(
            _fixture("sgx_quote"),
            _intel_collateral("sgx_quote_collateral.json"),
            expected_report_data=b"\0" * 64,
            policy=STRICT,
            now_s=1752919277,
            root_ca_der=None,
        )
    assert info.value.check == "tee_type"


def test_intel_sample_with_wrong_report_data_is_refused() -> None:
    with pytest.raises(AttestationFailed) as info:
        verify_tdx_quote(
            _fixture("tdx_quote"),
            _intel_collateral("tdx_quote_collateral.json"),
            expected_report_data=b"\0" * 64,
            policy=STRICT,
            now_s=1752919234,
            root_ca_der=None,
        )
    assert info.value.check == "report_data"


@pytest.mark.parametrize("offset_s", [-40 * 86400, 40 * 86400])
def test_intel_sample_outside_its_collateral_window_is_refused(offset_s: int) -> None:
    raw = _fixture("tdx_quote")
    with pytest.raises(AttestationFailed) as info:
        verify_tdx_quote(
            raw,
            _intel_collateral("tdx_quote_collateral.json"),
            expected_report_data=dcap_qvl.parse_quote(raw).report.report_data,
            policy=STRICT,
            now_s=1752919234 + offset_s,
            root_ca_der=None,
        )
    assert info.value.check == "collateral"


def test_intel_root_certificate_fixture_is_the_pinned_root() -> None:
    raw = _fixture("tdx_quote")
    coll = _intel_collateral("tdx_quote_collateral.json")
    report = dcap_qvl.verify_with_root_ca(
        raw, coll.dcap, (FIXTURES / "TrustedRootCA.der").read_bytes(), 1752919234
    )
    assert report.status == "UpToDate"


# ---- the test PKI: what passes, and every attack ----


def test_test_pki_quote_passes_with_configured_root(pki: TdxTestPki) -> None:
    log = CheckLog()
    result = _verify(pki, pki.quote(RD), checks=log)
    assert result.trust_root == "configured"
    assert result.quote.mr_td == DEFAULT_MR_TD
    assert [c.name for c in log.checks] == [
        "quote_format",
        "tee_type",
        "collateral",
        "quote_signature",
        "debug",
        "tcb_status",
        "report_data",
        "measurements",
    ]
    assert all(c.ok for c in log.checks)


def test_test_root_quote_is_refused_in_production_mode(pki: TdxTestPki) -> None:
    _rejected("quote_signature", pki, pki.quote(RD), root_ca_der=None)


def test_replayed_quote_with_old_nonce_is_refused(pki: TdxTestPki) -> None:
    old = pki.quote(b"\xaa" * 32 + b"\x01" * 32)  # bound to an earlier nonce
    failure = _rejected("report_data", pki, old, expected_report_data=b"\xaa" * 32 + b"\x02" * 32)
    assert "replayed" in failure.reason


def test_report_data_not_binding_the_tls_key_is_refused(pki: TdxTestPki) -> None:
    quote = pki.quote(b"\xbb" * 32 + b"\x01" * 32)  # someone else's key
    _rejected("report_data", pki, quote, expected_report_data=b"\xcc" * 32 + b"\x01" * 32)


def test_debug_td_is_refused(pki: TdxTestPki) -> None:
    _rejected("debug", pki, pki.quote(RD, debug=True))


def test_revoked_tcb_is_refused(pki: TdxTestPki) -> None:
    _rejected("tcb_status", pki, pki.quote(RD), collateral=_collateral(pki, "Revoked"))


def test_out_of_date_is_refused_under_default_policy(pki: TdxTestPki) -> None:
    collateral = _collateral(pki, "OutOfDate", ("INTEL-SA-00837",))
    failure = _rejected("tcb_status", pki, pki.quote(RD), collateral=collateral)
    assert "OutOfDate" in failure.reason and "INTEL-SA-00837" in failure.reason


def test_out_of_date_passes_when_configured_and_records_advisories(pki: TdxTestPki) -> None:
    policy = AttestationPolicy(allowed_tcb_statuses=frozenset({"UpToDate", "OutOfDate"}))
    collateral = _collateral(pki, "OutOfDate", ("INTEL-SA-00837",))
    log = CheckLog()
    result = _verify(pki, pki.quote(RD), collateral, policy=policy, checks=log)
    assert result.tcb_status == "OutOfDate"
    assert result.advisory_ids == ("INTEL-SA-00837",)
    assert any(c.name == "tcb_status" and "INTEL-SA-00837" in c.detail for c in log.checks)


def test_expired_collateral_is_refused(pki: TdxTestPki) -> None:
    collateral = _collateral(pki)
    _rejected("collateral", pki, pki.quote(RD), now_s=collateral.next_update_s)


def test_collateral_not_yet_valid_is_refused(pki: TdxTestPki) -> None:
    issued, next_update = collateral_window(NOW + 86400)
    text = pki.collateral_json(issued_at=issued, next_update=next_update)
    _rejected("collateral", pki, pki.quote(RD), collateral=Collateral.from_json(text, source="t"))


# header, TD report body, report_data, quote signature, attestation key, QE report
@pytest.mark.parametrize("offset", [10, 100, 300, 600, 650, 720, 900])
def test_tampered_quote_is_refused(pki: TdxTestPki, offset: int) -> None:
    tampered = bytearray(pki.quote(RD))
    tampered[offset] ^= 0x01
    with pytest.raises(AttestationFailed) as info:
        _verify(pki, bytes(tampered))
    assert info.value.check in {"quote_signature", "report_data", "quote_format"}
    if 48 <= offset < 568:  # TD report body before report_data: only the signature catches it
        assert info.value.check == "quote_signature"


def test_truncated_quote_is_refused(pki: TdxTestPki) -> None:
    _rejected("quote_format", pki, pki.quote(RD)[:700])


def test_mrtd_not_in_allow_list_is_refused(pki: TdxTestPki) -> None:
    policy = AttestationPolicy(
        measurements=MeasurementAllowList.from_mapping({"mrtd": ["ab" * 48]})
    )
    failure = _rejected("measurements", pki, pki.quote(RD), policy=policy)
    assert "mrtd" in failure.reason


def test_allow_listed_measurements_pass(pki: TdxTestPki) -> None:
    allow = MeasurementAllowList.from_mapping(
        {"mrtd": ["ab" * 48, DEFAULT_MR_TD.hex()], "rtmr3": ["0a" * 48]}
    )
    _verify(pki, pki.quote(RD), policy=AttestationPolicy(measurements=allow))


def test_rtmr_not_in_allow_list_is_refused(pki: TdxTestPki) -> None:
    allow = MeasurementAllowList.from_mapping({"rtmr1": ["00" * 48]})
    failure = _rejected(
        "measurements", pki, pki.quote(RD), policy=AttestationPolicy(measurements=allow)
    )
    assert "rtmr1" in failure.reason


# ---- fail closed: whatever the verifier throws is a rejection ----


class _Panic(BaseException):
    """What a pyo3 panic looks like to Python: a BaseException, not an Exception."""


@pytest.mark.parametrize("error", [TypeError("boom"), RuntimeError("boom"), _Panic("panicked")])
def test_unexpected_verifier_errors_become_rejections(
    pki: TdxTestPki, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def explode(*_: object) -> None:
        raise error

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", explode)
    log = CheckLog()
    failure = _rejected("quote_signature", pki, pki.quote(RD), checks=log)
    assert "boom" in failure.reason or "panicked" in failure.reason
    assert log.checks[-1].ok is False


def test_verifier_returning_garbage_is_a_rejection(
    pki: TdxTestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", lambda *_: object())
    _rejected("tcb_status", pki, pki.quote(RD))


def test_keyboard_interrupt_is_not_swallowed(
    pki: TdxTestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dcap_qvl, "verify_with_root_ca", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _verify(pki, pki.quote(RD))


def test_malformed_collateral_is_a_rejection() -> None:
    with pytest.raises(AttestationFailed) as info:
        Collateral.from_json('{"pck_crl_issuer_chain": 1}', source="t")
    assert info.value.check == "collateral"


def test_collateral_window_is_the_narrowest_of_its_parts() -> None:
    coll = _intel_collateral("tdx_quote_collateral.json")
    assert coll.next_update_s <= int(dt.datetime(2025, 7, 19, 10, 16, 3, tzinfo=dt.UTC).timestamp())
    assert coll.issued_at_s <= 1752919234 < coll.next_update_s
    assert "json_text" not in repr(coll)

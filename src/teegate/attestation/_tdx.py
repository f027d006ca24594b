"""TDX quote verification: dcap-qvl for the cryptography, teegate's policy for the rest.

dcap-qvl checks the quote's signature chain up to the root and the collateral; it
does not decide which TCB statuses are acceptable, and it accepts SGX quotes. Those
decisions, the report_data binding and the measurement allow-list are made here, in
this order, each recorded as a check:

    quote_format → tee_type → collateral → quote_signature (dcap-qvl) → debug
    → tcb_status → report_data → measurements

Any error dcap-qvl raises (ValueError, or a pyo3 panic) becomes `AttestationFailed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import dcap_qvl

from teegate.attestation._binding import report_data_matches
from teegate.attestation._check import CheckLog, rejects, summarize
from teegate.attestation._collateral import Collateral
from teegate.attestation._policy import AttestationPolicy
from teegate.attestation._quote import TdQuote, parse_td_quote
from teegate.errors import AttestationFailed

__all__ = ["TdxVerification", "TrustRoot", "verify_tdx_quote"]

TrustRoot = Literal["intel", "configured"]

_COLLATERAL_ERRORS = re.compile(r"expired|in the future|not yet valid", re.IGNORECASE)
_TCB_ERRORS = re.compile(r"revoked|no matching tcb level|tcb status", re.IGNORECASE)
_DEBUG_ERRORS = re.compile(r"debug", re.IGNORECASE)


@dataclass(frozen=True)
class TdxVerification:
    """A quote that passed every check, with what the verdict reports about it."""

    quote: TdQuote
    tcb_status: str
    advisory_ids: tuple[str, ...]
    trust_root: TrustRoot


def verify_tdx_quote(
    quote: bytes,
    collateral: Collateral,
    *,
    expected_report_data: bytes,
    policy: AttestationPolicy,
    now_s: int,
    root_ca_der: bytes | None,
    checks: CheckLog | None = None,
) -> TdxVerification:
    """Verify `quote` under `policy`; raise `AttestationFailed` naming the first failed check.

    `root_ca_der` None means Intel's SGX root (production); a DER root is for the dev
    stack and tests only, and verdicts made with it are labelled `simulated`.
    """
    log = checks if checks is not None else CheckLog()
    parsed = _parse(quote, log)
    _check_collateral_window(collateral, now_s, log)
    report = _verify_signature(quote, collateral, now_s, root_ca_der, log)
    log.require(
        not parsed.debug,
        "debug",
        passed="production TD (debug bit clear)",
        failed="debug TD: the host can read and modify its memory",
    )
    tcb_status, advisories = _check_tcb_status(report, policy, log)
    log.require(
        report_data_matches(parsed.report_data, expected_report_data),
        "report_data",
        passed="binds this nonce and key",
        failed="report_data does not bind this nonce and key (replayed or relayed quote)",
    )
    _check_measurements(parsed, policy, log)
    root: TrustRoot = "intel" if root_ca_der is None else "configured"
    return TdxVerification(parsed, tcb_status, advisories, root)


def _parse(quote: bytes, log: CheckLog) -> TdQuote:
    try:
        parsed = parse_td_quote(quote)
    except AttestationFailed as failure:
        log.record(failure)
        raise
    log.passed("quote_format", f"TDX quote v{parsed.version}")
    log.passed("tee_type", "TDX (0x81)")
    return parsed


def _check_collateral_window(collateral: Collateral, now_s: int, log: CheckLog) -> None:
    log.require(
        collateral.issued_at_s <= now_s < collateral.next_update_s,
        "collateral",
        passed=f"valid until {collateral.next_update_s} (from {collateral.source})",
        failed=(
            f"collateral from {collateral.source} is valid from {collateral.issued_at_s} "
            f"to {collateral.next_update_s}, not at {now_s}"
        ),
    )


def _verify_signature(
    quote: bytes, collateral: Collateral, now_s: int, root_ca_der: bytes | None, log: CheckLog
) -> Any:
    try:
        if root_ca_der is None:
            report = dcap_qvl.verify(quote, collateral.dcap, now_s)
        else:
            report = dcap_qvl.verify_with_root_ca(quote, collateral.dcap, root_ca_der, now_s)
    except BaseException as exc:  # ValueError, or a pyo3 panic (a BaseException)
        if not rejects(exc):
            raise
        reason = summarize(exc)
        log.fail(_classify(reason), reason)
    root = "Intel SGX Root CA" if root_ca_der is None else "the configured (non-Intel) root"
    log.passed("quote_signature", f"signature chain verified up to {root}")
    return report


def _classify(reason: str) -> str:
    """Name the check a dcap-qvl error belongs to; anything unrecognised is a signature failure."""
    if _DEBUG_ERRORS.search(reason):
        return "debug"
    if _TCB_ERRORS.search(reason):
        return "tcb_status"
    if _COLLATERAL_ERRORS.search(reason):
        return "collateral"
    return "quote_signature"


def _check_tcb_status(
    report: Any, policy: AttestationPolicy, log: CheckLog
) -> tuple[str, tuple[str, ...]]:
    try:
        status = str(report.status)
        advisories = tuple(str(a) for a in report.advisory_ids)
    except (AttributeError, TypeError) as exc:
        log.fail("tcb_status", f"verifier returned no TCB status: {summarize(exc)}")
    detail = status + (f" (advisories: {', '.join(advisories)})" if advisories else "")
    allowed = ", ".join(sorted(policy.allowed_tcb_statuses))
    log.require(
        status in policy.allowed_tcb_statuses,
        "tcb_status",
        passed=detail,
        failed=f"TCB status {detail} is not in the allow-list ({allowed})",
    )
    return status, advisories


def _check_measurements(parsed: TdQuote, policy: AttestationPolicy, log: CheckLog) -> None:
    if policy.measurements is None:
        log.passed("measurements", "no allow-list configured: any TD image accepted")
        return
    wrong = policy.measurements.violations(parsed.measurements())
    log.require(
        not wrong,
        "measurements",
        passed="MRTD/RTMRs in the allow-list",
        failed=f"not in the allow-list: {', '.join(wrong)}",
    )

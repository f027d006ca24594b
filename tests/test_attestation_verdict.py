"""The verdict cache: fail closed on missing, failed and stale; fast reads."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from teegate.attestation import Check, Verdict, VerdictCache, VerdictEvidence
from teegate.errors import AttestationFailed


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _verdict(
    *, passed: bool = True, instance: str | None = None, expires: int = 1_600, check: str = "x"
) -> Verdict:
    return Verdict(
        id=f"att_{instance}_{passed}_{expires}",
        upstream="up",
        instance_id=instance,
        mode="simulated",
        passed=passed,
        failed_check=None if passed else check,
        reason="all checks passed" if passed else f"{check} failed",
        verified_at_s=1_000,
        expires_at_s=expires,
        tcb_status="UpToDate" if passed else None,
        checks=(Check("quote_signature", True, "ok"),),
        evidence=VerdictEvidence(
            nonce=b"\1" * 32,
            report_data_rule="sha256(tls_spki_der) || nonce",
            quote=b"QUOTE",
            tls_spki_sha256=b"\2" * 32,
            tls_cert_sha256=b"\3" * 32,
        ),
    )


def _refused(cache: VerdictCache, check: str, instance: str | None = None) -> str:
    with pytest.raises(AttestationFailed) as info:
        cache.require("up", instance)
    assert info.value.check == check, info.value
    return info.value.reason


def test_no_verdict_is_refused() -> None:
    _refused(VerdictCache(clock=Clock()), "missing")


def test_fresh_passing_verdict_is_returned() -> None:
    cache = VerdictCache(clock=Clock())
    verdict = _verdict()
    cache.replace("up", [verdict])
    assert cache.require("up") is verdict
    assert cache.require("up").tls_cert_sha256 == b"\3" * 32


def test_failed_verdict_is_refused_with_its_check() -> None:
    cache = VerdictCache(clock=Clock())
    cache.replace("up", [_verdict(passed=False, check="debug")])
    _refused(cache, "debug")


def test_stale_verdict_is_refused() -> None:
    clock = Clock()
    cache = VerdictCache(clock=clock)
    cache.replace("up", [_verdict(expires=1_600)])
    clock.now = 1_600
    assert "expired at 1600" in _refused(cache, "stale")


def test_stale_reason_names_the_last_refresh_failure() -> None:
    clock = Clock()
    cache = VerdictCache(clock=clock)
    cache.replace("up", [_verdict()])
    cache.note_failure("up", AttestationFailed("evidence_unavailable", "HTTP 503"))
    assert cache.require("up")  # still fresh: kept
    clock.now = 2_000
    assert "HTTP 503" in _refused(cache, "stale")


def test_failure_before_any_verdict_is_missing_with_reason() -> None:
    cache = VerdictCache(clock=Clock())
    cache.note_failure("up", AttestationFailed("evidence_unavailable", "HTTP 503"))
    assert "HTTP 503" in _refused(cache, "missing")


def test_instances_are_chosen_and_refused_independently() -> None:
    clock = Clock()
    cache = VerdictCache(clock=clock)
    good = _verdict(instance="a", expires=1_500)
    later = _verdict(instance="b", expires=1_700)
    bad = _verdict(instance="c", passed=False, check="report_data", expires=1_800)
    cache.replace("up", [good, later, bad])
    assert cache.require("up") is later
    assert cache.require("up", "a") is good
    _refused(cache, "report_data", "c")
    _refused(cache, "missing", "zzz")
    assert set(cache.passing("up")) == {good, later}
    clock.now = 1_600
    assert cache.require("up") is later
    _refused(cache, "stale", "a")
    clock.now = 1_700
    _refused(cache, "report_data")  # the only fresh verdict left is a failure


def test_replace_forgets_instances_that_disappeared() -> None:
    cache = VerdictCache(clock=Clock())
    cache.replace("up", [_verdict(instance="a")])
    cache.replace("up", [_verdict(instance="b")])
    _refused(cache, "missing", "a")


def test_reads_take_microseconds() -> None:
    cache = VerdictCache()
    cache.replace("up", [replace(_verdict(), expires_at_s=int(time.time()) + 600)])
    started = time.perf_counter()
    for _ in range(10_000):
        cache.require("up")
    assert (time.perf_counter() - started) / 10_000 < 20e-6


def test_report_and_header() -> None:
    verdict = _verdict()
    report = verdict.to_report()
    assert report["passed"] is True
    assert report["evidence"]["quote"] == "UVVPVEU="
    assert report["evidence"]["tls_spki_sha256"] == "02" * 32
    assert report["checks"] == [{"name": "quote_signature", "ok": True, "detail": "ok"}]
    header = verdict.header_value()
    assert header.startswith("mode=simulated; verdict=att_")
    assert "tcb=UpToDate" in header
    assert verdict.summary()["status"] == "passed"
    assert "QUOTE" not in repr(verdict)


def test_transient_failures_are_marked() -> None:
    assert _verdict(passed=False, check="evidence_unavailable").transient
    assert not _verdict(passed=False, check="report_data").transient
    assert not _verdict().transient

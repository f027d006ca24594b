"""Acceptance policy: strict defaults, and configuration mistakes refused at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teegate.attestation import AttestationPolicy, MeasurementAllowList
from teegate.errors import ConfigError


def test_defaults_are_strict() -> None:
    policy = AttestationPolicy()
    assert policy.allowed_tcb_statuses == frozenset({"UpToDate"})
    assert policy.require_gpu is True
    assert policy.measurements is None
    assert 0 < policy.refresh_margin_s < policy.verdict_ttl_s


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allowed_tcb_statuses": frozenset({"UpToDat"})},
        {"allowed_tcb_statuses": frozenset({"Revoked"})},
        {"allowed_tcb_statuses": frozenset()},
        {"verdict_ttl_s": 60, "refresh_margin_s": 60},
        {"refresh_margin_s": 0},
        {"retry_interval_s": 0},
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AttestationPolicy(**kwargs)  # type: ignore[arg-type]


def test_measurements_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "measurements.json"
    path.write_text(json.dumps({"mrtd": ["AB" * 48], "rtmr0": ["01" * 48, "02" * 48]}))
    allow = MeasurementAllowList.from_file(path)
    assert allow.allowed["mrtd"] == frozenset({"ab" * 48})
    assert allow.violations({"mrtd": "ab" * 48, "rtmr0": "02" * 48}) == []
    assert allow.violations({"mrtd": "cd" * 48, "rtmr0": "03" * 48}) == ["mrtd", "rtmr0"]


def test_unlisted_registers_are_not_restricted() -> None:
    allow = MeasurementAllowList.from_mapping({"mrtd": ["ab" * 48]})
    assert allow.violations({"mrtd": "ab" * 48, "rtmr3": "ff" * 48}) == []


def test_a_missing_measurement_is_a_violation() -> None:
    allow = MeasurementAllowList.from_mapping({"rtmr2": ["ab" * 48]})
    assert allow.violations({}) == ["rtmr2"]


@pytest.mark.parametrize(
    "document",
    [
        {},
        [],
        {"mrtd": []},
        {"mrtd": "ab" * 48},
        {"mrtd": ["ab" * 47]},
        {"mrtd": ["zz" * 48]},
        {"mrsigner": ["ab" * 48]},
    ],
)
def test_bad_measurement_documents_are_config_errors(document: object) -> None:
    with pytest.raises(ConfigError):
        MeasurementAllowList.from_mapping(document)


def test_unreadable_measurements_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        MeasurementAllowList.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError):
        MeasurementAllowList.from_file(bad)

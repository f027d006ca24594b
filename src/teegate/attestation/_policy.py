"""What teegate accepts as proof, per upstream: TCB statuses, measurements, GPU, freshness.

dcap-qvl checks signatures and collateral but leaves the acceptance decisions to
its caller (it passes OutOfDate, for one); these settings are those decisions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teegate.attestation._quote import MEASUREMENT_NAMES
from teegate.errors import ConfigError

__all__ = [
    "DEFAULT_ALLOWED_TCB_STATUSES",
    "KNOWN_TCB_STATUSES",
    "AttestationPolicy",
    "MeasurementAllowList",
]

_HEX48 = re.compile(r"[0-9a-f]{96}")


@dataclass(frozen=True)
class MeasurementAllowList:
    """Accepted values per measurement register; a register not listed is not restricted.

    Loaded from a JSON file `{"mrtd": [hex, ...], "rtmr0": [...], ...}`. Each listed
    register must match one of its values: the allow-list pins the TD image (MRTD) and
    what it booted (RTMRs) to builds the operator has reviewed.
    """

    allowed: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path) -> MeasurementAllowList:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"measurements file {path}: {exc}") from exc
        return cls.from_mapping(document)

    @classmethod
    def from_mapping(cls, document: Any) -> MeasurementAllowList:
        if not isinstance(document, Mapping) or not document:
            raise ConfigError("measurements: expected a non-empty object of register lists")
        allowed: dict[str, frozenset[str]] = {}
        for name, values in document.items():
            allowed[str(name)] = _register_values(str(name), values)
        return cls(allowed)

    def violations(self, measurements: Mapping[str, str]) -> list[str]:
        """Names of the registers whose value is not in the allow-list."""
        return [
            name
            for name, accepted in sorted(self.allowed.items())
            if measurements.get(name, "").lower() not in accepted
        ]


def _register_values(name: str, values: Any) -> frozenset[str]:
    if name not in MEASUREMENT_NAMES:
        raise ConfigError(f"measurements: unknown register {name!r}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"measurements.{name}: expected a non-empty list of hex values")
    normalized = frozenset(str(v).lower() for v in values)
    for value in normalized:
        if not _HEX48.fullmatch(value):
            raise ConfigError(f"measurements.{name}: {value[:20]!r}… is not 48 bytes of hex")
    return normalized


#: Intel's TCB statuses (tcbInfo v3). Anything else in a config is a typo.
KNOWN_TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    }
)
DEFAULT_ALLOWED_TCB_STATUSES = frozenset({"UpToDate"})


@dataclass(frozen=True)
class AttestationPolicy:
    """Acceptance policy for one upstream. Defaults are the strict ones.

    `verdict_ttl_s` bounds how long a passing verdict is served; the refresher
    re-attests `refresh_margin_s` before that, and retries every `retry_interval_s`
    after a failed fetch while the old verdict is still fresh.
    """

    allowed_tcb_statuses: frozenset[str] = DEFAULT_ALLOWED_TCB_STATUSES
    measurements: MeasurementAllowList | None = None
    require_gpu: bool = True
    verdict_ttl_s: int = 600
    refresh_margin_s: int = 120
    retry_interval_s: int = 15

    def __post_init__(self) -> None:
        unknown = set(self.allowed_tcb_statuses) - KNOWN_TCB_STATUSES
        if unknown or not self.allowed_tcb_statuses:
            raise ConfigError(f"allowed_tcb_statuses: unknown or empty {sorted(unknown)}")
        if not 0 < self.refresh_margin_s < self.verdict_ttl_s:
            raise ConfigError("refresh_margin_s must be positive and less than verdict_ttl_s")
        if not 0 < self.retry_interval_s <= self.verdict_ttl_s:
            raise ConfigError("retry_interval_s must be positive and at most verdict_ttl_s")

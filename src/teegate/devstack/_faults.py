"""Fault injection: the named ways the simulated upstream misbehaves on purpose.

The gateway must survive every failure a real confidential upstream can show
(dropped streams, missing usage, garbage, hangs, lost TEE flags, forged or
unbound attestation), so each one is a named fault that tests and the demo
switch on at start-up or at run time. The simulated attestation services (Intel
PCS and NVIDIA NRAS stand-ins) have their own set, `SERVICES_FAULTS`, switched
through the same machinery.
"""

from __future__ import annotations

from collections.abc import Iterable

DROP_MID_STREAM = "drop-mid-stream"
NO_USAGE = "no-usage"
SLOW_FIRST_TOKEN = "slow-first-token"  # noqa: S105 - a fault name, not a secret
HTTP_500 = "http-500"
GARBAGE_SSE = "garbage-sse"
HANG = "hang"
FLAG_OFF = "flag-off"

# The enclave upstream's evidence (served only by an app built with a SimulatedEnclave).
ATTEST_REPLAY = "attest-replay"
ATTEST_UNBOUND = "attest-unbound"
TLS_KEY_SWAP = "tls-key-swap"
ATTEST_DEBUG = "attest-debug"
ATTEST_WRONG_MRTD = "attest-wrong-mrtd"
ATTEST_TAMPERED = "attest-tampered"
ATTEST_DOWN = "attest-down"
ATTEST_NO_GPU = "attest-no-gpu"
# The enclave's end-to-end encryption (an enclave built with e2ee=True).
HPKE_KEY_SWAP = "hpke-key-swap"  # serve and decrypt with an HPKE key no quote binds
USAGE_FORGED = "usage-forged"  # sign usage records with a key no quote binds

ENCLAVE_FAULTS: frozenset[str] = frozenset(
    {
        ATTEST_REPLAY,
        ATTEST_UNBOUND,
        TLS_KEY_SWAP,
        ATTEST_DEBUG,
        ATTEST_WRONG_MRTD,
        ATTEST_TAMPERED,
        ATTEST_DOWN,
        ATTEST_NO_GPU,
        HPKE_KEY_SWAP,
        USAGE_FORGED,
    }
)
"""Faults of the enclave's evidence; refused by an app built without an enclave."""

FAULTS: frozenset[str] = (
    frozenset({DROP_MID_STREAM, NO_USAGE, SLOW_FIRST_TOKEN, HTTP_500, GARBAGE_SSE, HANG, FLAG_OFF})
    | ENCLAVE_FAULTS
)
"""Every fault of the devstack app; `flag-off` is only valid as `flag-off=MODEL`."""

# The attestation services (Intel PCS and NVIDIA NRAS stand-ins).
TCB_REVOKED = "tcb-revoked"
TCB_OUT_OF_DATE = "tcb-outofdate"
COLLATERAL_EXPIRED = "collateral-expired"
GPU_BAD_SIGNATURE = "gpu-bad-signature"
GPU_WRONG_NONCE = "gpu-wrong-nonce"
GPU_FAILED = "gpu-failed"
SERVICES_DOWN = "services-down"
NRAS_SLOW = "nras-slow"
NRAS_SLOW_S = 0.5
"""How long NRAS takes under `nras-slow`: long enough that concurrent attestations overlap."""

SERVICES_FAULTS: frozenset[str] = frozenset(
    {
        TCB_REVOKED,
        TCB_OUT_OF_DATE,
        COLLATERAL_EXPIRED,
        GPU_BAD_SIGNATURE,
        GPU_WRONG_NONCE,
        GPU_FAILED,
        SERVICES_DOWN,
        NRAS_SLOW,
    }
)
"""Every fault of the attestation services app."""

_FLAG_OFF_PREFIX = FLAG_OFF + "="


class UnknownFaultError(ValueError):
    """A fault spec that names no fault, or misuses the `=MODEL` argument form."""


def check_fault(spec: str, known: frozenset[str] = FAULTS) -> str:
    """Return `spec` unchanged if it is a fault in `known`, else raise UnknownFaultError.

    Only `flag-off` takes an argument, and it needs one: a bare `flag-off` or a
    `hang=x` is a typo that would otherwise silently inject nothing.
    """
    if spec in known and spec != FLAG_OFF:
        return spec
    flag_off = FLAG_OFF in known and spec.startswith(_FLAG_OFF_PREFIX)
    if flag_off and len(spec) > len(_FLAG_OFF_PREFIX):
        return spec
    hint = " (flag-off=MODEL)" if FLAG_OFF in known else ""
    raise UnknownFaultError(f"unknown fault {spec!r}; known: {sorted(known)}{hint}")


def check_faults(specs: Iterable[str], known: frozenset[str] = FAULTS) -> frozenset[str]:
    """Validate every spec; all or nothing, so a bad list never half-applies."""
    return frozenset(check_fault(spec, known) for spec in specs)


class FaultState:
    """The faults active now, replaceable at run time and resettable to the initial set.

    `known` is the set this state accepts: the devstack app's, or the services'.
    """

    def __init__(self, initial: frozenset[str], *, known: frozenset[str] = FAULTS) -> None:
        self._known = known
        self._initial = check_faults(initial, known)
        self._active = self._initial

    def __repr__(self) -> str:
        return f"FaultState(active={sorted(self._active)})"

    @property
    def active(self) -> frozenset[str]:
        return self._active

    def is_on(self, name: str) -> bool:
        return name in self._active

    def replace(self, specs: Iterable[str]) -> None:
        self._active = check_faults(specs, self._known)

    def reset(self) -> None:
        self._active = self._initial

    def flagged_off_models(self) -> frozenset[str]:
        """Model ids whose catalog entry must report `confidential_compute: false`."""
        return frozenset(
            spec.removeprefix(_FLAG_OFF_PREFIX)
            for spec in self._active
            if spec.startswith(_FLAG_OFF_PREFIX)
        )

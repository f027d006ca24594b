"""A simulated confidential upstream for development, the demo, tests and benchmarks.

An OpenAI-compatible server (`GET /v1/models`, `POST /v1/chat/completions`,
and with `DevstackConfig(embeddings=True)` `POST /v1/embeddings`) that answers
deterministically, streams like OpenAI, honours OpenAI's `stop`,
`n`, `logprobs`/`top_logprobs`, `seed`, `parallel_tool_calls` and
`max_completion_tokens`, and misbehaves on demand through named faults (see
FAULTS), plus loopback-only admin endpoints (`/admin/stats`, `/admin/faults`,
`/admin/reset`).

Built with a `SimulatedEnclave`, it also attests for real: it serves attested-tls
and Chutes evidence (TDX quotes from a test DCAP PKI binding its TLS key), and
`build_services_app(SimulatedAttestationServices(enclave))` serves the Intel PCS
and NVIDIA NRAS stand-ins the gateway's verifier checks that evidence with
(faults: SERVICES_FAULTS). `serve_devstack` runs both. `SimulatedTsm` stands in
for Linux configfs-tsm, so a gateway outside a TDX guest can attest itself in tests.
"""

from __future__ import annotations

from teegate.devstack._app import build_app
from teegate.devstack._config import DevstackConfig
from teegate.devstack._enclave import SimulatedEnclave
from teegate.devstack._faults import FAULTS, SERVICES_FAULTS
from teegate.devstack._serve import devstack_servers, serve_devstack
from teegate.devstack._services import SimulatedAttestationServices
from teegate.devstack._services_app import build_services_app
from teegate.devstack._tsm import SimulatedTsm

__all__ = [
    "FAULTS",
    "SERVICES_FAULTS",
    "DevstackConfig",
    "SimulatedAttestationServices",
    "SimulatedEnclave",
    "SimulatedTsm",
    "build_app",
    "build_services_app",
    "devstack_servers",
    "serve_devstack",
]

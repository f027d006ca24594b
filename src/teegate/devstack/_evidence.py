"""The enclave upstream's evidence endpoints, as the gateway's attestation adapters fetch them.

    GET /v1/attestation/report?nonce=<64 hex>        attested-tls (no auth, like the
                                                     evidence a real enclave publishes)
    GET /chutes/{chute_id}/evidence?nonce=<64 hex>   Chutes (API key, as for chat)
    GET /e2e/instances/{chute_id}                    Chutes instances' e2e public keys

Every chute id names the one simulated chute. `attest-down` makes all three 503.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from teegate.devstack._enclave import SimulatedEnclave
from teegate.devstack._errors import invalid_request, json_response, service_unavailable
from teegate.devstack._faults import ATTEST_DOWN
from teegate.devstack._http import require_api_key
from teegate.devstack._state import DevstackState

_NONCE = re.compile(r"[0-9a-fA-F]{64}")


def evidence_routes(state: DevstackState, enclave: SimulatedEnclave) -> list[Route]:
    enclave.bind_faults(state.faults)
    api = _EvidenceApi(state, enclave)
    return [
        Route("/v1/attestation/report", api.report, methods=["GET"]),
        Route("/chutes/{chute_id}/evidence", api.chutes_evidence, methods=["GET"]),
        Route("/e2e/instances/{chute_id}", api.e2e_instances, methods=["GET"]),
    ]


class _EvidenceApi:
    def __init__(self, state: DevstackState, enclave: SimulatedEnclave) -> None:
        self._state = state
        self._enclave = enclave

    async def report(self, request: Request) -> Response:
        self._require_up()
        return json_response(self._enclave.attestation_report(_nonce(request)))

    async def chutes_evidence(self, request: Request) -> Response:
        require_api_key(request, self._state.config.api_key)
        self._require_up()
        return json_response(self._enclave.chutes_evidence(_nonce(request)))

    async def e2e_instances(self, request: Request) -> Response:
        require_api_key(request, self._state.config.api_key)
        self._require_up()
        return json_response(self._enclave.e2e_instances())

    def _require_up(self) -> None:
        if self._state.faults.is_on(ATTEST_DOWN):
            raise service_unavailable("Attestation evidence", ATTEST_DOWN)


def _nonce(request: Request) -> bytes:
    """The caller's 32-byte nonce, given as 64 hex characters."""
    text = request.query_params.get("nonce", "")
    if not _NONCE.fullmatch(text):
        raise invalid_request("nonce must be 64 hex characters (32 bytes).", param="nonce")
    return bytes.fromhex(text)

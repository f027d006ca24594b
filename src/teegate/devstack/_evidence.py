"""The enclave upstream's evidence endpoints, as the gateway's attestation adapters fetch them.

    GET /v1/attestation/report?nonce=<64 hex>        attested-tls (no auth, like the
                                                     evidence a real enclave publishes)
    GET /chutes/{chute_id}/evidence?nonce=<64 hex>   Chutes (API key, as for chat)
    GET /e2e/instances/{chute_id}                    Chutes instances' e2e public keys
    GET /.well-known/hpke-keys                       EHBP key config (an e2ee enclave)
    GET /v1/e2ee/usage/{request_id}                  a stream's signed usage (API key)

Every chute id names the one simulated chute. `attest-down` makes all three 503.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from teegate.devstack._e2ee import KEYS_MEDIA_TYPE, KEYS_PATH, EnclaveE2ee
from teegate.devstack._enclave import SimulatedEnclave
from teegate.devstack._errors import invalid_request, json_response, service_unavailable
from teegate.devstack._faults import ATTEST_DOWN, HPKE_KEY_SWAP
from teegate.devstack._http import require_api_key
from teegate.devstack._sealed import usage_response
from teegate.devstack._state import DevstackState

_NONCE = re.compile(r"[0-9a-fA-F]{64}")


def evidence_routes(state: DevstackState, enclave: SimulatedEnclave) -> list[Route]:
    enclave.bind_faults(state.faults)
    api = _EvidenceApi(state, enclave)
    routes = [
        Route("/v1/attestation/report", api.report, methods=["GET"]),
        Route("/chutes/{chute_id}/evidence", api.chutes_evidence, methods=["GET"]),
        Route("/e2e/instances/{chute_id}", api.e2e_instances, methods=["GET"]),
    ]
    if enclave.e2ee is not None:
        routes += [
            Route(KEYS_PATH, api.hpke_keys, methods=["GET"]),
            Route("/v1/e2ee/usage/{request_id}", api.e2ee_usage, methods=["GET"]),
        ]
    return routes


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

    async def hpke_keys(self, request: Request) -> Response:
        """EHBP's key path: the key config clients encrypt to (a rogue one under
        hpke-key-swap, which the quotes do not bind)."""
        e2ee = self._e2ee()
        config = e2ee.key_config(swapped=self._state.faults.is_on(HPKE_KEY_SWAP))
        return Response(config, media_type=KEYS_MEDIA_TYPE)

    async def e2ee_usage(self, request: Request) -> Response:
        require_api_key(request, self._state.config.api_key)
        return usage_response(self._e2ee(), request.path_params["request_id"])

    def _e2ee(self) -> EnclaveE2ee:
        e2ee = self._enclave.e2ee
        if e2ee is None:  # routes are added only for an e2ee enclave
            raise RuntimeError("this enclave has no EHBP keys")
        return e2ee

    def _require_up(self) -> None:
        if self._state.faults.is_on(ATTEST_DOWN):
            raise service_unavailable("Attestation evidence", ATTEST_DOWN)


def _nonce(request: Request) -> bytes:
    """The caller's 32-byte nonce, given as 64 hex characters."""
    text = request.query_params.get("nonce", "")
    if not _NONCE.fullmatch(text):
        raise invalid_request("nonce must be 64 hex characters (32 bytes).", param="nonce")
    return bytes.fromhex(text)

"""The attestation services app: the Intel PCS v4 subset dcap-qvl asks for, NRAS, admin.

    GET  /sgx/certification/v4/pckcrl?ca=platform&encoding=der  PCK CRL + issuer chain header
    GET  /sgx/certification/v4/rootcacrl                       root CA CRL, hex (as a PCCS)
    GET  /tdx/certification/v4/tcb?fmspc=<hex>                 {"tcbInfo", "signature"}
    GET  /tdx/certification/v4/qe/identity                     {"enclaveIdentity", "signature"}
    GET  /root-ca.der                                           the dev root CA (DER)
    POST /v3/attest/gpu                                         NRAS v3 GPU attestation
    GET  /.well-known/jwks.json                                 NRAS signing keys
    /admin/stats, /admin/faults, /admin/reset                   loopback only

Plain HTTP: everything served is signed, or is the dev root the gateway is told
to trust (in dev and tests only). `services-down` makes all but /admin 503.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from teegate.devstack._admin import admin_mount
from teegate.devstack._errors import (
    EXCEPTION_HANDLERS,
    DevstackHttpError,
    invalid_request,
    json_response,
    service_unavailable,
)
from teegate.devstack._faults import NRAS_SLOW, NRAS_SLOW_S, SERVICES_DOWN
from teegate.devstack._http import read_body
from teegate.devstack._request import json_object
from teegate.devstack._services import SimulatedAttestationServices

_SGX = "/sgx/certification/v4"
_TDX = "/tdx/certification/v4"
_NONCE = re.compile(r"[0-9a-fA-F]{64}")
_MAX_GPUS = 64


def build_services_app(services: SimulatedAttestationServices) -> Starlette:
    """Intel PCS and NVIDIA NRAS stand-ins for `services`; state on `app.state.services`."""
    pcs = _PcsApi(services)
    nras = _NrasApi(services)
    routes = [
        Route(f"{_SGX}/pckcrl", pcs.pck_crl, methods=["GET"]),
        Route(f"{_SGX}/rootcacrl", pcs.root_ca_crl, methods=["GET"]),
        Route(f"{_TDX}/tcb", pcs.tcb_info, methods=["GET"]),
        Route(f"{_TDX}/qe/identity", pcs.qe_identity, methods=["GET"]),
        Route("/root-ca.der", pcs.root_ca, methods=["GET"]),
        Route("/v3/attest/gpu", nras.attest, methods=["POST"]),
        Route("/.well-known/jwks.json", nras.jwks, methods=["GET"]),
        admin_mount(services),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(_DownMiddleware, services=services)],
    )
    app.state.services = services
    return app


class _DownMiddleware:
    """`services-down`: every endpoint but the admin ones answers 503."""

    def __init__(self, app: ASGIApp, *, services: SimulatedAttestationServices) -> None:
        self.app = app
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        down = self._services.faults.is_on(SERVICES_DOWN)
        if down and scope["type"] == "http" and not scope["path"].startswith("/admin"):
            error = service_unavailable("The attestation service", SERVICES_DOWN)
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _PcsApi:
    """Intel PCS v4 (the subset dcap-qvl's `get_collateral` requests), over the test PKI."""

    def __init__(self, services: SimulatedAttestationServices) -> None:
        self._services = services

    async def pck_crl(self, request: Request) -> Response:
        if request.query_params.get("ca") != "platform":
            raise _not_found("the test PKI has only the platform PCK CA")
        parts = self._collateral()
        crl = bytes.fromhex(parts["pck_crl"])
        if request.query_params.get("encoding") != "der":
            crl = x509.load_der_x509_crl(crl).public_bytes(serialization.Encoding.PEM)
        headers = {"SGX-PCK-CRL-Issuer-Chain": quote(parts["pck_crl_issuer_chain"], safe="")}
        return Response(crl, media_type="application/pkix-crl", headers=headers)

    async def root_ca_crl(self, _request: Request) -> Response:
        return Response(self._collateral()["root_ca_crl"], media_type="text/plain")

    async def tcb_info(self, request: Request) -> Response:
        if request.query_params.get("fmspc", "").lower() != self._services.pki.fmspc.hex():
            raise _not_found("no TCB info for this FMSPC")
        parts = self._collateral()
        chain = {"TCB-Info-Issuer-Chain": parts["tcb_info_issuer_chain"]}
        return _signed_json("tcbInfo", parts["tcb_info"], parts["tcb_info_signature"], chain)

    async def qe_identity(self, _request: Request) -> Response:
        parts = self._collateral()
        chain = {"SGX-Enclave-Identity-Issuer-Chain": parts["qe_identity_issuer_chain"]}
        signature = parts["qe_identity_signature"]
        return _signed_json("enclaveIdentity", parts["qe_identity"], signature, chain)

    async def root_ca(self, _request: Request) -> Response:
        return Response(self._services.pki.root_der, media_type="application/pkix-cert")

    def _collateral(self) -> dict[str, str]:
        self._services.stats.pcs_requests += 1
        return self._services.collateral()


class _NrasApi:
    """NVIDIA's remote attestation service v3: GPU evidence and a nonce in, tokens out."""

    def __init__(self, services: SimulatedAttestationServices) -> None:
        self._services = services

    async def attest(self, request: Request) -> Response:
        body = json_object(await read_body(request))
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise invalid_request("nonce must be 64 hex characters.", param="nonce")
        evidence_list = _evidence_list(body.get("evidence_list"))
        stats = self._services.stats
        stats.gpu_attestation_started()
        try:
            if self._services.faults.is_on(NRAS_SLOW):
                await asyncio.sleep(NRAS_SLOW_S)
            return json_response(self._services.attest_gpu(evidence_list, nonce))
        finally:
            stats.gpu_attestation_ended()

    async def jwks(self, _request: Request) -> Response:
        self._services.stats.jwks_requests += 1
        return json_response(self._services.jwks())


def _signed_json(name: str, signed: str, signature_hex: str, chain: dict[str, str]) -> Response:
    """`{name: <the signed JSON, byte for byte>, "signature": hex}`, chain header URL-encoded."""
    body = f'{{"{name}":{signed},"signature":"{signature_hex}"}}'
    headers = {key: quote(value, safe="") for key, value in chain.items()}
    return Response(body, media_type="application/json", headers=headers)


def _evidence_list(value: Any) -> list[dict[str, Any]]:
    valid = (
        isinstance(value, list)
        and 0 < len(value) <= _MAX_GPUS
        and all(isinstance(item, dict) for item in value)
    )
    if not valid:
        raise invalid_request(
            f"evidence_list must be 1 to {_MAX_GPUS} objects.", param="evidence_list"
        )
    return list(value)


def _not_found(message: str) -> DevstackHttpError:
    return DevstackHttpError(404, message, code="not_found")

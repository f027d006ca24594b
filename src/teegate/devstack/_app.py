"""The devstack ASGI app: routes only; behaviour lives in the modules they call."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from teegate.devstack._admin import admin_mount
from teegate.devstack._chat import ChatEndpoint
from teegate.devstack._config import DevstackConfig
from teegate.devstack._embeddings import EmbeddingsEndpoint
from teegate.devstack._enclave import SimulatedEnclave
from teegate.devstack._errors import EXCEPTION_HANDLERS, json_response
from teegate.devstack._evidence import evidence_routes
from teegate.devstack._faults import ENCLAVE_FAULTS, FAULTS
from teegate.devstack._http import require_api_key
from teegate.devstack._state import DevstackState


def build_app(config: DevstackConfig, *, enclave: SimulatedEnclave | None = None) -> Starlette:
    """A simulated confidential upstream: OpenAI-compatible chat, embeddings (when the
    config asks for them) and models, plus admin.

    With an `enclave`, it also serves attestation evidence (attested-tls and Chutes)
    and accepts the enclave faults; serve it over TLS with
    `ssl_context_factory=enclave.ssl_context_factory`. The state lives on
    `app.state.devstack` (tests and the CLI may read it); nothing is shared
    between two apps.
    """
    known = FAULTS if enclave is not None else FAULTS - ENCLAVE_FAULTS
    state = DevstackState.from_config(config, known_faults=known)
    routes: list[BaseRoute] = [
        Route("/v1/models", _ModelsEndpoint(state).list_models, methods=["GET"]),
        Route(
            "/v1/chat/completions",
            ChatEndpoint(state, enclave.e2ee if enclave is not None else None),
            methods=["POST"],
        ),
        Route("/v1/embeddings", EmbeddingsEndpoint(state), methods=["POST"]),
        admin_mount(state),
    ]
    if enclave is not None:
        routes += evidence_routes(state, enclave)
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    app.state.devstack = state
    return app


class _ModelsEndpoint:
    def __init__(self, state: DevstackState) -> None:
        self._state = state

    async def list_models(self, request: Request) -> Response:
        """The catalog, with flag-off faults applied; counted before auth, like chat."""
        state = self._state
        state.stats.models_requests += 1
        require_api_key(request, state.config.api_key)
        return json_response(state.catalog.listing(state.faults.flagged_off_models()))

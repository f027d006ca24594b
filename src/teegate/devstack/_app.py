"""The devstack ASGI app: routes only; behaviour lives in the modules they call."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from teegate.devstack._admin import admin_mount
from teegate.devstack._chat import ChatEndpoint
from teegate.devstack._config import DevstackConfig
from teegate.devstack._errors import DevstackHttpError, json_response
from teegate.devstack._http import require_api_key
from teegate.devstack._state import DevstackState


def build_app(config: DevstackConfig) -> Starlette:
    """A simulated confidential upstream: OpenAI-compatible chat and models, plus admin.

    The state lives on `app.state.devstack` (tests and the CLI may read it);
    nothing is shared between two apps.
    """
    state = DevstackState.from_config(config)
    routes = [
        Route("/v1/models", _ModelsEndpoint(state).list_models, methods=["GET"]),
        Route("/v1/chat/completions", ChatEndpoint(state), methods=["POST"]),
        admin_mount(state),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            DevstackHttpError: _devstack_error,
            HTTPException: _http_exception,
        },
    )
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


async def _devstack_error(_request: Request, exc: Exception) -> Response:
    if not isinstance(exc, DevstackHttpError):
        raise exc
    return exc.response()


async def _http_exception(_request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods also answer in the OpenAI envelope."""
    if not isinstance(exc, HTTPException):
        raise exc
    error = DevstackHttpError(exc.status_code, exc.detail, code=None)
    response = error.response()
    response.headers.update(exc.headers or {})
    return response

"""Admin endpoints for tests and the demo: counters and run-time fault switching.

No auth, so they are served to loopback clients only (LoopbackOnlyMiddleware).
Both the devstack app and the attestation services app mount them, each over
its own faults and counters (`AdminTarget`).
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from teegate.devstack._errors import DevstackHttpError, invalid_request, json_response
from teegate.devstack._faults import FaultState, UnknownFaultError
from teegate.devstack._http import is_loopback


class Counters(Protocol):
    def reset(self) -> None: ...

    def snapshot(self) -> dict[str, int]: ...


class AdminTarget(Protocol):
    """What the admin endpoints act on: a fault state and request counters."""

    @property
    def faults(self) -> FaultState: ...

    @property
    def stats(self) -> Counters: ...


class LoopbackOnlyMiddleware:
    """Refuse (403) any client that is not on loopback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_loopback(Request(scope)):
            error = DevstackHttpError(403, "Admin endpoints are loopback only.", code="forbidden")
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def admin_mount(state: AdminTarget) -> Mount:
    api = _AdminApi(state)
    routes = [
        Route("/stats", api.stats, methods=["GET"]),
        Route("/faults", api.get_faults, methods=["GET"]),
        Route("/faults", api.put_faults, methods=["PUT"]),
        Route("/reset", api.reset, methods=["POST"]),
    ]
    return Mount("/admin", routes=routes, middleware=[Middleware(LoopbackOnlyMiddleware)])


class _AdminApi:
    def __init__(self, state: AdminTarget) -> None:
        self._state = state

    async def stats(self, _request: Request) -> Response:
        return json_response(self._state.stats.snapshot())

    async def get_faults(self, _request: Request) -> Response:
        return self._faults_response()

    async def put_faults(self, request: Request) -> Response:
        """Replace the whole set; an unknown name refuses the lot and changes nothing."""
        specs = _fault_list(await request.body())
        try:
            self._state.faults.replace(specs)
        except UnknownFaultError as error:
            raise invalid_request(str(error), param="faults") from None
        return self._faults_response()

    async def reset(self, _request: Request) -> Response:
        self._state.stats.reset()
        self._state.faults.reset()
        return json_response({**self._state.stats.snapshot(), "faults": self._sorted_faults()})

    def _faults_response(self) -> Response:
        return json_response({"faults": self._sorted_faults()})

    def _sorted_faults(self) -> list[str]:
        return sorted(self._state.faults.active)


def _fault_list(raw: bytes) -> list[str]:
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request(
            "The body is not valid JSON.", param=None, code="invalid_json"
        ) from None
    faults = body.get("faults") if isinstance(body, dict) else None
    if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
        raise invalid_request('Send {"faults": [names]}.', param="faults", code="invalid_type")
    return faults

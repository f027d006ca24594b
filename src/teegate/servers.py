"""Running ASGI apps under uvicorn (uvloop + httptools) for `serve`, `dev` and `devstack`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn

UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "log_level": "warning",
    "access_log": False,
    "server_header": False,
    "timeout_graceful_shutdown": 30,
    # teegate never reads the client's address: rewriting it from X-Forwarded-*
    # headers would be one more middleware on every request, for nothing.
    "proxy_headers": False,
}


def server(app: Any, *, host: str, port: int, **kwargs: Any) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, **UVICORN_OPTIONS, **kwargs))


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on host:port, for `run_servers`. Binding before
    anything starts tells a taken port up front (OSError), and nothing can take it after."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def run_servers(
    *servers: uvicorn.Server,
    sockets: Sequence[socket.socket] = (),
    alongside: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve several apps on one event loop until interrupted: on `sockets` (one per
    server, from `listen`) if given, with `alongside()` running until they stop."""
    bound = [[sock] for sock in sockets] if sockets else [None] * len(servers)

    async def serve_all() -> None:
        side = asyncio.ensure_future(alongside()) if alongside is not None else None
        try:
            await asyncio.gather(*(s.serve(sockets=b) for s, b in zip(servers, bound, strict=True)))
        finally:
            if side is not None:
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side

    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(serve_all())

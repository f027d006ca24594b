"""Running ASGI apps under uvicorn (uvloop + httptools) for `serve`, `dev` and `devstack`."""

from __future__ import annotations

import asyncio
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


def run_servers(*servers: uvicorn.Server) -> None:
    """Serve several apps on one event loop until interrupted."""

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(serve_all())

"""Running ASGI apps under uvicorn (uvloop + httptools) for `serve`, `dev` and `devstack`."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

LOOP = "uvloop"
HTTP = "httptools"


def server(app: Any, *, host: str, port: int, **kwargs: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=LOOP,
        http=HTTP,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
        **kwargs,
    )
    return uvicorn.Server(config)


def run_servers(*servers: uvicorn.Server) -> None:
    """Serve several apps on one event loop until interrupted."""

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(serve_all())

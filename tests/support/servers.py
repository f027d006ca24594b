"""Real servers on loopback for tests: uvicorn in a thread with its own event loop.

Tests talk to these over real sockets (the official SDKs, aiohttp, httpx), never
through an in-process transport, so what they assert is what a client sees.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from teegate import servers
from teegate.config import HttpLimits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A uvicorn server running `app` on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        app: ASGIApp,
        port: int | None = None,
        http_limits: HttpLimits | None = None,
        **uvicorn_kwargs: Any,
    ) -> None:
        """With `http_limits`, the protocol and limits `teegate serve` runs with."""
        self.port = port or free_port()
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "log_level": "warning",
            "loop": "asyncio",
            "lifespan": "on",
            **uvicorn_kwargs,
        }
        config = (
            servers.GatewayConfig(app, http_limits=http_limits, **options)
            if http_limits is not None
            else uvicorn.Config(app, **options)
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        scheme = "https" if "ssl_certfile" in uvicorn_kwargs else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def serving(app: ASGIApp, **kwargs: Any) -> Iterator[ServerThread]:
    server = ServerThread(app, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()

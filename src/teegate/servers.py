"""Running ASGI apps under uvicorn (uvloop + httptools) for `serve`, `dev` and `devstack`.

uvicorn's httptools protocol reads request heads without limit: httptools keeps a
header's pieces until it ends, so one 190 MB header was read whole and froze the
event loop, and a client that never finished its head held its connection forever.
`LimitedHttpToolsProtocol` bounds what a head may cost (bytes, header lines, time)
and the connections a process holds, and answers every refusal (its own and the
parser's) in the OpenAI error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from teegate.api import RequestIds
from teegate.config import HttpLimits
from teegate.errors import (
    HeadersTooLarge,
    InvalidRequest,
    RequestTimeout,
    ServiceUnavailable,
    TargetTooLong,
    TeegateError,
)

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


class GatewayConfig(uvicorn.Config):
    """uvicorn's config with teegate's HTTP limits, which the protocol reads from it:
    the config is what each worker process is handed."""

    def __init__(self, app: Any, *, http_limits: HttpLimits | None = None, **kwargs: Any) -> None:
        super().__init__(app, **{**UVICORN_OPTIONS, "http": PROTOCOL, **kwargs})
        self.http_limits = http_limits or HttpLimits()


PROTOCOL = "teegate.servers:LimitedHttpToolsProtocol"

_REQUEST_IDS = RequestIds()
"""Ids for the refusals made before a request reaches the app (the app numbers the rest)."""

HEAD_SLACK_BYTES = 64
"""A request line's method, version and separators, beyond its target."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads and connections.

    The per-request cost is a few integer additions per header: the raw bytes of a
    head are counted as they arrive (a header httptools has not finished cannot grow
    past one read beyond the limit), and names and values as the parser hands them over.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = config.http_limits if isinstance(config, GatewayConfig) else HttpLimits()
        self._limits = limits
        self._max_head_bytes = (
            limits.max_target_bytes + limits.max_header_bytes + 4 * limits.max_headers
        ) + HEAD_SLACK_BYTES
        self._in_head = True
        self._head_bytes = 0
        self._header_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: TeegateError | None = None
        """What a parser callback refused: httptools turns the error raised for it into
        a parse error, answered by `send_400_response`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse(ServiceUnavailable("The server has too many open connections."))
            return
        self._arm_head_timer()  # a connection that never sends a byte is timed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._max_head_bytes:
            self._refuse(_headers_too_large(self._limits))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._limits.max_target_bytes:
            raise self._refused(
                TargetTooLong(
                    f"The request target is longer than the limit of "
                    f"{self._limits.max_target_bytes} bytes."
                )
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if (
            self._header_count > self._limits.max_headers
            or self._header_bytes > self._limits.max_header_bytes
        ):
            raise self._refused(_headers_too_large(self._limits))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        """The parser refused the bytes (an unknown method, a NUL in a header), or a
        callback refused what it was handed."""
        self._refuse(
            self._refusal
            or InvalidRequest("The request is not valid HTTP/1.1.", code="invalid_http")
        )

    def _refused(self, error: TeegateError) -> TeegateError:
        self._refusal = error
        return error

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # an answer is being written: no room for another
            return
        self._refuse(
            RequestTimeout(
                f"The request headers did not arrive within "
                f"{self._limits.header_timeout_s:g} seconds."
            )
        )

    def _refuse(self, error: TeegateError) -> None:
        """Answer `error` in the envelope and close: the rest of the stream is unread."""
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        body = error.body()
        head = [
            f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            f"x-request-id: {_REQUEST_IDS.next()}",
            "connection: close",
            *(f"{name}: {value}" for name, value in error.headers().items()),
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.transport.close()


def _headers_too_large(limits: HttpLimits) -> HeadersTooLarge:
    return HeadersTooLarge(
        f"The request headers exceed the limit of {limits.max_headers} lines or "
        f"{limits.max_header_bytes} bytes."
    )


def server(
    app: Any, *, host: str, port: int, http_limits: HttpLimits | None = None, **kwargs: Any
) -> uvicorn.Server:
    return uvicorn.Server(
        GatewayConfig(app, host=host, port=port, http_limits=http_limits, **kwargs)
    )


def run(config: GatewayConfig) -> None:
    """What `uvicorn.run` does with a config built here (it builds its own): serve in
    this process, or in `config.workers` worker processes that each get the config."""
    from uvicorn.supervisors import Multiprocess

    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    if config.workers == 1 and not server.started:
        raise SystemExit(STARTUP_FAILURE)


STARTUP_FAILURE = 3
"""uvicorn's exit status for a server that never started."""


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

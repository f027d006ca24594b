"""The floor: the least a Python proxy can do.

Starlette + uvicorn (uvloop, httptools) + one aiohttp session that forwards
the body (chat completions, embeddings) as it is and relays the answer (streams
byte for byte as they come).
No auth, no limits, no parsing. An https upstream is verified against `--ca-file`
(the bench gives it the enclave's own certificate), as any TLS client would.
Run: `python -m bench.bare_proxy --port P --upstream URL [--ca-file PEM]`.
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


def build_app(upstream: str, ca_file: Path | None = None) -> Starlette:
    base = upstream.rstrip("/")
    sessions: list[aiohttp.ClientSession] = []
    verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ssl=verify)
        async with aiohttp.ClientSession(connector=connector) as session:
            sessions.append(session)
            yield

    async def forward(request: Request) -> Response:
        body = await request.body()
        response = await sessions[0].post(
            base + request.url.path, data=body, headers={"Content-Type": "application/json"}
        )
        content_type = response.headers.get("Content-Type", "application/json")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(_relay(response), media_type=content_type)
        try:
            data = await response.read()
        finally:
            response.release()
        return Response(data, status_code=response.status, media_type=content_type)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", forward, methods=["POST"]),
            Route("/v1/embeddings", forward, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


async def _relay(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for data in response.content.iter_any():
            yield data
    finally:
        if response.content.at_eof():
            response.release()  # finished: the connection goes back to the pool
        else:
            response.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--ca-file", type=Path, help="PEM trusted for an https upstream")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.upstream, args.ca_file),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()

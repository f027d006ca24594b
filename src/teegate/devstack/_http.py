"""Small HTTP helpers: bounded body reads, auth, loopback checks, disconnect waits."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from starlette.requests import Request
from starlette.types import Receive

from teegate.devstack._errors import MAX_BODY_BYTES, body_too_large, invalid_api_key


async def read_body(request: Request) -> bytes:
    """Read the body, refusing it as soon as it passes MAX_BODY_BYTES (bound every body)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise body_too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise body_too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def require_api_key(request: Request, api_key: str | None) -> None:
    """Raise 401 unless the request carries `Bearer <api_key>` (no key configured: open)."""
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    if not hmac.compare_digest(given, api_key.encode()):
        raise invalid_api_key()


def is_loopback(request: Request) -> bool:
    """True only for a client address on loopback; unknown clients are refused."""
    if request.client is None:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


async def client_left_within(receive: Receive, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the client to disconnect; True if it did.

    Awaits the ASGI disconnect message itself instead of polling, so a hung or
    delayed request ends the moment its client goes away and leaves no task.
    Call it only once the body has been read.
    """
    try:
        async with asyncio.timeout(timeout_s):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True

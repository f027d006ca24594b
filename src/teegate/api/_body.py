"""Reading a JSON request body within the configured limit, and the Idempotency-Key
sent with it."""

from __future__ import annotations

import asyncio
import re

from starlette.requests import ClientDisconnect, Request

from teegate.chat import Idempotency
from teegate.errors import ClientClosedRequest, InvalidRequest, RequestTimeout, RequestTooLarge

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
"""Visible ASCII, 1-255 characters: Stripe's limit, and any UUID or ULID fits."""

MAX_LENGTH_DIGITS = 15


async def read_json_body(request: Request, limit_bytes: int, timeout_s: float) -> bytes:
    """The whole body, which must say it is JSON, within `limit_bytes` and `timeout_s`."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise InvalidRequest(
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
            code="unsupported_content_type",
        )
    return await read_body(request, limit_bytes, timeout_s)


async def read_body(request: Request, limit_bytes: int, timeout_s: float) -> bytes:
    """The body as sent (an encrypted one is not JSON to the gateway), within the limit
    and the time: a client trickling its body holds a connection and a task no longer
    than that (408)."""
    declared = request.headers.get("content-length")
    # ASCII digits only ('²' passes isdigit, not int), and a length past any limit
    # is too large without parsing it (int refuses more than 4300 digits).
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and (len(declared) > MAX_LENGTH_DIGITS or int(declared) > limit_bytes)
    ):
        raise _too_large(limit_bytes)
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit_bytes:
                    raise _too_large(limit_bytes)
                chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosedRequest("the client left before sending the whole body") from None
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {timeout_s:g} seconds."
        ) from None
    return b"".join(chunks)


def idempotency_of(request: Request, raw: bytes) -> Idempotency | None:
    """The request's `Idempotency-Key`, with its body, as the meter keeps them (hashed)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(
            "Invalid 'Idempotency-Key' header: use 1 to 255 visible ASCII characters "
            "(a UUID, for instance).",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return Idempotency.of(key, raw)


def _too_large(limit_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is larger than the limit of {limit_bytes} bytes.")

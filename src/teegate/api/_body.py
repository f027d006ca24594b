"""Reading a JSON request body within the configured limit."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from teegate.errors import ClientClosedRequest, InvalidRequest, RequestTimeout, RequestTooLarge


async def read_json_body(request: Request, limit_bytes: int, timeout_s: float) -> bytes:
    """The whole body within `limit_bytes` and `timeout_s`: a client trickling its body
    holds a connection and a task no longer than that (408)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise InvalidRequest(
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
            code="unsupported_content_type",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
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


def _too_large(limit_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is larger than the limit of {limit_bytes} bytes.")

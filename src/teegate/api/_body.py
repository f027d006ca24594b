"""Reading a JSON request body within the configured limit."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from teegate.errors import ClientClosedRequest, InvalidRequest, RequestTooLarge


async def read_json_body(request: Request, limit_bytes: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise InvalidRequest(
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
            code="unsupported_content_type",
        )
    return await read_body(request, limit_bytes)


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The body as sent (an encrypted one is not JSON to the gateway), within the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _too_large(limit_bytes)
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit_bytes:
                raise _too_large(limit_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosedRequest("the client left before sending the whole body") from None
    return b"".join(chunks)


def _too_large(limit_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is larger than the limit of {limit_bytes} bytes.")

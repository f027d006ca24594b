"""One pooled HTTP client per upstream; aiohttp errors become teegate errors here.

Upstream error bodies are never copied into our messages: an upstream may echo
the prompt back, and prompts must not reach an error message. The one exception,
an upstream's refusal of an invalid request, is handed to the chat layer as
`UpstreamRejected.detail`, which shows it only once it has checked it repeats no
prompt text.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import aiohttp
import orjson
import yarl

from teegate.chat import USAGE_HEADER, ResponseHead
from teegate.config import Timeouts, UpstreamSettings
from teegate.errors import (
    SSEError,
    TeegateError,
    UpstreamError,
    UpstreamKeyChanged,
    UpstreamRejected,
    UpstreamTimeout,
    map_error,
)
from teegate.upstream._sse import SSEDecoder

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_EMBEDDINGS_RESPONSE_BYTES = 128 * 1024 * 1024
"""2048 inputs of 4096 dimensions: 46 MB as base64 (the SDKs' default), about 170 MB
as JSON floats; past this, ask for base64 or fewer inputs per request."""
MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_PINNED_POOLS = 4
UNAUTHENTICATED = b"unauthenticated: catalog only"
REJECTED_STATUSES = frozenset({400, 422})
MAX_REFUSAL_BYTES = 64 * 1024

REQUEST_ERRORS: Mapping[type[BaseException], type[TeegateError]] = {
    # aiohttp's read and connect timeouts are ClientErrors too: they need their own entry.
    aiohttp.ServerTimeoutError: UpstreamTimeout,
    aiohttp.ServerFingerprintMismatch: UpstreamKeyChanged,  # not the attested key: re-attest
    aiohttp.ClientError: UpstreamError,
    TimeoutError: UpstreamTimeout,  # asyncio.timeout around the headers; asyncio.TimeoutError
}
"""aiohttp's errors during a request, up to its response headers. Anything else
(a raw OSError included: aiohttp wraps the socket's as ClientOSError) is a bug
and propagates as is (500)."""

STREAM_ERRORS: Mapping[type[BaseException], type[TeegateError]] = {
    aiohttp.ServerTimeoutError: UpstreamTimeout,
    aiohttp.ClientError: UpstreamError,
    TimeoutError: UpstreamTimeout,  # the stream's own idle deadline
    SSEError: UpstreamError,  # an event over the size limit
    ValueError: UpstreamError,  # a line over aiohttp's limit
}
"""Errors while a stream's body is relayed: the upstream stopped or broke it."""


class Listing(NamedTuple):
    """An upstream's catalog entries, and whether they came over a trusted channel
    (the attested pin, or a CA-verified one for provider-asserted upstreams)."""

    entries: list[dict[str, Any]]
    trusted: bool


class Reply(NamedTuple):
    """A whole completion: its bytes, relayed as they came, and their parse, for billing."""

    raw: bytes
    body: dict[str, Any]


class UpstreamStream:
    """An open streamed completion: iterate the SSE data payloads, then close."""

    def __init__(self, response: aiohttp.ClientResponse, upstream: str, idle_s: float) -> None:
        self._response = response
        self._upstream = upstream
        self._idle_s = idle_s
        self._deadline: _IdleDeadline | None = None

    async def events(self) -> AsyncIterator[list[bytes]]:
        """The `data` of the events each socket read completes (often one, never
        none): a relay handles them together, with one write downstream."""
        decoder = SSEDecoder()
        content = self._response.content
        deadline = self._deadline = _IdleDeadline(content, self._idle_s)
        try:
            while chunk := await content.readany():
                deadline.last_read = deadline.loop.time()
                if events := decoder.feed(chunk):
                    yield events
            if events := decoder.end():
                yield events
        except Exception as exc:
            error = map_error(type(exc), STREAM_ERRORS)
            if error is None:
                raise
            raise self._mapped(error, exc) from exc
        finally:
            deadline.cancel()

    def _mapped(self, error: type[TeegateError], exc: Exception) -> TeegateError:
        if error is UpstreamTimeout:
            return UpstreamTimeout(f"upstream '{self._upstream}' stopped sending")
        return error(f"upstream '{self._upstream}' broke the stream ({type(exc).__name__})")

    async def finish(self) -> None:
        """After [DONE]: read to the end of the response (the transfer's last bytes
        often arrive just after), then hand the connection back to the pool for the
        next request, with no new TCP and TLS handshake. A response that does not end
        within the idle bound is closed instead."""
        content = self._response.content
        try:
            while await content.readany():
                pass
        except (TimeoutError, aiohttp.ClientError):
            self.close()
            return
        self._response.release()
        self.close()

    def close(self) -> None:
        """Drop the connection (unless `finish` handed it back): an unfinished
        stream must not be reused, and the upstream should stop generating for a
        client that is gone."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._response.close()


class _IdleDeadline:
    """A stream's read timeout for the cost of a clock read per chunk.

    aiohttp's `sock_read` cancels and re-creates a timer on every socket read,
    the largest single cost of relaying a chunk; here one timer is armed at a
    time, for the last read plus the allowed silence, and re-armed only when it
    fires early. A silence that long fails the pending read with TimeoutError.
    """

    def __init__(self, content: aiohttp.StreamReader, idle_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.last_read = self.loop.time()
        self._content = content
        self._idle_s = idle_s
        self._timer = self.loop.call_at(self.last_read + idle_s, self._check)

    def _check(self) -> None:
        due = self.last_read + self._idle_s
        if self.loop.time() >= due:
            self._content.set_exception(TimeoutError())
        else:
            self._timer = self.loop.call_at(due, self._check)

    def cancel(self) -> None:
        self._timer.cancel()


SEALED_RESPONSE_HEADERS = frozenset({"content-type", "ehbp-response-nonce", "cache-control"})
"""What an EHBP client needs of the enclave's response head: the response nonce its
decryption keys derive from, and the content type. Nothing else of the enclave's
head is relayed."""
MAX_REFUSAL_BYTES = 64 * 1024
USAGE_FETCH_TIMEOUT_S = 5.0


class SealedRelay:
    """An encrypted answer, open: its head, then its body as the socket yields it.

    The body is never parsed (the gateway cannot read it); only its length is known.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        session: aiohttp.ClientSession,
        usage_url: str,
        upstream: str,
        idle_s: float,
    ) -> None:
        self._response = response
        self._session = session
        self._usage_url = usage_url
        self._upstream = upstream
        self._idle_s = idle_s
        self._deadline: _IdleDeadline | None = None
        headers = tuple(
            (k.lower(), v)
            for k, v in response.headers.items()
            if k.lower() in SEALED_RESPONSE_HEADERS
        )
        self.head = ResponseHead(response.status, headers, response.content_length)
        self.usage: str | None = response.headers.get(USAGE_HEADER)

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        deadline = self._deadline = _IdleDeadline(content, self._idle_s)
        size = 0
        try:
            while chunk := await content.readany():
                deadline.last_read = deadline.loop.time()
                size += len(chunk)
                if self.head.status != 200 and size > MAX_REFUSAL_BYTES:
                    raise UpstreamError(f"upstream '{self._upstream}' sent an oversized refusal")
                yield chunk
        except Exception as exc:
            error = map_error(type(exc), STREAM_ERRORS)
            if error is None:
                raise
            raise error(f"upstream '{self._upstream}' broke the encrypted answer") from exc
        finally:
            deadline.cancel()

    async def usage_after(self, request_id: str) -> str | None:
        """The enclave's signed usage for a streamed answer, fetched over the same
        pinned pool once the body is over; None if it has none or cannot say."""
        url = f"{self._usage_url}/{request_id}"
        timeout = aiohttp.ClientTimeout(total=USAGE_FETCH_TIMEOUT_S)
        try:
            async with self._session.get(url, timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                body = orjson.loads(await resp.read())
        except Exception as exc:
            if map_error(type(exc), REQUEST_ERRORS) is None and not isinstance(
                exc, orjson.JSONDecodeError
            ):
                raise
            return None
        value = body.get("usage") if isinstance(body, dict) else None
        return value if isinstance(value, str) else None

    def close(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._response.close()


class UpstreamClient:
    def __init__(
        self,
        settings: UpstreamSettings,
        timeouts: Timeouts,
        *,
        pool_size: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        current_pin: Callable[[], bytes | None] = lambda: None,
    ) -> None:
        self.name = settings.name
        self.base_url = settings.base_url.rstrip("/")
        self._timeouts = timeouts
        self._pool_size = pool_size
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._headers = {"Content-Type": "application/json"}
        if settings.api_key_env:
            self._headers["Authorization"] = f"Bearer {settings.api_key or ''}"
        # Streams time their silences themselves (UpstreamStream); the headers are
        # bounded by the same read timeout, around the request.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect_s, sock_read=None
        )
        # Parsed once: aiohttp would parse a string on every request.
        self._chat_url = yarl.URL(f"{self.base_url}/v1/chat/completions")
        self._embeddings_url = yarl.URL(f"{self.base_url}/v1/embeddings")
        self._sessions: dict[bytes | None, aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self._requires_pin = settings.attestation == "attested-tls"
        self._current_pin = current_pin

    def __repr__(self) -> str:
        return f"UpstreamClient(name={self.name!r}, base_url={self.base_url!r})"

    def session(self, pin: bytes | None = None) -> aiohttp.ClientSession:
        """The pooled session for a TLS pin (SHA-256 of the attested certificate).

        A pinned session checks the pin on every new connection instead of a CA
        chain: the attestation, not a CA, vouches for the key. One pool per pin,
        so a re-attested key never shares connections with the old one.
        """
        session = self._sessions.get(pin)
        if session is None:
            session = self._sessions[pin] = self._new_session(pin)
        return session

    def _new_session(self, pin: bytes | None) -> aiohttp.ClientSession:
        verify: aiohttp.Fingerprint | ssl.SSLContext | bool = self._ssl
        if pin == UNAUTHENTICATED:
            verify = False
        elif pin is not None:
            verify = aiohttp.Fingerprint(pin)
        if len(self._sessions) >= MAX_PINNED_POOLS:
            oldest = next(iter(self._sessions))
            self._closing.add(asyncio.ensure_future(self._sessions.pop(oldest).close()))
        connector = aiohttp.TCPConnector(limit=self._pool_size, ssl=verify, keepalive_timeout=30)
        return aiohttp.ClientSession(
            connector=connector,
            # Cookies an upstream sets must never ride along on another user's request
            # (and filtering a jar costs every request something).
            cookie_jar=aiohttp.DummyCookieJar(),
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self._timeouts.connect_s, sock_read=self._timeouts.read_s
            ),
            read_bufsize=2**16,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_LINE_BYTES,
            skip_auto_headers=("User-Agent",),
        )

    def _pinned_session(self, pin: bytes | None) -> aiohttp.ClientSession:
        """attested-tls traffic goes only over a pinned connection: no pin, no request."""
        if self._requires_pin and pin is None:
            raise UpstreamKeyChanged(f"upstream '{self.name}' has no attested TLS key to pin")
        return self.session(pin)

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def list_models(self) -> Listing:
        """The upstream's catalog; numbers parse as Decimal so prices stay exact.

        An attested-tls upstream without a passing verdict has no key to pin; its
        catalog is still read (so its models are known, and refused as not
        confidential rather than unknown) but over an unauthenticated channel, and
        marked untrusted: the gate serves none of it until re-read over the pin.
        """
        timeout = aiohttp.ClientTimeout(total=self._timeouts.catalog_s)
        url = f"{self.base_url}/v1/models"
        pin = self._current_pin()
        trusted = pin is not None or not self._requires_pin
        session = self.session(pin) if trusted else self._unauthenticated_session()
        async with self._guard("catalog"), session.get(url, timeout=timeout) as resp:
            await self._raise_for_status(resp, rejectable=False)
            body = await resp.read()
        try:
            data = json.loads(body, parse_float=Decimal)["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"upstream '{self.name}' sent an unreadable catalog") from exc
        if not isinstance(data, list):
            raise UpstreamError(f"upstream '{self.name}' sent an unreadable catalog")
        return Listing(data, trusted)

    def _unauthenticated_session(self) -> aiohttp.ClientSession:
        session = self._sessions.get(UNAUTHENTICATED)
        if session is None:
            session = self._sessions[UNAUTHENTICATED] = self._new_session(UNAUTHENTICATED)
        return session

    async def complete(self, body: bytes, *, pin: bytes | None = None) -> Reply:
        post = self._pinned_session(pin).post(self._chat_url, data=body)
        async with self._guard("completion"), post as resp:
            await self._raise_for_status(resp)
            raw = await self._read_all(resp.content, MAX_RESPONSE_BYTES)
        return self._reply(raw)

    async def embed(self, body: bytes, *, pin: bytes | None = None) -> Reply:
        """Embeddings, over the same pinned pool as completions."""
        post = self._pinned_session(pin).post(self._embeddings_url, data=body)
        async with self._guard("embeddings"), post as resp:
            await self._raise_for_status(resp)
            raw = await self._read_all(resp.content, MAX_EMBEDDINGS_RESPONSE_BYTES)
        return self._reply(raw)

    async def _read_all(self, content: aiohttp.StreamReader, limit: int) -> bytes:
        """The whole body, however many reads it arrives in (`read(n)` returns only
        what one read buffered), up to `limit` bytes. Most answers arrive in one
        read, and then this is one await and no copy."""
        first = await content.read(limit + 1)
        parts = [first]
        size = len(first)
        while size <= limit and not content.at_eof():
            chunk = await content.readany()
            if not chunk:
                break
            size += len(chunk)
            parts.append(chunk)
        if size > limit:
            raise UpstreamError(f"upstream '{self.name}' sent more than {limit} bytes")
        return first if len(parts) == 1 else b"".join(parts)

    def _reply(self, raw: bytes) -> Reply:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream '{self.name}' sent a response that is not JSON") from exc
        if not isinstance(parsed, dict):
            raise UpstreamError(f"upstream '{self.name}' sent a response that is not an object")
        return Reply(raw, parsed)

    async def open_stream(self, body: bytes, *, pin: bytes | None = None) -> UpstreamStream:
        post = self._pinned_session(pin).post(
            self._chat_url, data=body, timeout=self._stream_timeout
        )
        async with self._guard("stream"):
            async with asyncio.timeout(self._timeouts.read_s):
                resp = await post
            try:
                await self._raise_for_status(resp)
            except BaseException:
                resp.close()
                raise
        return UpstreamStream(resp, self.name, self._timeouts.read_s)

    async def open_sealed(
        self, body: bytes, headers: Mapping[str, str], *, pin: bytes | None = None
    ) -> SealedRelay:
        """An EHBP-encrypted request, sent as it came with its clear headers. The
        enclave's answer is returned whatever its status: a refusal (4xx) is the
        enclave's to explain to its client, in its own words."""
        session = self._pinned_session(pin)
        post = session.post(
            self._chat_url,
            data=body,
            headers={**headers, "Content-Type": "application/octet-stream"},
            timeout=self._stream_timeout,
        )
        async with self._guard("encrypted request"):
            async with asyncio.timeout(self._timeouts.read_s):
                resp = await post
            if resp.status >= 500:
                resp.close()
                raise UpstreamError(f"upstream '{self.name}' answered HTTP {resp.status}")
        usage_url = f"{self.base_url}/v1/e2ee/usage"
        return SealedRelay(resp, session, usage_url, self.name, self._timeouts.read_s)

    async def _raise_for_status(
        self, resp: aiohttp.ClientResponse, *, rejectable: bool = True
    ) -> None:
        """An error status is the upstream's failure (502), except a 400/422 to a
        client's request: that request is invalid, and the client hears why."""
        if resp.status < 400:
            return
        if rejectable and resp.status in REJECTED_STATUSES:
            raise UpstreamRejected(
                f"The model's upstream refused the request as invalid (HTTP {resp.status}).",
                detail=_refusal_detail(await resp.content.read(MAX_REFUSAL_BYTES)),
            )
        raise UpstreamError(f"upstream '{self.name}' answered HTTP {resp.status}")

    def _guard(self, what: str) -> _ErrorMapping:
        return _ErrorMapping(self.name, what)


def _refusal_detail(raw: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, param, code) of an OpenAI-style error envelope; None where absent
    or not a string. Kept raw: the chat layer decides what of it the client sees."""
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None, None, None
    if not isinstance(error, dict):
        return None, None, None

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    return text("message"), text("param"), text("code")


class _ErrorMapping:
    """Maps aiohttp's exceptions to teegate's at the boundary, by `REQUEST_ERRORS`."""

    def __init__(self, upstream: str, what: str) -> None:
        self._upstream = upstream
        self._what = what

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            return False
        error = map_error(exc_type, REQUEST_ERRORS)
        if error is None:
            return False
        raise error(self._message(error, exc_type)) from exc

    def _message(self, error: type[TeegateError], exc_type: type[BaseException]) -> str:
        upstream = f"upstream '{self._upstream}'"
        if error is UpstreamTimeout:
            return f"{upstream} did not answer the {self._what} in time"
        if error is UpstreamKeyChanged:
            return f"{upstream} presented a TLS key other than the attested one"
        return f"{upstream} failed during the {self._what} ({exc_type.__name__})"

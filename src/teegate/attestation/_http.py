"""The one place attestation talks HTTP: evidence endpoints, NRAS and its JWKS.

Every call has a timeout and a body limit, and every failure (connection, TLS,
status, size, JSON) becomes `AttestationFailed` with a transient check name, so the
refresher keeps the previous verdict until it goes stale instead of crashing.
With `record_peer_certificate`, the TLS certificate is read from the very
connection the evidence came over (each request on a new connection): that
certificate's key is what an attested-tls quote must bind.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson

from teegate.attestation._check import summarize
from teegate.errors import AttestationFailed, map_error

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TIMEOUT_S",
    "UNAVAILABLE_ON",
    "EvidenceHttpClient",
    "HttpJson",
]

DEFAULT_TIMEOUT_S = 15.0
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

UNAVAILABLE_ON: Mapping[type[BaseException], Literal["unavailable"]] = {
    aiohttp.ClientError: "unavailable",  # connect, TLS, protocol, payload, aiohttp's timeouts
    TimeoutError: "unavailable",  # the total timeout (asyncio.TimeoutError is TimeoutError)
    ssl.SSLError: "unavailable",  # a handshake aiohttp did not wrap
    OSError: "unavailable",  # a socket error aiohttp did not wrap
}
"""Errors of an evidence, NRAS or JWKS request that fail it with the client's
transient check (the verdict stays until it goes stale); any other error is a
bug and propagates."""


@dataclass(frozen=True)
class HttpJson:
    """A decoded JSON body and the DER certificate the server presented, if TLS."""

    body: Any = field(repr=False)
    peer_certificate_der: bytes | None = field(default=None, repr=False)


class _PeerCertificateRecorder(aiohttp.Fingerprint):
    """Records the server certificate when aiohttp opens the TLS connection.

    aiohttp calls `Fingerprint.check(transport)` right after the handshake of every
    new connection; a response whose body is already complete has released its
    connection by the time the caller sees it, so this is the one dependable place to
    read the certificate. It checks nothing and skips CA verification, on purpose:
    an enclave's certificate is usually self-signed, and what makes it trustworthy is
    the quote binding its key, checked against the certificate recorded here.
    """

    def __init__(self) -> None:
        super().__init__(b"\0" * 32)
        self.certificate_der: bytes | None = None

    def check(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.certificate_der = bytes(der) if der else None


class EvidenceHttpClient:
    """A small aiohttp client: bounded, timed, failing closed. The session opens lazily."""

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        unavailable_check: str = "evidence_unavailable",
        record_peer_certificate: bool = False,
    ) -> None:
        if record_peer_certificate and ssl_context is not None:
            raise ValueError("record_peer_certificate does its own (unverified) TLS")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_body_bytes = max_body_bytes
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._record = record_peer_certificate
        self._headers = dict(headers or {})
        self._unavailable = unavailable_check
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # headers may carry an API key: never shown
        return f"EvidenceHttpClient(headers={sorted(self._headers)}, record={self._record})"

    async def get_json(self, url: str, *, params: Mapping[str, str] | None = None) -> HttpJson:
        return await self._request("GET", url, params=params, payload=None)

    async def post_json(self, url: str, payload: Any) -> HttpJson:
        return await self._request("POST", url, params=None, payload=payload)

    async def get_bytes(self, url: str) -> tuple[bytes, bytes | None]:
        """A body that is not JSON (an EHBP key config), and the peer's certificate."""
        return await self._fetch("GET", url, params=None, payload=None)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, url: str, *, params: Mapping[str, str] | None, payload: Any
    ) -> HttpJson:
        body, certificate = await self._fetch(method, url, params=params, payload=payload)
        where = f"{method} {_redacted(url)}"
        return HttpJson(_decode_json(body, where, self._unavailable), certificate)

    async def _fetch(
        self, method: str, url: str, *, params: Mapping[str, str] | None, payload: Any
    ) -> tuple[bytes, bytes | None]:
        where = f"{method} {_redacted(url)}"
        recorder = _PeerCertificateRecorder() if self._record else None
        try:
            session = self._ensure_session()
            async with session.request(
                method,
                url,
                params=params,
                json=payload,
                ssl=recorder or self._ssl,
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise AttestationFailed(self._unavailable, f"{where}: HTTP {response.status}")
                body = await self._read_bounded(response, where)
        except Exception as exc:
            if map_error(type(exc), UNAVAILABLE_ON) is None:  # AttestationFailed among them
                raise
            raise AttestationFailed(self._unavailable, f"{where}: {summarize(exc)}") from exc
        return body, recorder.certificate_der if recorder else None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Recording needs a fresh connection (a fresh handshake) per request.
            connector = aiohttp.TCPConnector(force_close=self._record)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers, trust_env=False
            )
        return self._session

    async def _read_bounded(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > self._max_body_bytes:
                reason = f"{where}: body over {self._max_body_bytes} bytes"
                raise AttestationFailed(self._unavailable, reason)
            chunks.append(chunk)
        return b"".join(chunks)


def _decode_json(body: bytes, where: str, check: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AttestationFailed(check, f"{where}: response is not JSON") from exc


def _redacted(url: str) -> str:
    """scheme://host/path: no query string or credentials in reasons and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

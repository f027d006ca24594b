"""The server `teegate serve` runs bounds what one client may make it hold: request
heads (bytes, header lines, time), bodies (time) and connections, and answers
every refusal, the HTTP parser's own included, in the OpenAI error envelope."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from teegate.config import HttpLimits
from teegate.devstack import DevstackConfig, build_app
from tests.support.gateway import Gateway, gateway_settings, running_gateway
from tests.support.servers import serving

LIMITS = HttpLimits(
    max_target_bytes=2048,
    max_header_bytes=4096,
    max_headers=20,
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    max_connections=16,
)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serving(build_app(DevstackConfig())) as upstream:
        settings = gateway_settings(
            tmp_path_factory.mktemp("limits"), upstream.url, http=LIMITS.model_dump()
        )
        with running_gateway(settings, "acme") as gateway:
            yield gateway


def exchange(gateway: Gateway, *chunks: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Send raw bytes and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]))) as conn:
        conn.settimeout(10)
        try:
            for chunk in chunks:
                conn.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: the answer is still there to read
        return parse_answer(read_all(conn))


def read_all(conn: socket.socket) -> bytes:
    received = b""
    try:
        while data := conn.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    return received


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, orjson.loads(body)


def assert_envelope(answer: tuple[int, dict[str, str], dict[str, object]], status: int,
                    code: str) -> None:  # fmt: skip
    got_status, headers, body = answer
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"].startswith("req_")
    error = body["error"]
    assert isinstance(error, dict)
    assert (error["code"], error["status"], error["type"]) == (
        code, status, "invalid_request_error" if status < 500 else "api_error",
    )  # fmt: skip


def still_serving(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200


def test_a_huge_header_is_refused_before_it_is_read_whole(limited: Gateway) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    answer = exchange(limited, head, *(b"a" * 65536 for _ in range(64)))  # 4 MiB offered
    assert_envelope(answer, 431, "request_header_fields_too_large")
    still_serving(limited)


def test_headers_over_the_byte_or_line_limit_are_431(limited: Gateway) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(LIMITS.max_headers + 1))
    answer = exchange(limited, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert_envelope(answer, 431, "request_header_fields_too_large")
    long = b"X-A: " + b"a" * LIMITS.max_header_bytes + b"\r\n"
    answer = exchange(limited, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + long + b"\r\n")
    assert_envelope(answer, 431, "request_header_fields_too_large")


def test_headers_within_the_limits_pass(limited: Gateway) -> None:
    headers = {f"x-h{i}": "v" * 100 for i in range(LIMITS.max_headers - 5)}
    assert httpx.get(f"{limited.url}/healthz", headers=headers).status_code == 200


def test_a_long_target_is_414(limited: Gateway) -> None:
    target = b"/v1/models?" + b"q" * 100_000
    answer = exchange(limited, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_envelope(answer, 414, "uri_too_long")


@pytest.mark.parametrize(
    "raw",
    [
        b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # an unknown method
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",  # NUL in a header
        b"GET /healthz HTTP/9.9\r\n\r\n",
    ],
)
def test_what_the_parser_refuses_is_answered_in_the_envelope(limited: Gateway, raw: bytes) -> None:
    assert_envelope(exchange(limited, raw), 400, "invalid_http")


def test_a_head_sent_too_slowly_is_408_and_closed(limited: Gateway) -> None:
    # Two bytes, then silence: the connection is answered and closed after the header
    # timeout instead of being held for as long as the client likes.
    assert_envelope(exchange(limited, b"GE"), 408, "request_timeout")
    assert_envelope(exchange(limited), 408, "request_timeout")  # nothing sent at all


def test_a_body_sent_too_slowly_is_408(limited: Gateway) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + limited.key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    answer = exchange(limited, head)
    assert_envelope(answer, 408, "request_timeout")
    assert answer[1]["connection"] == "close"


def test_connections_past_the_cap_are_refused_with_503(limited: Gateway) -> None:
    port = int(limited.url.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMITS.max_connections)]
    try:
        with socket.create_connection(("127.0.0.1", port)) as extra:
            extra.settimeout(10)
            status, _, body = parse_answer(read_all(extra))
        assert status == 503
        assert body["error"] == {
            "message": "The server has too many open connections.",
            "type": "api_error",
            "code": "service_unavailable",
            "param": None,
            "status": 503,
        }
    finally:
        for conn in held:
            conn.close()
    still_serving(limited)


def test_slow_clients_do_not_stall_the_others(limited: Gateway) -> None:
    """Slow uploaders of a huge header are cut off; meanwhile others are served."""
    answers: list[int] = []

    def trickle() -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
        answers.append(exchange(limited, head, *(b"a" * 4096 for _ in range(256)))[0])

    threads = [threading.Thread(target=trickle) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(20):
        still_serving(limited)
    for thread in threads:
        thread.join(30)
    assert answers == [431, 431, 431]


def test_the_limits_are_settings(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, "http://127.0.0.1:1", http={"max_headers": 50})
    assert settings.http.max_headers == 50
    assert settings.http.header_timeout_s == HttpLimits().header_timeout_s

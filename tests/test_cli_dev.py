"""`teegate dev` and the CLI beside it, run as a new user runs them: real processes in an
empty directory, the settings found in the file the demo writes, the official SDK as client."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
import typer.main

from teegate.cli import app
from tests.support.dev import (
    PATIENCE_S,
    PORT_FLAGS,
    TEEGATE,
    cli_env,
    lines_of,
    port_flags,
    running_dev,
    stop,
    teegate,
)
from tests.support.servers import free_port

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
EMBEDDER = "Qwen/Qwen3-Embedding-0.6B-TEE"


def ask(base_url: str, key: str) -> str:
    client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0)
    completion = client.chat.completions.create(
        model=R1, messages=[{"role": "user", "content": "Hello!"}], max_tokens=20
    )
    return completion.choices[0].message.content or ""


def test_the_cli_sees_the_running_demo(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    directory.mkdir()
    log = tmp_path / "dev.log"
    with running_dev(directory, log) as demo:
        # The key is printed once the gateway answers: it works at once, no retry.
        assert ask(demo.base_url, demo.key)

        data = directory / ".teegate"
        secret = (data / "key-hash-secret").read_text().strip()
        written = (data / "teegate.toml").read_text()
        assert secret not in written
        assert f'key_hash_secret_file = "{data / "key-hash-secret"}"' in written
        for private in ("key-hash-secret", "teegate.toml"):
            assert stat.S_IMODE((data / private).stat().st_mode) == 0o600

        created = teegate(directory, "accounts", "create", "alice", "--credit-usd", "5")
        assert created.returncode == 0, created.stderr
        issued = teegate(directory, "keys", "create", "--account", "alice")
        assert issued.returncode == 0, issued.stderr
        key = issued.stdout.splitlines()[-1]
        assert key.startswith("vgpu_sk_")

        listed = teegate(directory, "models", "--json")
        assert listed.returncode == 0, listed.stderr
        r1 = {m["id"]: m for m in json.loads(listed.stdout)}[R1]
        assert (r1["attestation"]["status"], r1["attestation"]["mode"]) == ("verified", "simulated")

        attested = teegate(directory, "attest", R1, "--json")
        assert attested.returncode == 0, attested.stderr
        [offer] = json.loads(attested.stdout)
        assert offer["upstream"] == "devstack"
        assert offer["verdicts"] and all(v["passed"] for v in offer["verdicts"])

        client = openai.OpenAI(api_key=key, base_url=demo.base_url, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=R1, messages=[{"role": "user", "content": "Hello!"}], max_tokens=20
        )
        assert raw.parse().choices[0].message.content
        request_id = raw.headers["x-request-id"]

        usage = teegate(directory, "usage", "--account", "alice")
        assert usage.returncode == 0, usage.stderr
        assert request_id in usage.stdout  # whole, on an 80-column terminal
        assert "1 requests" in usage.stdout

        # The demo serves a confidential embedding model too: /v1/embeddings is open.
        embedder = {m["id"]: m for m in json.loads(listed.stdout)}[EMBEDDER]
        assert embedder["modality"] == "embeddings"
        embedded = client.embeddings.create(model=EMBEDDER, input=["Hello!", "Bye!"])
        assert [len(e.embedding) for e in embedded.data] == [1024, 1024]
    # Ctrl-C ends the demo by itself (130: interrupted), without a traceback.
    assert demo.process.returncode in (0, 130), log.read_text()
    assert "Traceback" not in log.read_text()

    # A second run keeps the secret: the key issued on the first one still works.
    with running_dev(directory, log) as again:
        assert ask(again.base_url, key)


@pytest.mark.parametrize("flag", PORT_FLAGS)
def test_a_taken_port_is_one_line_and_nothing_is_made(tmp_path: Path, flag: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ports = {f: free_port() for f in PORT_FLAGS} | {flag: port}
        result = teegate(tmp_path, "dev", *port_flags(ports))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: port {port} is in use (change it with {flag})"]
    assert list(tmp_path.iterdir()) == []  # no data directory, so no database and no key


def test_serve_on_an_unmigrated_database_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "teegate.toml").write_text('environment = "development"\n')
    result = teegate(tmp_path, "serve", "--config", "teegate.toml")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "run `teegate db upgrade`" in line


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["keys", "create"], 2, "Missing option '--account'"),
        (["accounts", "create", "x", "--config", "missing.toml"], 2, "missing.toml"),
        (["no-such-command"], 2, "No such command"),
        (["accounts", "list"], 1, "key_hash_secret: required in production"),
    ],
)
def test_every_error_is_one_line(
    tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    result = teegate(tmp_path, *args)
    assert result.returncode == status
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert message in line


def test_an_unexpected_error_is_one_line_and_debug_shows_where(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there: the database is unreachable
    (tmp_path / "teegate.toml").write_text(
        f'environment = "development"\ndatabase_url = "postgresql+asyncpg://u@127.0.0.1:{closed}/x"\n'
    )
    plain = teegate(tmp_path, "accounts", "list", "--config", "teegate.toml")
    assert plain.returncode == 1
    [line] = plain.stderr.splitlines()
    assert line.startswith("error: ") and "--debug" in line
    debug = teegate(tmp_path, "--debug", "accounts", "list", "--config", "teegate.toml")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr


def test_every_command_option_and_argument_has_help() -> None:
    root = typer.main.get_command(app)
    missing = []
    stack = [("teegate", root)]
    while stack:
        path, command = stack.pop()
        if not command.help:
            missing.append(path)
        for param in command.params:
            if param.name != "help" and not getattr(param, "help", None):
                missing.append(f"{path} {param.name}")
        for name, sub in getattr(command, "commands", {}).items():
            stack.append((f"{path} {name}", sub))
    assert missing == []


@pytest.mark.parametrize("flag", ["--embeddings", "--no-embeddings"])
def test_devstack_serves_embeddings_when_asked(tmp_path: Path, flag: str) -> None:
    ports = {flag: free_port() for flag in ("--port", "--services-port")}
    process = subprocess.Popen(
        [TEEGATE, "devstack", flag, *port_flags(ports), "--tls-dir", str(tmp_path)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = lines_of(process.stdout)
        while "simulated enclave upstream" not in (lines.get(timeout=PATIENCE_S) or "upstream"):
            pass
        url = f"https://127.0.0.1:{ports['--port']}"
        # The dev root CA signs no web PKI chain: the gateway pins the attested key instead.
        listed = httpx.get(f"{url}/v1/models", verify=False, timeout=PATIENCE_S).json()
        assert (EMBEDDER in {m["id"] for m in listed["data"]}) is (flag == "--embeddings")
    finally:
        stop(process)

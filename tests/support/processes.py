"""Real processes on loopback: `teegate serve` as a child process, and private
PostgreSQL and Redis servers a test may restart without touching the machine's own.

The fault and canary suites (tests/faults/) and the crash test build on these: a
process can be SIGKILLed, restarted, and its file descriptors, connections and
memory read from /proc.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import KEY_SECRET
from tests.support.servers import free_port

TEEGATE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "teegate"


def gateway_config(
    *,
    port: int,
    data_dir: Path,
    database_url: str,
    upstream: str,
    attestation: dict[str, Any] | None = None,
    read_s: float = 30,
    **settings: Any,
) -> str:
    """A TOML config for `teegate serve`: development mode, one upstream (attested-tls
    when `attestation` is given, else provider-asserted), and any other top-level
    `settings`. Values are written as JSON, which TOML reads the same for strings,
    numbers and booleans."""
    top: dict[str, Any] = {
        "environment": "development",
        "port": port,
        "data_dir": str(data_dir),
        "database_url": database_url,
        "key_hash_secret": KEY_SECRET,
        **settings,
    }
    timeouts = {"connect_s": 2, "read_s": read_s, "catalog_s": 2}
    mode = "attested-tls" if attestation is not None else "provider-asserted"
    sections = [
        _toml_table(None, top),
        _toml_table("timeouts", timeouts),
        "[[upstreams]]\n"
        + _toml_table(None, {"name": "devstack", "base_url": upstream, "attestation": mode}),
    ]
    if attestation is not None:
        sections.append(_toml_table("attestation", attestation))
    return "\n".join(sections)


def _toml_table(name: str | None, values: dict[str, Any]) -> str:
    header = f"[{name}]\n" if name else ""
    return header + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


@dataclass(frozen=True)
class Resources:
    """What a process holds, read from /proc: leaks show as growth between two reads."""

    fds: int
    connections: int
    """Established TCP connections among its sockets."""
    rss_kb: int

    def exceeds(self, baseline: Resources) -> dict[str, int]:
        """What is above `baseline` (fds and connections; memory is the soak's)."""
        over = {
            "fds": self.fds - baseline.fds,
            "connections": self.connections - baseline.connections,
        }
        return {name: n for name, n in over.items() if n > 0}


def resources(pid: int, pool_files: Path | None = None) -> Resources:
    """Files under `pool_files` (SQLite's database and journal, opened by each pooled
    connection when the pool first needs it, and bounded by its size) are not counted."""
    inodes = set()
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if pool_files is not None and target.startswith(f"{pool_files}{os.sep}"):
            continue
        fds += 1
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    established = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                established += fields[3] == "01" and fields[9] in inodes
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return Resources(fds, established, rss_kb)


class GatewayProcess:
    """`teegate serve --config FILE` as a child process; restartable, killable.

    Its stdout and stderr are appended to `log`, across restarts. The config file
    lives in the gateway's data directory.
    """

    def __init__(self, config: Path, log: Path, port: int, **env: str) -> None:
        self.config = config
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, **env: str) -> GatewayProcess:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [str(TEEGATE), "serve", "--config", str(self.config)],
                env={**os.environ, **self.env, **env}, stdout=sink, stderr=sink,
            )  # fmt: skip
        wait_healthy(self.url, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def resources(self) -> Resources:
        return resources(self.pid, pool_files=self.config.parent)


@contextlib.contextmanager
def gateway_process(config: Path, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`teegate serve --config FILE` started (not waited for); SIGTERMed at the end."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(TEEGATE), "serve", "--config", str(config)],
            env={**os.environ, **env}, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90  # a loaded machine takes long to start Python
    while True:
        assert process.poll() is None, "the gateway exited at start-up"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway never became healthy"
        time.sleep(0.05)


def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PrivatePostgres:
    """A PostgreSQL cluster of its own in a new temporary directory, on a free port,
    trust auth: a test may stop and restart it. initdb refuses root, so as root the
    cluster is run by the `postgres` user (runuser), in a directory directly under the
    system's temp directory (pytest's are private to root, closed to `postgres`)."""

    def __init__(self) -> None:
        initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self._pg_ctl = pg_ctl
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: initdb refuses root")
            self._as = ["runuser", "-u", "postgres", "--"]
        directory = Path(tempfile.mkdtemp(prefix="teegate-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as, *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(self._pg_ctl, "-D", str(self.data), "-o", options,
                  "-l", str(self.directory / "server.log"), "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(self._pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def dump(self, database: str) -> bytes:
        """`pg_dump` of `database`: every byte PostgreSQL keeps for it."""
        pg_dump = _postgres_bin("pg_dump")
        assert pg_dump is not None
        argv = [pg_dump, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database]
        return subprocess.run(argv, check=True, capture_output=True).stdout


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop("immediate")
        shutil.rmtree(server.directory, ignore_errors=True)


class PrivateRedis:
    """A `redis-server` of its own on a free port, no persistence: restartable."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self._binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [self._binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            assert time.monotonic() < deadline, "redis-server never answered"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()

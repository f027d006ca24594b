"""Starting, pinning, watching and stopping the servers the bench runs.

Every server is started here, pinned to one CPU with taskset, in a session of
its own so that it (and any worker it forks) can be stopped by its own id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import HOST, LOGS, log

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: held open together, so no two can be the same."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass
class Server:
    """A started server; with `ca_file` it serves TLS, verified against that file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    ca_file: Path | None = None
    client_headers: dict[str, str] = field(default_factory=dict)
    """Headers every client request must carry besides the key (Portkey's routing)."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_file is not None else "http"
        return f"{scheme}://{HOST}:{self.port}"

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def start(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    cpu: int | str,
    ready_path: str,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60.0,
    ca_file: Path | None = None,
) -> Server:
    """Start `argv` pinned to `cpu` (or a taskset list, "0,1") and wait until `ready_path`
    answers (over TLS verified with `ca_file` when given, so a wrong certificate is never
    "ready")."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{name}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = Server(name, proc, port, log_path, ca_file)
    try:
        wait_ready(server, server.url + ready_path, ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(server: Server, url: str, timeout_s: float = 60.0) -> None:
    """Wait until `url` (served by `server`, or a sibling it runs) answers; fail early
    with the log's tail if the server exits."""
    deadline = time.monotonic() + timeout_s
    problem = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{tail}")
        problem = _problem(url, server.ca_file)
        if not problem:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} was not ready at {url} within {timeout_s:.0f} s: {problem}")


def _problem(url: str, ca_file: Path | None) -> str:
    """Why `url` is not ready ("" once it answers below 500). The CA file is read on
    every try: a server that writes its own certificate has done so once it listens."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return "" if response.status < 500 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return "" if exc.code < 500 else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:  # ssl.SSLError, a missing CA file
        return str(exc)


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (a server that forked workers is measured whole)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def rss_kb(pid: int) -> int:
    """Resident memory of the process tree, in KiB (VmRSS from /proc/<pid>/status)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process tree (utime + stime from /proc/<pid>/stat)."""
    return sum(_one_cpu_s(p) for p in tree(pid))


def _one_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_s() -> tuple[float, float]:
    """(busy in processes, stolen by the hypervisor): CPU seconds since boot, all cores.

    Interrupt time is left out: loopback traffic is accounted there, not to a process.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return (user + nice + system) / CLK_TCK, steal / CLK_TCK


def own_cpu_s() -> float:
    """CPU seconds of this process, its live descendants and its reaped children."""
    times = os.times()
    live = sum(_one_cpu_s(p) for p in tree(os.getpid()) if p != os.getpid())
    return times.user + times.system + times.children_user + times.children_system + live


def describe(server: Server) -> str:
    return f"{server.name} (pid {server.pid}, port {server.port})"


def note_started(server: Server) -> None:
    log(f"started {describe(server)}")

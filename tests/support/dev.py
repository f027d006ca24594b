"""`teegate dev` run as a new user runs it: a real process in a directory of its own,
the settings found in the file the demo writes, stopped after."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tests.support.servers import free_port

TEEGATE = str(Path(sys.executable).with_name("teegate"))  # the installed console script
PORT_FLAGS = ("--port", "--devstack-port", "--services-port")
# Bounds a hung process only; nothing here asserts how long anything takes.
PATIENCE_S = 180


def cli_env() -> dict[str, str]:
    """The caller's environment less its teegate settings (the directory's file decides),
    on an 80-column terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEEGATE_")}
    return env | {"COLUMNS": "80"}


def teegate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TEEGATE, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        check=False,
    )


def port_flags(ports: dict[str, int]) -> list[str]:
    return [part for flag, port in ports.items() for part in (flag, str(port))]


@dataclass
class Demo:
    process: subprocess.Popen[str]
    base_url: str
    key: str
    banner: list[str]


@contextmanager
def running_dev(directory: Path, log: Path, *args: str) -> Iterator[Demo]:
    """`teegate dev` on free ports, until its key line; always stopped after (SIGINT,
    then SIGKILL if it lingers)."""
    ports = {flag: free_port() for flag in PORT_FLAGS}
    with log.open("a") as stderr:
        process = subprocess.Popen(
            [TEEGATE, "dev", *port_flags(ports), *args],
            cwd=directory,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        key, banner = key_line(lines_of(process.stdout), log)
        yield Demo(process, f"http://127.0.0.1:{ports['--port']}/v1", key, banner)
    finally:
        stop(process)


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def key_line(lines: queue.Queue[str | None], log: Path) -> tuple[str, list[str]]:
    seen: list[str] = []
    while (line := lines.get(timeout=PATIENCE_S)) is not None:
        seen.append(line)
        if match := re.search(r"API key\s*:\s*(\S+)", line):
            return match[1], seen
    pytest.fail(f"teegate dev ended without a key: {seen}\n{log.read_text()}")


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

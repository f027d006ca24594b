"""Installs what the bench needs, each piece only if it is missing.

nginx and wrk come from Debian (apt); LiteLLM and the tools (matplotlib,
py-spy) get venvs of their own under bench/.work/, never the project's; Portkey's
gateway an npm prefix of its own there (`bench/.work/portkey/`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bench.common import (
    APT_PACKAGES,
    LITELLM_VERSION,
    PORTKEY_HONO_NODE_SERVER,
    PORTKEY_VERSION,
    TOOLS,
    WORK,
    log,
)

SBIN_PATHS = ("/usr/sbin", "/sbin")


def which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN_PATHS:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    return None


def ensure_apt_packages() -> tuple[str, str]:
    """nginx and wrk: (nginx path, wrk path), installed with apt-get when absent."""
    nginx, wrk = which("nginx"), which("wrk")
    if nginx and wrk:
        return nginx, wrk
    if os.geteuid() != 0:
        raise SystemExit(
            f"bench: nginx and wrk are missing and installing them needs root: "
            f"apt-get install -y {' '.join(APT_PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {' '.join(APT_PACKAGES)} with apt-get")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env)
    nginx, wrk = which("nginx"), which("wrk")
    if not (nginx and wrk):
        raise SystemExit("bench: apt-get finished but nginx or wrk is still missing")
    return nginx, wrk


def _venv(path: Path, requirements: tuple[str, ...]) -> Path:
    """A venv at `path` holding exactly `requirements` (a stamp file records them)."""
    python = path / "bin" / "python"
    stamp = path / ".bench-installed"
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"installing {', '.join(requirements)} into {path.relative_to(WORK.parent.parent)}")
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(path)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def litellm_venv_ready() -> bool:
    stamp = WORK / "litellm-venv" / ".bench-installed"
    return stamp.exists() and stamp.read_text() == _litellm_requirement()


def _litellm_requirement() -> str:
    return f"litellm[proxy]=={LITELLM_VERSION}"


def ensure_litellm() -> Path:
    """The `litellm` executable of a pinned LiteLLM in its own venv."""
    python = _venv(WORK / "litellm-venv", (_litellm_requirement(),))
    return python.parent / "litellm"


def ensure_tools() -> Path:
    """The python of the tools venv (matplotlib for the plot, py-spy for the profile)."""
    return _venv(WORK / "tools-venv", TOOLS)


PORTKEY_PREFIX = WORK / "portkey"
PORTKEY_PACKAGE = "@portkey-ai/gateway"


def _portkey_manifest() -> str:
    """The prefix's package.json: the gateway pinned, and `@hono/node-server` held at the
    last version it streams with, everywhere in the tree (an npm override)."""
    return json.dumps(
        {
            "private": True,
            "dependencies": {PORTKEY_PACKAGE: PORTKEY_VERSION},
            "overrides": {"@hono/node-server": PORTKEY_HONO_NODE_SERVER},
        },
        indent=2,
    )


def _portkey_server() -> Path:
    return PORTKEY_PREFIX / "node_modules" / PORTKEY_PACKAGE / "build" / "start-server.js"


def portkey_ready() -> Path | None:
    """The gateway's start script if the pinned version is installed (no network)."""
    stamp = PORTKEY_PREFIX / ".bench-installed"
    ready = stamp.exists() and stamp.read_text() == _portkey_manifest()
    return _portkey_server() if ready and _portkey_server().exists() and which("node") else None


def ensure_portkey() -> Path | None:
    """Portkey's gateway, pinned, installed with npm into its own prefix; None (the
    caller notes the skip) when node or npm is missing."""
    ready = portkey_ready()
    if ready is not None:
        return ready
    npm, node = which("npm"), which("node")
    if npm is None or node is None:
        log("node/npm not found: Portkey skipped (apt-get install -y nodejs npm to run it)")
        return None
    log(f"installing {PORTKEY_PACKAGE}@{PORTKEY_VERSION} into bench/.work/portkey")
    PORTKEY_PREFIX.mkdir(parents=True, exist_ok=True)
    (PORTKEY_PREFIX / "package.json").write_text(_portkey_manifest())
    (PORTKEY_PREFIX / "package-lock.json").unlink(missing_ok=True)
    shutil.rmtree(PORTKEY_PREFIX / "node_modules", ignore_errors=True)
    subprocess.run(
        [npm, "install", "--prefix", str(PORTKEY_PREFIX), "--no-audit", "--no-fund"], check=True
    )
    (PORTKEY_PREFIX / ".bench-installed").write_text(_portkey_manifest())
    return _portkey_server()

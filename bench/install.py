"""Installs what the bench needs, each piece only if it is missing.

nginx and wrk come from Debian (apt); LiteLLM and the tools (matplotlib,
py-spy) get venvs of their own under bench/.work/, never the project's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.common import APT_PACKAGES, LITELLM_VERSION, TOOLS, WORK, log

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

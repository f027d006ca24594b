"""A simulated confidential upstream for development, the demo, tests and benchmarks.

An OpenAI-compatible server (`GET /v1/models`, `POST /v1/chat/completions`)
that answers deterministically, streams like OpenAI, and misbehaves on
demand through named faults (see FAULTS), plus loopback-only admin endpoints
(`/admin/stats`, `/admin/faults`, `/admin/reset`).
"""

from __future__ import annotations

from teegate.devstack._app import build_app
from teegate.devstack._config import DevstackConfig
from teegate.devstack._faults import FAULTS

__all__ = ["FAULTS", "DevstackConfig", "build_app"]

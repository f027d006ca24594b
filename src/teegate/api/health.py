"""Liveness, readiness and metrics.

`/healthz` is open (it says only that the process answers). `/readyz` answers its
status and, per dependency, ok or failing to anyone (load balancers probe it on the
API port); why a check fails (upstream names, errors) only to an operator.
`/metrics` (traffic, models, revenue) only to an operator. An operator sends the
admin token, or the scrape-only metrics token, as a bearer token.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from teegate import apikeys
from teegate.api._responses import json_response
from teegate.api._state import gateway
from teegate.errors import InvalidAdminToken


def is_operator(request: Request) -> bool:
    settings = gateway(request).settings
    return apikeys.bearer_matches(
        request.headers.get("authorization"),
        [settings.admin_token_sha256, settings.metrics_token_sha256],
    )


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    checks = await gateway(request).readiness.report()
    ready = all(v == "ok" for v in checks.values())
    if not is_operator(request):
        checks = {name: "ok" if v == "ok" else "failing" for name, v in checks.items()}
    return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: Request) -> Response:
    if not is_operator(request):
        raise InvalidAdminToken(
            "/metrics takes the admin token or the metrics token, as 'Authorization: "
            "Bearer <token>' (settings admin_token_sha256, metrics_token_sha256)."
        )
    return Response(gateway(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

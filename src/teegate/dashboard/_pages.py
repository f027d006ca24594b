"""The dashboard's pages and the billing page a 402 points to. Thin: read the form,
check the CSRF token, call the wired services, render.

No secret ever travels in a URL: a new key's secret is in the body of the page that
answers its creation (never a redirect), and an invite token arrives in the link's
fragment, which browsers do not send, and is posted in a form.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from teegate.billing import describe_balance, nano_to_usd
from teegate.dashboard._chart import DAY_MS, usage_chart
from teegate.dashboard._security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    clear_session,
    csrf_ok,
    csrf_token,
    security_headers,
    set_cookies,
)
from teegate.dashboard._services import Dashboard
from teegate.errors import NotFound, RequestTooLarge, TeegateError

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
MAX_WEBHOOK_BYTES = 256 * 1024
"""Stripe's events are a few kilobytes; a body past this is not one."""
MIN_PASSWORD_CHARS = 12
USAGE_WINDOWS = (7, 30, 90)
LEDGER_ROWS = 50
MAX_LIMIT = 100_000_000
KEY_NAME = re.compile(r"^[\w .@:/-]{0,64}$")
RECEIPT_ID = re.compile(r"^[\w-]{1,64}$")

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)


def _usd(nano: int) -> str:
    return "$" + nano_to_usd(nano) if nano >= 0 else "-$" + nano_to_usd(-nano)


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return ""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _when_short(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%m-%d %H:%M")


templates.filters["usd"] = _usd
templates.filters["when_short"] = _when_short
templates.filters["when"] = _when


def dashboard(request: Request) -> Dashboard:
    state: Dashboard = request.app.state.dashboard
    return state


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    session: str | None = None,
    **context: Any,
) -> HTMLResponse:
    dash = dashboard(request)
    body = templates.get_template(template).render(
        request=request,
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(dash.csrf_secret, request, session),
        **context,
    )
    response = HTMLResponse(body, status_code=status, headers=headers(request))
    set_cookies(
        response, request, secure=dash.secure_cookies, session=session, ttl_s=dash.session_ttl_s
    )
    return response


def headers(request: Request) -> dict[str, str]:
    return security_headers(dashboard(request).checkout_origins)


def redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers=headers(request))


Page = Callable[[Request, int], Awaitable[Response]]


def signed_in(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """The page for the session's account; else the sign-in page. A POST must also
    carry the session's CSRF token."""

    async def endpoint(request: Request) -> Response:
        dash = dashboard(request)
        token = request.cookies.get(SESSION_COOKIE)
        account_id = await dash.console.session_account(token) if token else None
        if account_id is None:
            return redirect(request, "/dashboard/sign-in")
        if request.method == "POST":
            form = await read_form(request)
            if not csrf_ok(dash.csrf_secret, request, form.get(CSRF_FIELD)):
                return forbidden(request)
            request.state.form = form
        request.state.account_name = await dash.console.account_name(account_id)
        return await page(request, account_id)

    endpoint.__name__ = page.__name__
    endpoint.__doc__ = page.__doc__
    return endpoint


async def read_form(request: Request) -> FormData:
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > MAX_FORM_BYTES:
        return FormData()
    return await request.form(max_files=0, max_fields=20)


def forbidden(request: Request) -> HTMLResponse:
    return render(
        request,
        "message.html",
        status=403,
        title="Form expired",
        message="This form is stale or came from another site. Go back, reload and try again.",
    )


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# ---- sign-in, sign-out, invite ----


async def sign_in_page(request: Request) -> Response:
    if request.method == "GET":
        return render(request, "sign_in.html", error=None, email="")
    dash = dashboard(request)
    form = await read_form(request)
    if not csrf_ok(dash.csrf_secret, request, form.get(CSRF_FIELD)):
        return forbidden(request)
    email, password = _text(form, "email"), form.get("password")
    client = request.client.host if request.client else "unknown"
    wait_s = await dash.console.allow_sign_in(email, client)
    if wait_s is not None:
        response = render(
            request,
            "sign_in.html",
            status=429,
            email=email,
            error=f"Too many sign-in attempts. Try again in {wait_s} seconds.",
        )
        response.headers["retry-after"] = str(wait_s)
        return response
    account_id = None
    if email and isinstance(password, str) and password:
        account_id = await dash.console.sign_in(email, password)
    if account_id is None:
        return render(
            request, "sign_in.html", status=401, email=email, error="Wrong email or password."
        )
    return _start_session(request, await dash.console.open_session(account_id))


def _start_session(request: Request, session: str) -> Response:
    dash = dashboard(request)
    response = redirect(request, "/dashboard")
    set_cookies(
        response, request, secure=dash.secure_cookies, session=session, ttl_s=dash.session_ttl_s
    )
    return response


async def sign_out(request: Request) -> Response:
    dash = dashboard(request)
    form = await read_form(request)
    token = request.cookies.get(SESSION_COOKIE)
    if not csrf_ok(dash.csrf_secret, request, form.get(CSRF_FIELD)):
        return forbidden(request)
    if token:
        await dash.console.close_session(token)
    response = redirect(request, "/dashboard/sign-in")
    clear_session(response, secure=dash.secure_cookies)
    return response


async def invite_page(request: Request) -> Response:
    """The invite link's token is in its fragment; the page's script moves it into
    the form, and it reaches the server only in this POST's body."""
    if request.method == "GET":
        return render(request, "invite.html", error=None)
    dash = dashboard(request)
    form = await read_form(request)
    if not csrf_ok(dash.csrf_secret, request, form.get(CSRF_FIELD)):
        return forbidden(request)
    token, password = _text(form, "invite"), form.get("password")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        error = f"Choose a password of at least {MIN_PASSWORD_CHARS} characters."
        return render(request, "invite.html", status=400, error=error)
    if password != form.get("password_again"):
        return render(request, "invite.html", status=400, error="The passwords differ.")
    account_id = await dash.console.accept_invite(token, password) if token else None
    if account_id is None:
        error = "This invite link is unknown, used or expired: ask for a new one."
        return render(request, "invite.html", status=400, error=error)
    return _start_session(request, await dash.console.open_session(account_id))


# ---- the signed-in pages ----


async def overview(request: Request, account_id: int) -> Response:
    console = dashboard(request).console
    balance = await console.balance(account_id)
    return render(
        request,
        "overview.html",
        nav="overview",
        balance=describe_balance(balance),
        available_nano=balance.available_nano,
        ledger=await console.ledger(account_id, LEDGER_ROWS),
    )


async def keys_page(request: Request, account_id: int) -> Response:
    """GET lists the keys; POST creates one and shows its secret on this answer only."""
    console = dashboard(request).console
    created, error = None, None
    if request.method == "POST":
        form = request.state.form
        name, rpm_text = _text(form, "name"), _text(form, "rpm")
        if not KEY_NAME.match(name):
            error = "A key's name is up to 64 letters, digits, spaces and . @ : / - _"
        elif rpm_text and not (rpm_text.isdigit() and 1 <= int(rpm_text) <= MAX_LIMIT):
            error = f"Requests per minute: a whole number from 1 to {MAX_LIMIT}, or empty."
        else:
            created = await console.create_key(
                account_id, name, int(rpm_text) if rpm_text else None
            )
    return await _keys(request, account_id, created=created, error=error)


async def _keys(request: Request, account_id: int, **context: Any) -> Response:
    keys = await dashboard(request).console.keys(account_id)
    status = 400 if context.get("error") else 200
    return render(request, "keys.html", status=status, nav="keys", keys=keys, **context)


async def revoke_key(request: Request, account_id: int) -> Response:
    key_id = request.path_params["key_id"]
    if not await dashboard(request).console.revoke_key(account_id, key_id):
        return await _keys(request, account_id, error="No such key on this account.")
    return redirect(request, "/dashboard/keys")


async def rotate_key(request: Request, account_id: int) -> Response:
    key_id = request.path_params["key_id"]
    created = await dashboard(request).console.rotate_key(account_id, key_id)
    if created is None:
        return await _keys(request, account_id, error="No such active key on this account.")
    return await _keys(request, account_id, created=created, rotated=key_id)


async def key_limits(request: Request, account_id: int) -> Response:
    form = request.state.form
    limits = [_text(form, "rpm"), _text(form, "tpm")]
    if not all(t == "" or (t.isdigit() and 1 <= int(t) <= MAX_LIMIT) for t in limits):
        error = f"Limits are whole numbers from 1 to {MAX_LIMIT}, or empty for none."
        return await _keys(request, account_id, error=error)
    rpm, tpm = (int(t) if t else None for t in limits)
    key_id = request.path_params["key_id"]
    if not await dashboard(request).console.set_limits(account_id, key_id, rpm=rpm, tpm=tpm):
        return await _keys(request, account_id, error="No such active key on this account.")
    return redirect(request, "/dashboard/keys")


def _window(request: Request) -> int:
    text = request.query_params.get("days", "30")
    return int(text) if text.isdigit() and int(text) in USAGE_WINDOWS else 30


def _first_day_ms(days: int) -> int:
    today = datetime.now(UTC).timestamp() * 1000 // DAY_MS * DAY_MS
    return int(today) - (days - 1) * DAY_MS


async def usage_page(request: Request, account_id: int) -> Response:
    days = _window(request)
    first = _first_day_ms(days)
    rows = await dashboard(request).console.usage_by_day(account_id, first)
    by_model: dict[str, list[int]] = {}
    for row in rows:
        totals = by_model.setdefault(row.model, [0, 0, 0, 0])
        for i, value in enumerate(
            (row.requests, row.prompt_tokens, row.completion_tokens, row.cost_nano)
        ):
            totals[i] += value
    chart = usage_chart(rows, first_day_ms=first, day_count=days)
    return render(
        request,
        "usage.html",
        nav="usage",
        days=days,
        windows=USAGE_WINDOWS,
        chart=Markup(chart.svg),  # noqa: S704 - built from escaped parts by usage_chart
        legend=chart.models,
        rows=list(reversed(rows)),
        by_model=sorted(by_model.items()),
        total_nano=sum(r.cost_nano for r in rows),
        total_requests=sum(r.requests for r in rows),
    )


CSV_COLUMNS = (
    "request_id",
    "started_at",
    "key_id",
    "model",
    "stream",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "settled_by",
)


async def usage_csv(request: Request, account_id: int) -> Response:
    """Every settled request of the window, newest first (ids, tokens and cost: never text)."""
    days = _window(request)
    records = await dashboard(request).console.usage_records(account_id, _first_day_ms(days))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow(
            (
                r.request_id,
                datetime.fromtimestamp(r.started_ms / 1000, UTC).isoformat(timespec="seconds"),
                r.key_id,
                r.model,
                str(r.stream).lower(),
                r.status,
                r.prompt_tokens,
                r.completion_tokens,
                nano_to_usd(r.cost_nano),
                r.settled_by,
            )
        )
    filename = f"teegate-usage-{days}d.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={**headers(request), "content-disposition": f'attachment; filename="{filename}"'},
    )


async def models_page(request: Request, account_id: int) -> Response:
    return render(request, "models.html", nav="models", models=dashboard(request).console.models())


async def receipts_page(request: Request, account_id: int) -> Response:
    """GET shows the lookup form; POST looks up the id in its body. Another account's
    receipt is answered exactly as one never issued (the service's NotFound)."""
    dash = dashboard(request)
    receipt_id, signed, error, status = "", None, None, 200
    if request.method == "POST":
        receipt_id = _text(request.state.form, "receipt_id")
        if not RECEIPT_ID.match(receipt_id):
            error, status = "Enter a receipt id: the X-TEE-Receipt header, rcpt_…", 400
        else:
            try:
                signed = await dash.receipts.receipt_for(receipt_id, account_id)
            except NotFound as exc:
                error, status = exc.message, 404
    receipt = signed["receipt"] if signed is not None else None
    return render(
        request,
        "receipts.html",
        status=status,
        nav="receipts",
        receipt_id=receipt_id,
        receipt=receipt,
        signature=signed["signature"] if signed is not None else None,
        signed_json=json.dumps(signed, indent=2) if signed is not None else None,
        verdict=receipt["verdict"] if receipt is not None else None,
        gateway_url=dash.public_url,
        error=error,
    )


# ---- billing: top-up through Stripe Checkout ----


async def billing_page(request: Request, account_id: int) -> Response:
    """Where a 402 sends the user: the balance and, when Stripe is configured, a
    top-up form. POST starts a Checkout and sends the browser there."""
    dash = dashboard(request)
    top_up = dash.top_up
    error = None
    if request.method == "POST" and top_up.enabled:
        amount = _text(request.state.form, "amount_usd")
        cents = _cents(amount)
        low, high = _cents(top_up.min_usd), _cents(top_up.max_usd)
        if cents is None or low is None or high is None or not low <= cents <= high:
            error = f"Top up between ${top_up.min_usd} and ${top_up.max_usd}."
        else:
            base = dash.public_url
            try:
                url = await top_up.checkout_url(
                    account_id, cents, f"{base}/billing?paid=1", f"{base}/billing?cancelled=1"
                )
            except TeegateError as exc:
                error = exc.message
            else:
                return redirect(request, url)
    balance = await dash.console.balance(account_id)
    return render(
        request,
        "billing.html",
        status=400 if error else 200,
        nav="billing",
        balance=describe_balance(balance),
        top_up=top_up,
        error=error,
        paid=request.query_params.get("paid") == "1",
        cancelled=request.query_params.get("cancelled") == "1",
    )


def _cents(text: str) -> int | None:
    match = re.fullmatch(r"(\d{1,7})(?:\.(\d{1,2}))?", text.strip())
    if match is None:
        return None
    return int(match[1]) * 100 + int((match[2] or "0").ljust(2, "0"))


async def stripe_webhook(request: Request) -> Response:
    """Stripe's deliveries: signed, so no session or CSRF token; credit is posted
    here only (see teegate.payments)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            raise RequestTooLarge(f"A webhook body is at most {MAX_WEBHOOK_BYTES} bytes.")
    credited = await dashboard(request).top_up.receive(
        bytes(body), request.headers.get("stripe-signature")
    )
    return Response(
        '{"received": true, "credited": %s}' % ("true" if credited else "false"),
        media_type="application/json",
    )


async def billing_redirect(request: Request) -> Response:
    return redirect(request, "/billing")


def dashboard_routes() -> list[BaseRoute]:
    both = ["GET", "POST"]
    return [
        Route("/dashboard", signed_in(overview), methods=["GET"]),
        Route("/dashboard/sign-in", sign_in_page, methods=both),
        Route("/dashboard/sign-out", sign_out, methods=["POST"]),
        Route("/dashboard/invite", invite_page, methods=both),
        Route("/dashboard/keys", signed_in(keys_page), methods=both),
        Route("/dashboard/keys/{key_id}/revoke", signed_in(revoke_key), methods=["POST"]),
        Route("/dashboard/keys/{key_id}/rotate", signed_in(rotate_key), methods=["POST"]),
        Route("/dashboard/keys/{key_id}/limits", signed_in(key_limits), methods=["POST"]),
        Route("/dashboard/usage", signed_in(usage_page), methods=["GET"]),
        Route("/dashboard/usage.csv", signed_in(usage_csv), methods=["GET"]),
        Route("/dashboard/models", signed_in(models_page), methods=["GET"]),
        Route("/dashboard/receipts", signed_in(receipts_page), methods=both),
        Route("/dashboard/billing", billing_redirect, methods=["GET"]),
        Route("/billing", signed_in(billing_page), methods=both),
        Route("/billing/webhook", stripe_webhook, methods=["POST"]),
        Mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="dashboard_static"),
    ]


def invite_link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/dashboard/invite#{quote(token)}"

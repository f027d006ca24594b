"""Many requests at once against a limit for exactly K: shared by the token-limit,
budget and scale-out tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import httpx


async def until_decided(
    urls: Sequence[str],
    key: str,
    bodies: Sequence[dict[str, Any]],
    admitted_so_far: Callable[[], int],
) -> tuple[list[httpx.Response], int]:
    """Every body at once, the i-th to `urls[i % len(urls)]`. The admitted hang at the
    upstream (holding what they reserved) until every request is decided: returns the
    refusals that came back and how many reached the upstream; the rest are cancelled."""
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        limits=httpx.Limits(max_connections=None),
    ) as client:
        tasks = [
            asyncio.ensure_future(
                client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body)
            )
            for i, body in enumerate(bodies)
        ]
        while True:
            refused = [t.result() for t in tasks if t.done()]
            admitted = await asyncio.to_thread(admitted_so_far)
            if len(refused) + admitted >= len(bodies):
                break
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return refused, admitted

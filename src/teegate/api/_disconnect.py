"""Noticing a client that leaves while the gateway waits on its upstream.

The ASGI server reports a disconnect only to a pending `receive()`; a request
that is waiting on its upstream has none. A watch is one small task that waits
in `receive()` and cancels the request's own task when the client is gone: no
task group, no cancel scope, for the life of every stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Receive

from teegate.errors import ClientClosedRequest

T = TypeVar("T")


class DisconnectWatch:
    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._active = True
        self.saw_disconnect = False

    def start(self) -> None:
        if self._active and self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())

    def stop(self) -> None:
        """After this, a disconnect cancels nothing (the request's own end wakes
        `receive()` too)."""
        self._active = False
        if self._watcher is not None:
            self._watcher.cancel()

    def absorb(self) -> None:
        """The cancellation this watch caused is handled: take it back off the task."""
        if self._task is not None:
            self._task.uncancel()

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._active and self._task is not None:
            self.saw_disconnect = True
            self._task.cancel()


class LateWatches:
    """Starts the watch of each call still running `after_s` after it began, with one
    timer for all of them: a timer per request costs more than the rest of its
    bookkeeping, and most calls end long before."""

    def __init__(self, after_s: float) -> None:
        self._after_s = after_s
        self._due: dict[DisconnectWatch, float] = {}  # in insertion order: earliest first
        self._timer: asyncio.TimerHandle | None = None

    def add(self, watch: DisconnectWatch) -> None:
        loop = asyncio.get_running_loop()
        self._due[watch] = loop.time() + self._after_s
        if self._timer is None:
            self._timer = loop.call_later(self._after_s, self._sweep)

    def remove(self, watch: DisconnectWatch) -> None:
        self._due.pop(watch, None)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._due:
            watch, due = next(iter(self._due.items()))
            if due > now:
                self._timer = loop.call_at(due, self._sweep)
                return
            del self._due[watch]
            watch.start()
        self._timer = None


async def unless_client_leaves(request: Request, late: LateWatches, call: Awaitable[T]) -> T:
    """Run the upstream call, cancelling it if the client disconnects first.

    The call runs in this task; the watch starts only if the call is still
    running after WATCH_AFTER_S (LateWatches), so a fast answer costs two dict
    operations and nothing else.
    A stream's call ends when the upstream has answered with headers; from then
    on AnswerResponse watches.
    """
    watch = DisconnectWatch(request.receive)
    late.add(watch)
    try:
        return await call
    except asyncio.CancelledError:
        if not watch.saw_disconnect:
            raise
        watch.absorb()
        raise ClientClosedRequest("the client left before the completion finished") from None
    finally:
        late.remove(watch)
        watch.stop()

"""Giving freed heap pages back to the operating system (glibc's `malloc_trim`).

A gateway frees as much as it allocates: each request's bodies, JSON, TLS records
and rows come and go. glibc's malloc hands memory back to the kernel only from the
top of a heap; whole pages freed below a live allocation stay resident, so under a
steady load RSS creeps up while the live heap stays flat (the soak, bench/README.md:
+12% in three minutes, memray's tracked heap flat; flat RSS with a trim every few
seconds). `malloc_trim(0)` releases every whole free page of every arena.

It runs on a thread: the call releases the GIL and takes one arena's lock at a time,
so the event loop waits only if it allocates from the arena being walked, for the
walk of that arena. Where there is no `malloc_trim` (musl, macOS, Windows), nothing
runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
from collections.abc import Callable

TRIM_INTERVAL_S = 5.0
"""RSS grew ~7 MiB a minute under the soak: a trim every 5 s keeps the sawtooth under
1 MiB, and a trim that finds nothing to release costs a walk of the free lists."""

Trim = Callable[[int], int]


def glibc_malloc_trim() -> Trim | None:
    """glibc's `malloc_trim` from the process's own symbols, or None off glibc."""
    if not sys.platform.startswith("linux"):
        return None
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    result: Trim = trim
    return result


class HeapTrimmer:
    """Trims the heap every `interval_s` while it runs (one per worker process)."""

    def __init__(self, trim: Trim | None, *, interval_s: float = TRIM_INTERVAL_S) -> None:
        self._trim = trim
        self._interval_s = interval_s

    async def run(self) -> None:
        if self._trim is None:
            return
        while True:
            await asyncio.sleep(self._interval_s)
            await asyncio.to_thread(self._trim, 0)

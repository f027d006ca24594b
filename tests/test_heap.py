"""The heap trimmer: freed pages below a live allocation go back to the OS."""

from __future__ import annotations

import asyncio
import ctypes
import re
import threading
from pathlib import Path

import pytest

from teegate.heap import HeapTrimmer, glibc_malloc_trim

BLOCK = 64 * 1024
"""Below glibc's mmap threshold (128 KiB at least): served from the heap, not mmap."""
BLOCKS = 2048  # 128 MiB


def rss_anon_kib() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


@pytest.mark.skipif(glibc_malloc_trim() is None, reason="glibc's malloc_trim only")
def test_a_trim_returns_the_pages_freed_below_a_live_block() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
    pin = libc.malloc(BLOCK)  # above the others: the heap's top cannot shrink past it
    try:
        for block in blocks:
            ctypes.memset(block, 1, BLOCK)
        for block in blocks:
            libc.free(block)
        freed_but_resident = rss_anon_kib()
        trim(0)
        after = rss_anon_kib()
    finally:
        libc.free(pin)
    assert freed_but_resident - after >= BLOCKS * BLOCK // 1024 // 2


async def test_the_trimmer_trims_again_and_again_off_the_event_loop() -> None:
    calls: list[int] = []
    threads: set[int] = set()
    twice = asyncio.Event()
    loop = asyncio.get_running_loop()

    def trim(pad: int) -> int:
        calls.append(pad)
        threads.add(threading.get_ident())
        if len(calls) == 2:
            loop.call_soon_threadsafe(twice.set)
        return 1

    task = asyncio.ensure_future(HeapTrimmer(trim, interval_s=0.01).run())
    try:
        await asyncio.wait_for(twice.wait(), timeout=10)
    finally:
        task.cancel()
    assert calls[:2] == [0, 0]
    assert threading.get_ident() not in threads


async def test_without_malloc_trim_the_trimmer_ends_at_once() -> None:
    await asyncio.wait_for(HeapTrimmer(None, interval_s=0.01).run(), timeout=10)

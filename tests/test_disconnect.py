"""LateWatches: one timer starts the watch of every call still running after the
delay; calls that end in time never start one."""

from __future__ import annotations

import asyncio
from typing import cast

from teegate.api import DisconnectWatch, LateWatches

AFTER_S = 0.05


class FakeWatch:
    def __init__(self) -> None:
        self.started_at: float | None = None

    def start(self) -> None:
        self.started_at = asyncio.get_running_loop().time()


def watched(late: LateWatches) -> tuple[FakeWatch, float]:
    watch = FakeWatch()
    late.add(cast(DisconnectWatch, watch))
    return watch, asyncio.get_running_loop().time()


async def test_only_calls_still_running_after_the_delay_are_watched() -> None:
    late = LateWatches(AFTER_S)
    quick, _ = watched(late)
    slow, slow_added = watched(late)
    late.remove(cast(DisconnectWatch, quick))  # answered in time
    await asyncio.sleep(AFTER_S * 2)
    assert quick.started_at is None
    assert slow.started_at is not None and slow.started_at >= slow_added + AFTER_S


async def test_each_watch_starts_at_its_own_due_time_with_one_timer_at_a_time() -> None:
    late = LateWatches(AFTER_S)
    first, first_added = watched(late)
    await asyncio.sleep(AFTER_S / 2)
    second, second_added = watched(late)
    await asyncio.sleep(AFTER_S * 0.75)  # past the first's due time, before the second's
    assert first.started_at is not None and first.started_at >= first_added + AFTER_S
    assert second.started_at is None
    await asyncio.sleep(AFTER_S)
    assert second.started_at is not None and second.started_at >= second_added + AFTER_S
    third, third_added = watched(late)  # the timer re-arms after going idle
    await asyncio.sleep(AFTER_S * 2)
    assert third.started_at is not None and third.started_at >= third_added + AFTER_S

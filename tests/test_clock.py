"""The real clock set while the scheduler sleeps on it (scheduler_core.clock, .timerfd).

Setting CLOCK_REALTIME to the time it already shows is a discontinuous change to the kernel
(what an NTP step or `date -s` is), and moves the time by microseconds: these tests need the
right to set it (root, CAP_SYS_TIME) and skip without it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta

import pytest

from scheduler_core.clock import SystemClock

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux timerfd")


def set_the_clock() -> None:
    try:
        time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME))
    except PermissionError:
        pytest.skip("setting the clock needs CAP_SYS_TIME")


def test_the_timer_armed_again_after_the_clock_was_set_says_so_and_is_armed() -> None:
    """timerfd_settime fails with ECANCELED when the clock was set since the timer was armed
    and it was not read meanwhile, and arms the timer all the same (timerfd_create(2),
    NOTES). Before, that was an OSError, which ended the scheduler: the daemon died of an NTP
    step that came between two runs of a burst."""
    from scheduler_core.timerfd import TimerFd

    timer = TimerFd()
    try:
        assert timer.arm(time.time() + 3600) is False
        set_the_clock()
        assert timer.arm(time.time() + 3600) is True  # the clock was set; armed again
        assert timer.arm(time.time() + 3600) is False
    finally:
        timer.close()


async def test_sleepers_wake_when_the_clock_is_set_before_the_timer_is_read() -> None:
    clock = SystemClock()
    first, second = asyncio.Event(), asyncio.Event()
    far = clock.now() + timedelta(hours=1)
    asleep = asyncio.create_task(clock.sleep_until(far, first))
    await asyncio.sleep(0)  # armed for `far`
    set_the_clock()
    # Armed again for an earlier sleeper before the loop reads the timer.
    also = asyncio.create_task(clock.sleep_until(far - timedelta(minutes=1), second))
    await asyncio.wait_for(asyncio.gather(asleep, also), 10)  # both woken: the clock was set
    clock.close()

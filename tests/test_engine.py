"""One wiring for the daemon and the CLI with no daemon (issue 13, point 3): a run in the
foreground goes through the same after-run hooks, so a failing one alerts like any other."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import cli, query


def test_a_failing_foreground_run_queues_its_alert(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "bad.sh").write_text("echo 'disk on fire' >&2; exit 4\n")
    config = tmp_path / "moltsched.yaml"
    # Signal is configured but down: the alert waits in the outbox for the daemon to send.
    config.write_text(
        "tasks:\n  - {id: bad, script: bad.sh, every: 1h}\n"
        'signal:\n  service: 127.0.0.1:9\n  account: "+4915100000000"\n'
        '  admins: ["+4917600000000", "+4917600000001"]\n'
    )
    done = cli("--json", "run", "bad", config=config)
    assert done.returncode == 1 and json.loads(done.stdout)["outcome"] == "failed"
    # The answer says it, as it does through a daemon: the engine's log line for the journal
    # ("bad (on-demand run): failed, ...") is not printed bare on stderr as well.
    assert done.stderr == ""
    db = tmp_path / "state" / "moltsched.db"
    queued = query(db, "SELECT recipient, kind, text FROM outbox ORDER BY id")
    assert [(r, k) for r, k, _ in queued] == [
        ("+4917600000000", "failure"),
        ("+4917600000001", "failure"),
    ]
    assert "bad failed: exit 4" in queued[0][2] and "disk on fire" in queued[0][2]
    status = json.loads(cli("--json", "status", config=config).stdout)
    assert status["alerts_waiting"] == 2


def _open_files() -> set[str]:
    """What this process's descriptors point at (`anon_inode:[timerfd]` for a timerfd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listdir itself used
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
    return found


async def test_one_system_clock_wakes_each_of_its_sleepers_at_its_own_time() -> None:
    """The scheduler and the outbox sleep on the one clock the engine passes them both: a
    second sleeper must not take the first one's wake-up (it did: a daemon with Signal
    configured ran each task once, then slept for ever)."""
    import asyncio
    from datetime import timedelta

    from scheduler_core.clock import SystemClock

    clock = SystemClock()
    try:
        now = clock.now()
        soon, later, never = asyncio.Event(), asyncio.Event(), asyncio.Event()
        order: list[str] = []

        async def sleep(name: str, when: object, wake: asyncio.Event) -> None:
            await clock.sleep_until(when, wake)  # type: ignore[arg-type]
            order.append(name)

        sleepers = [
            asyncio.create_task(sleep("later", now + timedelta(seconds=0.3), later)),
            asyncio.create_task(sleep("soon", now + timedelta(seconds=0.1), soon)),
            asyncio.create_task(sleep("never", None, never)),
        ]
        # They sleep on a timerfd (CLOCK_REALTIME, absolute), not on asyncio's monotonic timer.
        await asyncio.sleep(0)  # one turn: each sleeper runs up to its wait
        assert "anon_inode:[timerfd]" in _open_files()
        async with asyncio.timeout(10):
            await asyncio.gather(*sleepers[:2])
        assert order == ["soon", "later"]
        assert clock.now() >= now + timedelta(seconds=0.3)
        never.set()  # a sleeper with no time wakes by its event alone
        await sleepers[2]
    finally:
        clock.close()


def test_telling_the_time_makes_no_timer() -> None:
    """A command answered with no daemon only tells the time: it does not load ctypes for a
    timer it will never sleep on."""
    code = (
        "import sys; from scheduler_core.clock import SystemClock; SystemClock().now(); "
        "print('ctypes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"

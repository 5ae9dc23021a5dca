"""An in-process launcher for scheduler tests: a run is a Python object that starts when the
scheduler starts it and ends when the test says, so tests wait for events, never for time.

It is the real `Launcher` interface with real behaviour behind it: an interrupt ends a run
that has started as `interrupted` (and one that has not, before it starts), as the process
launcher does; what the test does not end stays running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from scheduler_core.model import Ended, Outcome, TaskSpec

if TYPE_CHECKING:
    from scheduler_core.scheduler import Scheduler

# The `make_fake` fixture (tests/conftest.py): a scheduler loop on the in-process launcher.
Make = Callable[..., "tuple[Scheduler, FakeLauncher]"]


class FakeRun:
    def __init__(self, launcher: FakeLauncher, spec: TaskSpec) -> None:
        self.launcher = launcher
        self.spec = spec
        self.run_id = 0
        self.pid = 0  # the process it stands for, once started
        self.checkpoint: str | None = None
        self.interrupted: str | None = None  # the reason, once interrupted
        self.printed = ""  # what it has printed so far, as a test says
        self._end: asyncio.Future[Ended] = asyncio.get_running_loop().create_future()

    def interrupt(self, reason: str, *, now: bool = False) -> None:
        self.interrupted = reason
        self.end(Outcome.INTERRUPTED, f"interrupted ({reason})")

    def output(self) -> tuple[str, str]:
        return self.printed, ""

    async def go(self, run_id: int, checkpoint: str | None) -> Ended:
        self.run_id, self.checkpoint = run_id, checkpoint
        if self._end.done():  # interrupted before it started: it never does
            return self._end.result()
        self.pid = 100_000 + len(self.launcher.started_runs)
        self.launcher.started_runs.append(self)
        self.launcher.changed()
        return await self._end

    def breaks(self, exc: Exception) -> None:
        """The run fails inside the launcher (a bug, say): `go` raises `exc`."""
        if not self._end.done():
            self._end.set_exception(exc)

    def end(self, outcome: Outcome = Outcome.SUCCESS, message: str = "", stdout: str = "") -> None:
        """The run ends now, as `outcome`."""
        if not self._end.done():
            code = 0 if outcome is Outcome.SUCCESS else 1
            text = message or f"exit {code} in 0.0s"
            self._end.set_result(Ended(outcome, text, code, 0.0, stdout, ""))


class FakeLauncher:
    def __init__(self) -> None:
        self.started_runs: list[FakeRun] = []
        self._changed = asyncio.Event()

    def prepare(self, spec: TaskSpec) -> FakeRun:
        return FakeRun(self, spec)

    async def stop_leftovers(
        self, run_ids: Sequence[int], grace: float, now: asyncio.Event | None = None
    ) -> int:
        return 0  # runs of this launcher die with the test

    def run_of(self, pid: int) -> int | None:
        """The run a (pretend) process of a run is: its `pid`, while it goes."""
        return next(
            (r.run_id for r in self.started_runs if r.pid == pid and not r._end.done()), None
        )

    def changed(self) -> None:
        self._changed.set()

    def order(self) -> list[str]:
        """The task ids, in the order their runs started."""
        return [run.spec.id for run in self.started_runs]

    async def started(self, count: int, timeout: float = 10) -> list[FakeRun]:
        """Once `count` runs have started in all, the runs started so far."""
        async with asyncio.timeout(timeout):
            while len(self.started_runs) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.started_runs)

"""Fixtures: real SQLite files and real task scripts in a temporary folder."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler_core.model import EngineSettings, TaskSpec
from scheduler_core.scheduler import Scheduler
from scheduler_core.store import Store
from tests.fake_launcher import FakeLauncher, Make
from tests.helpers import ManualClock

_CACHE = tempfile.mkdtemp(prefix="moltsched-test-cache-")


def pytest_configure(config: pytest.Config) -> None:
    # Loaded configurations are cached per user (config.cache): the suite's thousands of
    # temporary files go to a folder of its own, daemons it starts included, not to ~/.cache.
    os.environ["XDG_CACHE_HOME"] = _CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tasks"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, tasks_dir: Path) -> EngineSettings:
    return EngineSettings(state_dir=tmp_path / "state", tasks_dir=tasks_dir, max_concurrent=2)


@pytest.fixture
async def store(settings: EngineSettings) -> AsyncIterator[Store]:
    s = await Store.open(settings.db_path)
    yield s
    await s.close()


@pytest.fixture
async def make_fake(store: Store, settings: EngineSettings) -> AsyncIterator[Make]:
    """Starts a scheduler loop on the test's store, with the in-process launcher and the
    test's clock (a second call, once the test has stopped the first loop, is a restart).
    Every loop is closed at the end."""
    loops: list[tuple[Scheduler, asyncio.Task[None]]] = []

    def factory(
        specs: list[TaskSpec], clock: ManualClock, max_concurrent: int = 2
    ) -> tuple[Scheduler, FakeLauncher]:
        launcher = FakeLauncher()
        s = EngineSettings(settings.state_dir, settings.tasks_dir, None, max_concurrent)
        sched = Scheduler(store, s, specs, clock=clock, launcher=launcher)
        loops.append((sched, asyncio.create_task(sched.run())))
        return sched, launcher

    yield factory
    for sched, loop in loops:
        sched.close()
        await asyncio.wait_for(loop, 10)

"""Fixtures: real SQLite files and real task scripts in a temporary folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler_core.model import EngineSettings
from scheduler_core.store import Store

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

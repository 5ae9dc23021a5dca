"""The SQLite store: every SQL statement of the daemon lives in this package.

`Store` is one object over one file, made of parts by table: the core (connections,
transactions; `core`), the tasks (`tasks`), the runs (`runs`), the runs kept for later
(`later`), and the outbox with the action log (`alerts`). `inspect` (`inspection`) is doctor's
read-only look at a file. The schema is `scheduler_core.migrations`.
"""

from __future__ import annotations

from scheduler_core.store.alerts import AlertAndLogRows
from scheduler_core.store.core import BUSY_TIMEOUT_MS
from scheduler_core.store.inspection import Inspection, inspect
from scheduler_core.store.later import LaterRows
from scheduler_core.store.runs import RunRows
from scheduler_core.store.tasks import TaskRows

__all__ = ["BUSY_TIMEOUT_MS", "Inspection", "Store", "inspect"]


class Store(TaskRows, RunRows, LaterRows, AlertAndLogRows):
    """Task state, runs, alerts and the action log in one SQLite file."""

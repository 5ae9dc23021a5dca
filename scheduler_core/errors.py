"""The engine's errors, one flat module.

SchedulerError
├── TaskNotFoundError   (also LookupError) an id that is not configured
└── StoreError          SQLite failed; the cause is chained
"""

from __future__ import annotations

from collections.abc import Iterable


class SchedulerError(Exception):
    """Base of every error the engine raises on purpose."""


class TaskNotFoundError(SchedulerError, LookupError):
    """A task id that is not in the configuration."""

    def __init__(self, task_id: str, known: Iterable[str] = ()) -> None:
        self.task_id = task_id
        self.nearest = nearest_ids(task_id, known)
        hint = f" (did you mean {', '.join(self.nearest)}?)" if self.nearest else ""
        super().__init__(f"unknown task {task_id!r}{hint}")


class StoreError(SchedulerError):
    """The database could not do what was asked; the sqlite3 error is the cause."""


def nearest_ids(task_id: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """The configured ids closest to a mistyped one, best first."""
    import difflib

    pool = list(known)
    close = difflib.get_close_matches(task_id, pool, n=limit, cutoff=0.5)
    if not close:
        close = [k for k in pool if task_id and (task_id in k or k in task_id)][:limit]
    return close

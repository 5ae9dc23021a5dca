"""Which configured task a typed id means.

Task ids are lower case (`config.schema.TASK_ID`), and a phone capitalises the first letter
of a message: `Flaky`, `run:Flaky` and `FLAKY` all mean `flaky`. Anything else that is not
an id gets TaskNotFoundError with the nearest ids.
"""

from __future__ import annotations

from collections.abc import Collection

from scheduler_core.errors import TaskNotFoundError


def find_task(given: str, known: Collection[str]) -> str:
    """The configured id `given` names; TaskNotFoundError if none."""
    if given in known:
        return given
    # ASCII only: Unicode folding would let lookalikes (a Kelvin sign for k) name a task.
    folded = given.strip().lower() if given.isascii() else given
    if folded in known:
        return folded
    raise TaskNotFoundError(given, known)

"""What the action log says of missed slots, pure: each miss at once, except behind a long
run, where the first is said at once and the rest as one count once the task is free again.

A task every minute behind a run that hangs for hours would otherwise write a row a minute,
kept for `log_days`: about 7 MB a day for a task every second.
"""

from __future__ import annotations

from scheduler_core.slots import Decision


class Misses:
    def __init__(self) -> None:
        self._behind: dict[str, int] = {}  # slots missed behind a run, past the first

    def notes(self, task_id: str, decision: Decision, busy: bool) -> list[str]:
        """What to log for the decision on a slot of `task_id` (`busy`: behind its run)."""
        notes = []
        if not busy and (n := self._behind.pop(task_id, 0)):
            notes.append(
                f"{n} more slot{'s' if n > 1 else ''} missed while the previous run went on"
            )
        if busy and task_id in self._behind:
            self._behind[task_id] += decision.missed
        elif decision.note is not None:
            if busy:
                self._behind[task_id] = 0
            notes.append(decision.note)
        return notes

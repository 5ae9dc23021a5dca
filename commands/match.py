"""Which configured task a typed id means.

Task ids are lower case (`config.schema.TASK_ID`), and a phone capitalises the first letter
of a message: `Flaky`, `run:Flaky` and `FLAKY` all mean `flaky`. Anything else that is not
an id gets TaskNotFoundError with the nearest ids; a known id followed by words its command
does not take (`run:flaky 18:00`, `logs:flaky 5`), a count for `logs`, `all` or several
tasks for a verb that takes one (`pause all`, `pause:a, b`), gets what to write instead
(`words_after`).
"""

from __future__ import annotations

from collections.abc import Collection

from scheduler_core.errors import TaskNotFoundError

# What a person writes for every task (`status all` and `logs all` take it, see execute).
_EVERY = ("all", "*", "everything", "every task", "all tasks")


def _found(word: str, known: Collection[str]) -> str | None:
    try:
        return find_task(word, known)
    except TaskNotFoundError:
        return None


def find_task(given: str, known: Collection[str]) -> str:
    """The configured id `given` names; TaskNotFoundError if none."""
    if given in known:
        return given
    # ASCII only: Unicode folding would let lookalikes (a Kelvin sign for k) name a task.
    folded = given.strip().lower() if given.isascii() else given
    if folded in known:
        return folded
    raise TaskNotFoundError(given, known)


def words_after(given: str, known: Collection[str], verb: str) -> str | None:
    """What to answer `verb:given` when `given` is a task id and then more words (ids have no
    spaces), or None when it is not."""
    first, _, rest = given.strip().partition(" ")
    rest = rest.strip()
    if verb == "logs" and given.strip().isdigit() and first not in known:
        return "logs takes a task, not a count: logs:TASK; it shows what fits a screen"
    if given.strip().lower() in _EVERY and verb not in ("status", "logs"):
        return f"{verb} takes one task at a time: {verb}:TASK"
    several = [_found(word, known) for word in given.replace(",", " ").split()]
    if len(several) > 1 and None not in several:
        return "One task a command: " + ", then ".join(f"{verb}:{t}" for t in several)
    try:
        task = find_task(first, known)
    except TaskNotFoundError:
        return None
    if not rest:
        return None
    if verb == "run":
        return f"run:{task} runs it now, run:{task} in 20m or at 18:00 later; not {rest[:40]!r}"
    return f"{verb}:{task} takes nothing after the task, not {rest[:40]!r}"

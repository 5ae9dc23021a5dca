"""What a start finds: what a daemon that died (`kill -9`, the OOM killer, a power cut) left,
and each task's place (paused, to resume, due when).

Runs the database still shows as running are recorded `interrupted` (their tasks resume
first, from their checkpoints), and whatever processes they left going are stopped (SIGTERM,
the task's grace, SIGKILL) before anything is resumed; otherwise a resumed task would run
twice at once, both saving checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler_core.launcher import Launcher
from scheduler_core.model import Status, TaskSpec
from scheduler_core.slots import after_clock_went_back
from scheduler_core.store import Store
from scheduler_core.timetable import Timetable
from scheduler_core.triggers import format_duration

log = logging.getLogger(__name__)


async def recover(
    store: Store,
    launcher: Launcher,
    specs: Mapping[str, TaskSpec],
    now: datetime,
    hurry: asyncio.Event | None = None,
) -> None:
    """Stop what the runs a dead daemon left open have left going (`hurry`: without waiting
    out their grace), then record them. In that order: a daemon killed in between leaves
    the runs open, and the next start stops their processes in turn."""
    crashed = await store.open_runs()
    if not crashed:
        return
    grace = max((specs[t].grace for _, t in crashed if t in specs), default=10.0)
    log.warning(
        "%d run(s) cut short by a crash: stopping what they left running (SIGTERM, then up "
        "to %.0fs of grace) before anything starts",
        len(crashed),
        grace,
    )
    stopped = await launcher.stop_leftovers([run_id for run_id, _ in crashed], grace, hurry)
    if stopped:
        log.warning("stopped %d process(es) left running by the daemon that died", stopped)
    await store.recover_crashed(now)


@dataclass
class Restored:
    paused: set[str] = field(default_factory=set)  # not scheduled until resumed
    to_resume: list[str] = field(default_factory=list)  # interrupted: they go again first


async def restore(
    store: Store,
    launcher: Launcher,
    specs: Mapping[str, TaskSpec],
    timetable: Timetable,
    now: datetime,
    changed: Collection[str] = (),
    hurry: asyncio.Event | None = None,
) -> Restored:
    """Recover from a crash, then put every task in its place from the store's truth: a
    paused task stays off the timetable, an interrupted one resumes first, one never
    scheduled gets its first due time, and one whose schedule was `changed` while no daemon
    ran gets its next slot from now, as after a reload, unless one was missed (saved)."""
    await recover(store, launcher, specs, now, hurry)
    found = Restored()
    updates: list[tuple[str, datetime | None]] = []
    states = await store.states()
    newest = max((s.last_run for s in states if s.last_run is not None), default=None)
    if newest is not None and newest > now + timedelta(seconds=1):
        log.warning(
            "the clock is %s behind the newest run in the database (%s): a machine with no "
            "clock of its own, before NTP has set it? Interval tasks keep their interval "
            "from now; cron tasks keep their slots",
            format_duration(round((newest - now).total_seconds())),
            newest.isoformat(timespec="seconds"),
        )
    for state in states:
        spec = specs[state.id]
        if state.paused:
            found.paused.add(spec.id)
            continue
        if state.status is Status.INTERRUPTED and spec.enabled:
            found.to_resume.append(spec.id)
        due = state.next_run
        if not spec.enabled:
            if due is not None:
                updates.append((spec.id, None))
            continue
        if due is None:  # never scheduled
            due = spec.trigger.first_due(now)
            updates.append((spec.id, due))
        elif spec.id in changed and due > now:  # one missed meanwhile is still missed
            due = spec.trigger.next_after(now)
            updates.append((spec.id, due))
        elif (pulled_in := after_clock_went_back(spec.trigger, due, now)) is not None:
            due = pulled_in  # the clock went back while no daemon ran, as while one runs
            updates.append((spec.id, due))
        timetable.set(spec.id, due, save=False)
    await store.set_next_runs(updates)
    return found

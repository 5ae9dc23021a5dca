"""Crash recovery: what a daemon that died (`kill -9`, the OOM killer, a power cut) left.

Runs the database still shows as running are recorded `interrupted` (their tasks resume
first, from their checkpoints), and whatever processes they left going are stopped (SIGTERM,
the task's grace, SIGKILL) before anything is resumed; otherwise a resumed task would run
twice at once, both saving checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from scheduler_core.launcher import Launcher
from scheduler_core.model import TaskSpec
from scheduler_core.store import Store

log = logging.getLogger(__name__)


async def recover(
    store: Store, launcher: Launcher, specs: Mapping[str, TaskSpec], now: datetime
) -> None:
    crashed = await store.recover_crashed(now)
    if not crashed:
        return
    log.warning("recorded %d run(s) cut short by a crash as interrupted", len(crashed))
    grace = max((specs[t].grace for _, t in crashed if t in specs), default=10.0)
    stopped = await launcher.stop_leftovers([run_id for run_id, _ in crashed], grace)
    if stopped:
        log.warning("stopped %d process(es) left running by the daemon that died", stopped)

"""The seam between scheduling and processes.

The scheduler decides which task runs when; a `Launcher` turns a decision into a run and
tells how it ended. `ProcessLauncher` is the real one: it builds each run's environment,
reads a script's `#!` line, starts the process group (in a cgroup of its own where the daemon
has them), enforces the timeout and stops everything on an interrupt (`scheduler_core.runner`),
and judges the ending. Tests of the scheduler use an in-process launcher instead, whose runs
end when the test says, so they wait for events rather than for processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Protocol

from scheduler_core import procs
from scheduler_core.cgroups import RunCgroups
from scheduler_core.child import Child
from scheduler_core.model import Ended, EngineSettings, Outcome, TaskSpec
from scheduler_core.runner import Ending, ProcessResult, ProcessRun, stop_leftovers
from scheduler_core.safe import safe_text
from scheduler_core.shebang import script_argv, which
from scheduler_core.triggers import format_duration

log = logging.getLogger(__name__)


class Run(Protocol):
    """One run, from its dispatch to its end."""

    def interrupt(self, reason: str, *, now: bool = False) -> None:
        """Cut it short (a pause, a preemption, the daemon stopping); before it has started,
        it will not start. `now`: without waiting out its grace."""
        ...

    async def go(self, run_id: int, checkpoint: str | None) -> Ended:
        """Start it, once its start is recorded, and wait for its end."""
        ...

    def output(self) -> tuple[str, str]:
        """What it has printed so far (the tails of stdout and stderr); empty before it
        starts."""
        ...


class Launcher(Protocol):
    def prepare(self, spec: TaskSpec) -> Run:
        """A run of `spec`, not started yet (it can be interrupted already)."""
        ...

    async def stop_leftovers(
        self, run_ids: Sequence[int], grace: float, now: asyncio.Event | None = None
    ) -> int:
        """Stop what runs of an earlier daemon (killed on its own) left going, giving them
        `grace` unless `now` is set; how many."""
        ...

    def run_of(self, pid: int) -> int | None:
        """The run id of the run whose process `pid` is, or None."""
        ...


class ProcessLauncher:
    """Runs as process groups, with the environment of DESIGN.md section 5."""

    def __init__(
        self,
        settings: EngineSettings,
        base_env: Mapping[str, str] | None = None,
        cgroups: RunCgroups | None = None,
    ) -> None:
        self.settings = settings
        self.cgroups = cgroups  # a cgroup per run, where the daemon was given a subtree
        # Encoded once: given a str environment, subprocess encodes every variable again on
        # every spawn (a sixth of the burst's throughput). It passes bytes through.
        base = dict(os.environ if base_env is None else base_env)
        base.update(
            MOLTSCHED_DB=str(settings.db_path),
            MOLTSCHED_CONFIG=str(settings.config_path or ""),
        )
        self.base_env = {os.fsencode(k): os.fsencode(v) for k, v in base.items()}
        # Where `moltsched` is on the runs' PATH (bot.engine.task_environment saw to it), so a
        # task's own `env: {PATH: ...}` can be given it too.
        found = which("moltsched", path=base.get("PATH", os.defpath))
        self._moltsched_dir = os.path.dirname(found) if found else None
        self._paths: dict[str, bytes] = {}

    def path_for(self, path: str) -> bytes:
        """A task's own PATH, with moltsched's folder at its end when moltsched is not on it:
        `moltsched checkpoint save` works from every script (DESIGN.md section 5)."""
        found = self._paths.get(path)
        if found is None:
            whole = path
            if self._moltsched_dir and which("moltsched", path=path) is None:
                whole = os.pathsep.join(
                    [p for p in path.split(os.pathsep) if p] + [self._moltsched_dir]
                )
            found = self._paths[path] = os.fsencode(whole)
        return found

    def prepare(self, spec: TaskSpec) -> _ProcessTaskRun:
        return _ProcessTaskRun(self, spec)

    async def stop_leftovers(
        self, run_ids: Sequence[int], grace: float, now: asyncio.Event | None = None
    ) -> int:
        return await stop_leftovers(str(self.settings.db_path), run_ids, grace, now)

    def run_of(self, pid: int) -> int | None:
        """By the run's tag in the process's environment (see `procs`)."""
        return procs.run_of(pid, self.base_env[b"MOLTSCHED_DB"])


class _ProcessTaskRun:
    def __init__(self, launcher: ProcessLauncher, spec: TaskSpec) -> None:
        self.launcher = launcher
        self.spec = spec
        self.process = ProcessRun(
            spec.argv if spec.script is None else script_argv(spec.script),
            cwd=launcher.settings.tasks_dir,
            env={},  # set in go(), once the run id and checkpoint are known
            timeout=spec.timeout,
            grace=spec.grace,
            cgroups=launcher.cgroups,
        )
        self._child: Child | None = None  # once started: what it prints, as it comes

    def interrupt(self, reason: str, *, now: bool = False) -> None:
        self.process.interrupt(reason, now=now)

    def output(self) -> tuple[str, str]:
        child = self._child
        return ("", "") if child is None else (child.stdout.text(), child.stderr.text())

    async def go(self, run_id: int, checkpoint: str | None) -> Ended:
        spec = self.spec
        env = self.launcher.base_env.copy()
        for key, value in spec.env.items():
            env[os.fsencode(key)] = os.fsencode(value)
        if "PATH" in spec.env:
            env[b"PATH"] = self.launcher.path_for(spec.env["PATH"])
        env[b"MOLTSCHED_TASK_ID"] = os.fsencode(spec.id)
        env[b"MOLTSCHED_RUN_ID"] = str(run_id).encode()
        env[b"MOLTSCHED_CHECKPOINT"] = os.fsencode(checkpoint or "")
        self.process.env = env
        started = await self.process.start()
        if isinstance(started, ProcessResult):
            pres = started
        else:
            self._child = started
            pres = await self.process.wait(started)
        outcome, message = judge(spec, pres, self.process.reason)
        return Ended(outcome, message, pres.exit_code, pres.duration_s, pres.stdout, pres.stderr)


def judge(spec: TaskSpec, pres: ProcessResult, reason: str = "") -> tuple[Outcome, str]:
    """A process's ending as the run's outcome and its message."""
    took = f"{pres.duration_s:.1f}s"
    if pres.ending is Ending.NOT_STARTED:
        return Outcome.FAILED, pres.error or "could not start"
    if pres.ending is Ending.TIMEOUT:
        return Outcome.TIMEOUT, f"timed out after {format_duration(spec.timeout)}"
    if pres.ending is Ending.INTERRUPTED:
        # Said after the outcome ("interrupted: paused, after 1.0s"), so it does not repeat it.
        return Outcome.INTERRUPTED, (f"{reason}, " if reason else "") + f"after {took}"
    code = pres.exit_code
    left = f"; left behind and stopped: {pres.leftovers}" if pres.leftovers else ""
    if code == 0:
        return Outcome.SUCCESS, f"exit 0 in {took}{left}"
    what, why = _ending(code)
    last = _last_line(pres.stderr) or _last_line(pres.stdout)
    return Outcome.FAILED, f"{what} in {took}{why}" + (f": {last}" if last else "") + left


def _ending(code: int | None) -> tuple[str, str]:
    """How a failed process ended, and what that most often means. A signal moltsched sent
    is not a failure (timeout, interrupted, stopped), so a SIGKILL here came from elsewhere:
    most often the kernel's out-of-memory killer; 128 + N is a shell's exit when what it ran
    was killed by signal N."""
    if code is not None and code < 0:
        name = _signal_name(-code)
        return f"killed by {name}", (
            " (not by moltsched: most often, out of memory)" if -code == signal.SIGKILL else ""
        )
    if code is not None and 128 < code <= 128 + 64:
        name = _signal_name(code - 128)
        oom = ", most often out of memory" if code - 128 == signal.SIGKILL else ""
        return f"exit {code}", f" (128 + {code - 128}: what it ran was killed by {name}{oom})"
    return f"exit {code}", ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(text: str) -> str:
    for line in reversed(safe_text(text).splitlines()):
        if line.strip():
            return line.strip()[:200]
    return ""

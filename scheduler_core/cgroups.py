"""A cgroup per run, where the daemon is given a cgroup subtree of its own.

Under systemd with `Delegate=yes` the service's cgroup is handed to it: systemd marks it with
the extended attribute `user.delegate` (or `trusted.delegate`) = 1. There, each run gets a
child cgroup (`run-ID`) and the daemon itself moves to a `supervisor` leaf (a cgroup with
children may not also hold processes of its own once controllers are enabled). A process
cannot leave its cgroup, whatever it does with sessions, forks or its environment, so the
members of the run's cgroup are exactly what the run started; `cgroup.kill` (Linux 5.14)
ends them all at once. Without a delegated cgroup nothing changes: see `procs`.

A run is put into its cgroup by a tiny shim before its own program starts (`/bin/sh` writes
its pid to `cgroup.procs`, then execs the task), so nothing it forks is ever outside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_SHIM = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
_MARKS = ("user.delegate", "trusted.delegate")


def own_cgroup() -> Path | None:
    """This process's cgroup v2 directory, if it has one we can see."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    rel = next((ln[3:] for ln in lines if ln.startswith("0::")), None)
    root = next((ln.split()[4] for ln in mounts if " - cgroup2 " in ln), None)
    if rel is None or root is None:
        return None
    return Path(root) / rel.lstrip("/")


def delegated(path: Path | None) -> bool:
    """Whether the cgroup at `path` was handed to us to manage, and we can."""
    return (
        path is not None
        and (path / "cgroup.kill").exists()  # Linux 5.14
        and _marked(path)
        and os.access(path, os.W_OK)
    )


def _marked(path: Path) -> bool:
    for mark in _MARKS:
        with contextlib.suppress(OSError):
            if os.getxattr(path, mark) == b"1":
                return True
    return False


class RunCgroups:
    """Makes, fills, empties and removes the per-run cgroups under a delegated one."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @classmethod
    def take(cls) -> RunCgroups | None:
        """Use our own cgroup if it is delegated: move this process to `supervisor` in it."""
        base = own_cgroup()
        if base is not None and base.name == "supervisor" and delegated(base.parent):
            return cls(base.parent)  # already moved (a second scheduler in the process)
        if not delegated(base):
            if base is not None and _marked(base):
                log.info(
                    "the cgroup %s is delegated but cannot be written (read-only, as with "
                    "ProtectControlGroups=yes); runs are found without cgroups",
                    base,
                )
            return None
        assert base is not None
        try:
            supervisor = base / "supervisor"
            supervisor.mkdir(exist_ok=True)
            (supervisor / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            log.warning(
                "cannot use the delegated cgroup %s (%s); runs are found without it", base, exc
            )
            return None
        log.info("each run gets a cgroup of its own under %s", base)
        return cls(base)

    def path(self, run_id: int) -> Path:
        return self.base / f"run-{run_id}"

    def wrap(self, run_id: int, argv: tuple[str, ...]) -> tuple[str, ...]:
        """The argv that starts `argv` inside the run's new cgroup."""
        cgroup = self.path(run_id)
        cgroup.mkdir(exist_ok=True)
        return ("/bin/sh", "-c", _SHIM, str(cgroup), *argv)

    def members(self, run_id: int) -> list[int]:
        """The pids in the run's cgroup now."""
        try:
            text = (self.path(run_id) / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill(self, run_id: int) -> None:
        """SIGKILL everything in the run's cgroup, at once."""
        with contextlib.suppress(OSError):
            (self.path(run_id) / "cgroup.kill").write_text("1")

    def remove(self, run_id: int) -> None:
        """Remove the run's cgroup once it is empty (it is, after the run has been stopped)."""
        try:
            self.path(run_id).rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path(run_id), exc)

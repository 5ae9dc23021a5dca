"""`moltsched doctor`: check the installation, and say how to fix each thing that is wrong.

Each check is `{"name", "status": ok|warn|fail, "detail", "fix"}`; the exit code is 1 when any
fails. It changes nothing: the database is opened read-only, the daemon is only pinged, the
Signal service is only asked `GET`s, and systemd only `systemctl show`.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import subprocess
from pathlib import Path

from bot import client
from bot.doctor_signal import Check, signal_checks
from bot.lock import STARTING, STOPPING, StateLock, is_stopping
from commands.command import Ping, Request
from config.checks import fallback_warnings, task_warnings
from config.loader import UNHEARD, AppConfig, ConfigError, load_config
from config.locate import ConfigNotFound, find_config_path
from scheduler_core.errors import OddFile, StoreError, stranger_owned, user_name
from scheduler_core.store import Inspection, inspect

LOW_SPACE = 200 * 1024 * 1024  # a warning below this; a failure below a tenth of it
UNIT = "moltsched.service"


def doctor(config_arg: str | None, as_json: bool) -> int:
    checks = run_checks(config_arg)
    if as_json:
        print(json.dumps({"checks": [c._asdict() for c in checks]}))
    else:
        for c in checks:
            mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[c.status]
            print(f"{mark} {c.name}: {c.detail}")
            if c.fix and c.status != "ok":
                print(f"     fix: {c.fix}")
    return 1 if any(c.status == "fail" for c in checks) else 0


def run_checks(config_arg: str | None) -> list[Check]:
    checks: list[Check] = []
    config = _config(config_arg, checks)
    if config is not None:
        state_dir = config.settings.state_dir
        group = config.control_group
        checks.append(_state_dir(state_dir, group))
        waiting = _database(config.settings.db_path, checks, group)
        checks.append(_daemon(state_dir, config.control_group, config.path))
        if config.signal is not None:
            checks += signal_checks(config, waiting)
        elif config.alerts_unheard:
            checks.append(Check("alerts", "warn", UNHEARD, _HEARD))
        fallback = fallback_warnings(config.alerts.fallback_command, os.environ.get("PATH"))
        if fallback:
            fix = "each says what to change; until then, what Signal misses reaches no one"
            checks.append(Check("alerts", "warn", "; ".join(fallback), fix))
    unit = _unit()
    if unit is not None:
        checks.append(unit)
    return checks


def _config(config_arg: str | None, checks: list[Check]) -> AppConfig | None:
    try:
        path = find_config_path(config_arg)
    except ConfigNotFound as exc:
        checks.append(
            Check(
                "config",
                "fail",
                str(exc),
                "create /etc/moltsched/moltsched.yaml (see deploy/moltsched.example.yaml), "
                "or name yours with --config or MOLTSCHED_CONFIG",
            )
        )
        return None
    try:
        config = load_config(path, cached=False)
    except ConfigError as exc:
        fix = (
            f"let {user_name(os.geteuid())} read it (or run doctor as the daemon's user)"
            if exc.kind == "permission"
            else f"correct the file; moltsched --config {path} validate lists every problem"
        )
        checks.append(Check("config", "fail", f"{path}: " + "; ".join(exc.problems), fix))
        return None
    checks.append(Check("config", "ok", f"{config.path}: valid, {len(config.tasks)} task(s)"))
    warnings = task_warnings(config.tasks, config.settings.tasks_dir, os.environ.get("PATH"))
    if warnings:
        checks.append(
            Check(
                "tasks",
                "warn",
                "; ".join(warnings),
                "each warning says what to change; validate lists them too",
            )
        )
    return config


def _member(group: str | None) -> bool:
    """Whether this process is in `control.group`: it uses the state through the daemon."""
    if group is None:
        return False
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return gid == os.getegid() or gid in os.getgroups()


def _state_dir(state_dir: Path, group: str | None) -> Check:
    if state_dir.exists() and not state_dir.is_dir():
        fix = "move it aside, or set state_dir to another place"
        return Check("state_dir", "fail", f"{state_dir} is not a directory", fix)
    if not state_dir.exists():
        return Check(
            "state_dir",
            "warn",
            f"{state_dir} does not exist yet; the daemon creates it",
            f"make sure its parent {state_dir.parent} is writable by the daemon's user",
        )
    try:
        usage = shutil.disk_usage(state_dir)
    except OSError as exc:
        return Check("state_dir", "fail", f"{state_dir}: {exc.strerror}", "check its permissions")
    free = f"{usage.free / 1e9:.1f} GB free"
    me = user_name(os.geteuid())
    usable = f"{state_dir}: writable, {free}"
    if _member(group):
        usable = f"{state_dir}: {free}; {me} uses it through the daemon (control.group {group})"
    elif not os.access(state_dir, os.W_OK | os.X_OK):
        owner = user_name(state_dir.stat().st_uid)
        join = f"add {me} to control.group {group}" if group else "set control.group, with"
        return Check(
            "state_dir",
            "warn",
            f"{state_dir} is not writable by {me} ({free}); commands need the daemon running",
            f"run commands as {owner} (the daemon's user), or {join}"
            + ("" if group else f" {me} in that group"),
        )
    if usage.free < LOW_SPACE:
        status = "fail" if usage.free < LOW_SPACE // 10 else "warn"
        return Check(
            "state_dir",
            status,
            f"{state_dir}: only {free}",
            "free some space, or lower retention.output",
        )
    return Check("state_dir", "ok", usable)


def _database(db: Path, checks: list[Check], group: str | None) -> Inspection | None:
    """The database check; the alerts waiting in it (None if it could not be read)."""
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        owners = stranger_owned(path)
        if owners is not None:
            theirs, owner = owners
            detail = f"{path} is {theirs}'s, not {owner}'s (the owner of its folder)"
            checks.append(Check("database", "fail", detail, f"chown {owner}: {db}*"))
            return None
    try:
        found = inspect(db)
    except StoreError as exc:
        if exc.kind == "missing":
            checks.append(Check("database", "warn", str(exc), "the daemon creates it at start"))
        elif exc.kind == "permission" and _member(group):
            me = user_name(os.geteuid())
            detail = f"{db}: the daemon's alone; {me} reads it through the daemon"
            checks.append(Check("database", "ok", f"{detail} (control.group {group})"))
        elif exc.kind == "permission":
            checks.append(
                Check(
                    "database",
                    "warn",
                    f"{db} cannot be read by {user_name(os.geteuid())}",
                    "run doctor as the daemon's user to check it",
                )
            )
        elif exc.kind == "empty":
            fix = "if it held the scheduler's history, stop the daemon and restore a backup"
            checks.append(Check("database", "warn", f"{exc}; the next start makes it anew", fix))
        elif isinstance(exc, OddFile):
            checks.append(Check("database", "fail", exc.what, exc.fix))
        elif exc.kind == "newer":  # not damaged: moving it aside would lose it
            checks.append(Check("database", "fail", str(exc), "do not move it aside"))
        else:
            checks.append(Check("database", "fail", str(exc), _DB_FIX))
        return None
    if found.problem is not None:
        checks.append(Check("database", "fail", f"{db}: {found.problem}", _DB_FIX))
        return None
    checks.append(Check("database", "ok", f"{db}: quick_check ok"))
    return found


_HEARD = "add a signal: section (see the README, 'Signal'), or alerts.fallback_command (ntfy, mail)"
_DB_FIX = (
    "stop the daemon, move the file aside and start it again (a new database is made; "
    "see the README, 'When the database is damaged')"
)


def _daemon(state_dir: Path, group: str | None, config_path: Path) -> Check:
    me = user_name(os.geteuid())
    try:
        reply = client.request(state_dir, Request(Ping()).to_wire())
    except PermissionError:
        return Check(
            "daemon",
            "fail",
            f"running, but {me} may not use {state_dir / client.SOCKET_NAME}",
            f"add {me} to the group control.group names ({group})"
            if group
            else f"set control.group in the configuration and add {me} to that group",
        )
    except (OSError, client.DaemonGone, client.NotAnswering) as exc:
        return Check("daemon", "fail", f"cannot reach it: {exc}", "see its log")
    if reply is None:
        try:
            found = StateLock(state_dir).daemon()
        except OddFile as exc:
            return Check("daemon", "fail", exc.what, exc.fix)
        if found is not None and found[1] == STOPPING:
            return Check("daemon", "warn", is_stopping(found[0]), "wait for it")
        if found is not None and found[1] == STARTING:
            return Check("daemon", "warn", f"starting (pid {found[0]})", "wait for it")
        if found is not None:
            pid = found[0]
            return Check(
                "daemon",
                "fail",
                f"running (pid {pid}), but its control socket is gone",
                f"systemctl reload moltsched (or kill -HUP {pid}) makes it again",
            )
        return _daemon_before(config_path, state_dir) or Check(
            "daemon",
            "fail",
            f"not running on {state_dir}",
            "systemctl start moltsched (or moltsched daemon in the foreground)",
        )
    if "kind" in reply:
        return Check("daemon", "fail", str(reply.get("error")), "see control.group")
    return Check("daemon", "ok", f"running (pid {reply.get('pid')}), reachable by {me}")


def _daemon_before(config_path: Path, state_dir: Path) -> Check | None:
    """A daemon on the state directory the file named at its last good load, if it named
    another: started before the edit, it runs there until it is restarted. Starting one for
    the new place would run every task twice."""
    from config import cache

    kept = cache.last(config_path)
    before = kept.settings.state_dir if isinstance(kept, AppConfig) else None
    if before is None or before == state_dir:
        return None
    with contextlib.suppress(OSError, client.DaemonGone, client.NotAnswering):
        reply = client.request(before, Request(Ping()).to_wire())
        if reply is not None and "pid" in reply:
            return Check(
                "daemon",
                "fail",
                f"running (pid {reply['pid']}) on {before}, where the file named its state "
                f"before; it names {state_dir} now",
                "restart the daemon (systemctl restart moltsched) to move it; do not start "
                "a second one",
            )
    return None


def _unit() -> Check | None:
    """The systemd unit's reload and restart settings, if it is installed."""
    if shutil.which("systemctl") is None:
        return None
    try:
        shown = subprocess.run(
            [
                "systemctl",
                "show",
                UNIT,
                "-p",
                "LoadState",
                "-p",
                "ExecReload",
                "-p",
                "RestartPreventExitStatus",
                "-p",
                "Restart",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    props = dict(line.partition("=")[::2] for line in shown.stdout.splitlines())
    if shown.returncode != 0 or props.get("LoadState") != "loaded":
        return None
    problems = []
    if "moltsched" not in props.get("ExecReload", "") or "reload" not in props.get(
        "ExecReload", ""
    ):
        problems.append("ExecReload is not `moltsched reload` (a bad file would go unnoticed)")
    if "2" not in props.get("RestartPreventExitStatus", "").split():
        problems.append("RestartPreventExitStatus lacks 2 (a bad file restarts it in a loop)")
    if not problems:
        return Check("unit", "ok", f"{UNIT}: reload waits for the result; no restart loop")
    return Check(
        "unit",
        "warn",
        f"{UNIT}: " + "; ".join(problems),
        "install the unit from this version's deploy/moltsched.service",
    )

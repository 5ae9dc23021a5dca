"""Load a configuration file into an `AppConfig`, or fail with every problem at once.

Each problem names its dotted place (`tasks[2].every: ...`). Paths in the file are relative
to the file's folder. `find_config_path` applies the lookup order of DESIGN.md section 3.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from config import cache
from config.locate import find_config_path
from config.raw import ConfigError, read_raw
from scheduler_core.model import CatchUp, EngineSettings, Retention, TaskSpec
from scheduler_core.record import Record
from scheduler_core.triggers import Cron, Every, Trigger

if TYPE_CHECKING:  # imported when a file is read afresh, not when its cached result is used
    from config.schema import ConfigModel, TaskModel

__all__ = ["AppConfig", "ConfigError", "SignalConfig", "find_config_path", "load_config"]


class SignalConfig(Record):
    """The `signal:` section."""

    service: str
    account: str
    admins: tuple[str, ...]
    groups: tuple[str, ...]
    alert_to: tuple[str, ...]
    send_per_minute: float = 6.0
    send_burst: int = 10

    @property
    def address(self) -> str:
        """`service` without its scheme: `host:port`, as signalbot takes it."""
        return self.service.partition("://")[2] or self.service

    @property
    def tls(self) -> bool | None:
        """True: `https://` was written, and nothing is sent without TLS; False: `http://`,
        never TLS; None: neither (signalbot's way: HTTPS, then HTTP if that fails)."""
        if "://" not in self.service:
            return None
        return self.service.startswith("https://")

    def url(self, path: str) -> str:
        """The URL of `path` on the service: over HTTP unless `https://` was written."""
        return f"{'https' if self.tls else 'http'}://{self.address}{path}"


class AlertSettings(Record):
    """The `alerts:` section."""

    after_failures: int = 1
    repeat_every: float = 6 * 3600.0
    recovery: bool = True
    fallback_command: tuple[str, ...] = ()
    fallback_after: float = 15 * 60.0


class MetricsSettings(Record):
    """The `metrics:` section."""

    host: str
    port: int


# Said by the daemon as it starts, and by doctor, when `AppConfig.alerts_unheard`.
UNHEARD = (
    "no signal: section and no alerts.fallback_command in the configuration: a task that "
    "fails alerts no one"
)


class AppConfig(Record):
    """A loaded, valid configuration."""

    path: Path
    settings: EngineSettings
    zone: ZoneInfo
    tasks: tuple[TaskSpec, ...]
    signal: SignalConfig | None
    alerts: AlertSettings
    metrics: MetricsSettings | None = None
    # `control.group`: members use the CLI through the daemon's socket.
    control_group: str | None = None

    @property
    def alerts_unheard(self) -> bool:
        """Whether a task's alerts would reach no one: it has them (`alert`, `max_age`), and
        there is neither a `signal:` section nor an `alerts.fallback_command`."""
        if self.signal is not None or self.alerts.fallback_command:
            return False
        return any(t.alert or t.max_age is not None for t in self.tasks)


def load_config(path: str | os.PathLike[str], *, cached: bool = True) -> AppConfig:
    """Read and validate a configuration file. Raises ConfigError listing every problem.

    With `cached`, a file whose identity has not changed since it last loaded is not read
    again (`config.cache`); `validate` and `doctor` check it afresh.
    """
    path = Path(path)
    key = None
    if cached and path.is_file():  # not a pipe, whose next one is another file
        with contextlib.suppress(OSError):  # no such file: `_load` says so
            key = cache.identity(path)
    found = cache.read(path, key) if key is not None else None
    if isinstance(found, AppConfig):
        return found
    config = _load(path)
    if key is not None:
        cache.write(path, key, config)
    return config


def _load(path: Path) -> AppConfig:
    from config.schema import ConfigModel, TaskModel, build

    raw, twice = read_raw(path)
    if raw is None:
        raw = {}
    if isinstance(raw, list):  # the seed's tasks.json may be a bare list of tasks
        raw = {"tasks": raw}
    if not isinstance(raw, dict):
        raise ConfigError(path, ["the top level must be a mapping of settings"])
    base = path.resolve().parent
    if "tasks_dir" not in raw and _seed_layout(raw, base):
        # The seed kept tasks.json in DIR/config and its scripts in DIR/tasks.
        raw = {**raw, "tasks_dir": "../tasks"}
    found: list[str] = []
    model = build(ConfigModel, raw, "", found)
    problems = twice + found + _raw_problems(raw, base)
    # Tasks are validated one at a time and turned into specs at once, so 10,000 raw tasks,
    # their models and their specs are never all in memory together.
    if model is not None:
        problems += _socket_problems(base / model.state_dir)
    tasks = raw.get("tasks")
    specs: list[TaskSpec] = []
    zone = _zone(model)
    # Not resolved: a link (`current` -> releases/v2) is followed at each run, as cron does.
    tasks_dir = _named(base / model.tasks_dir) if model else base
    shared: dict[object, Any] = {}
    for i, item in enumerate(tasks if isinstance(tasks, list) else ()):
        task = TaskModel.read(item, f"tasks[{i}]", problems)
        if task is not None and not problems:
            specs.append(_spec(task, tasks_dir, zone, shared))
    if problems or model is None:
        raise ConfigError(path, problems)
    return _build(model, path, base, tuple(specs))


# A unix socket's path holds at most 107 bytes on Linux (sun_path is 108, with its NUL).
SOCKET_PATH_MAX = 107


def _socket_problems(state_dir: Path) -> list[str]:
    sock = state_dir.resolve() / "control.sock"
    size = len(os.fsencode(sock))
    if size <= SOCKET_PATH_MAX:
        return []
    return [
        f"state_dir: its control socket {sock} would be {size} bytes long, and a unix socket's "
        f"path can be at most {SOCKET_PATH_MAX}; choose a shorter state_dir"
    ]


def _seed_layout(raw: dict[str, Any], base: Path) -> bool:
    """A seed skill's tasks.json where it lived: tasks named in the seed's keys, scripts in
    the `tasks` folder beside the `config` folder."""
    tasks = raw.get("tasks")
    return (
        isinstance(tasks, list)
        and bool(tasks)
        and all(isinstance(t, dict) and "script_path" in t for t in tasks)
        and (base.parent / "tasks").is_dir()
        and not (base / "tasks").is_dir()
    )


def _named(path: Path) -> Path:
    """The path as named, made absolute, but not resolved: a link stays the link, so what
    reads it later (a reload, a run) finds what it names then."""
    return Path(os.path.abspath(path))


def _zone(model: ConfigModel | None) -> ZoneInfo:
    return ZoneInfo(model.timezone) if model and model.timezone else host_zone()


def _build(model: ConfigModel, path: Path, base: Path, specs: tuple[TaskSpec, ...]) -> AppConfig:
    settings = EngineSettings(
        state_dir=(base / model.state_dir).resolve(),
        tasks_dir=_named(base / model.tasks_dir),
        config_path=_named(path),
        max_concurrent=model.max_concurrent,
        retention=Retention(
            runs_per_task=model.retention.runs_per_task,
            log_days=model.retention.log_days,
            output_bytes=model.retention.output,
        ),
    )
    signal = None
    if model.signal is not None:
        s = model.signal
        signal = SignalConfig(
            service=s.service,
            account=s.account,
            admins=tuple(s.admins),
            groups=tuple(s.groups),
            alert_to=tuple(s.alert_to if s.alert_to is not None else s.admins),
            send_per_minute=s.send_per_minute,
            send_burst=s.send_burst,
        )
    a, m = model.alerts, model.metrics
    return AppConfig(
        _named(path),
        settings,
        _zone(model),
        specs,
        signal,
        AlertSettings(
            a.after_failures,
            a.repeat_every,
            a.recovery,
            tuple(a.fallback_command),
            a.fallback_after,
        ),
        None if m is None else MetricsSettings(m.host, m.port),
        model.control.group,
    )


def _spec(task: TaskModel, tasks_dir: Path, zone: ZoneInfo, shared: dict[object, Any]) -> TaskSpec:
    """The task's spec. Equal triggers, commands and environments are one object across
    tasks (`shared`): 10,000 tasks on one schedule keep one trigger in memory, and the
    cached configuration (config.cache) stores and rebuilds it once. Each kind has its own
    keys: a command `[env]` is not the empty environment, though both could be ("env",)."""
    script = None
    if task.script is not None:
        script = os.path.join(tasks_dir, task.script)
        argv: tuple[str, ...] = ("bash", script)
    else:
        assert task.command is not None
        argv = tuple(task.command)
    trigger: Trigger = Every(task.every) if task.every is not None else Cron(task.cron or "", zone)
    env = dict(task.env)
    return TaskSpec(
        id=task.id,
        name=task.name or task.id,
        argv=shared.setdefault(("argv", argv), argv),
        trigger=shared.setdefault(("trigger", trigger), trigger),
        priority=task.priority,
        enabled=task.enabled,
        timeout=task.timeout,
        grace=task.grace,
        catch_up=CatchUp(task.catch_up),
        interruptible=task.interruptible,
        alert=task.alert,
        env=shared.setdefault(("env", *sorted(env.items())), env),
        script=shared.setdefault(("script", script), script),
        retries=task.retries,
        retry_delay=task.retry_delay,
        max_age=task.max_age,
    )


def host_zone() -> ZoneInfo:
    """The host's time zone, or UTC when it cannot be told. A TZ that names a zone of the zone
    database comes first, as for `date` (tzlocal takes only names it maps to Windows zones:
    not `EST5EDT`); one that names none, or a POSIX rule, leaves it to the system's."""
    tz = os.environ.get("TZ", "").removeprefix(":")
    if tz and not os.path.isabs(tz):
        with contextlib.suppress(Exception):  # not a key of the zone database
            return ZoneInfo(tz)
    try:
        import tzlocal

        return ZoneInfo(tzlocal.get_localzone_name() or "UTC")
    except Exception:  # an odd /etc/localtime must not stop the daemon
        return ZoneInfo("UTC")


def _not_a_script(path: str) -> str:
    """What is wrong with `path` as a script, or "" if it is a file."""
    if os.path.isfile(path):
        return ""
    if os.path.isdir(path):
        return f"{path!r} is a folder, not a script"
    if os.path.islink(path):  # and what it points to is not there
        return f"{path!r} is a link to {os.readlink(path)!r}, which does not exist"
    if os.path.lexists(path):
        return f"{path!r} is not a regular file"
    return f"no such file {path!r}"


def _slip(script: str, tasks_dir: str, base: Path) -> str:
    """What a missing script's name says was meant: arguments, a home folder, or a path from
    another folder than tasks_dir (`tasks/x.sh`, from the configuration's folder)."""
    import json
    import shlex

    if script.startswith("~"):
        return " (~ is not your home folder here; write the whole path)"
    for other in (os.path.dirname(os.path.normpath(tasks_dir)), str(base)):
        if not os.path.isabs(script) and os.path.isfile(os.path.join(other, script)):
            there = os.path.relpath(os.path.join(other, script), tasks_dir)
            return f" (scripts are found from tasks_dir, {tasks_dir}: write {there!r})"
    try:
        words = shlex.split(script)
    except ValueError:  # an unclosed quote
        return ""
    first = os.path.join(tasks_dir, words[0]) if len(words) > 1 else ""
    if not os.path.isfile(first):
        return ""
    argv, then = ["bash", *words], ""
    with contextlib.suppress(OSError), open(first, "rb") as f:
        if f.read(2) == b"#!":  # it names its interpreter: run it itself
            argv = [words[0] if os.sep in words[0] else f"./{words[0]}", *words[1:]]
            then = "" if os.access(first, os.X_OK) else f", and chmod +x {first}"
    return (
        " (a script takes no arguments; to pass them, write command: "
        f"{json.dumps(argv, ensure_ascii=False)}{then})"
    )


def _raw_problems(raw: Mapping[str, Any], base: Path) -> list[str]:
    """What no single field shows: duplicate ids and scripts that do not exist."""
    problems: list[str] = []
    tasks = raw.get("tasks")
    if not isinstance(tasks, list):
        return problems
    tasks_dir_raw = raw.get("tasks_dir", "tasks")
    tasks_dir = os.path.join(base, tasks_dir_raw) if isinstance(tasks_dir_raw, str) else None
    seen: dict[str, int] = {}
    found: dict[str, str] = {}  # each script is looked at once, however many tasks run it
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        tid = task.get("id", task.get("task_id"))
        if isinstance(tid, str):
            if tid in seen:
                problems.append(f"tasks[{i}].id: duplicate id {tid!r} (also tasks[{seen[tid]}])")
            else:
                seen[tid] = i
        script = task.get("script", task.get("script_path"))
        key = "script" if "script" in task else "script_path"
        if isinstance(script, str) and tasks_dir is not None:
            target = os.path.join(tasks_dir, script)
            if script not in found:
                found[script] = _not_a_script(target)
                if found[script].startswith("no such file"):
                    found[script] += _slip(script, tasks_dir, base)
            if found[script]:
                problems.append(f"tasks[{i}].{key}: {found[script]}")
    return problems

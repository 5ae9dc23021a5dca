"""The configuration file's schema (DESIGN.md section 3): one dataclass per section, each
field carrying the parser that checks and converts its value (`config.fields`; the keys
about time, `config.times`).

Unknown keys are errors; every value is checked here, so a bad file fails before the daemon
starts, with every problem at its dotted place. Values are taken as YAML and JSON give them,
with the usual leniency (`"5"` for 5, `yes` for true, strings stripped). The seed skill's
`tasks.json` keys are accepted as aliases (`task_id`, `script_path`, `interval_minutes`).

Plain code rather than a validation library: the daemon and `moltsched status` import this at
start-up, and a schema library cost them a third of their start and a quarter of their memory.
For the same reason the sections are plain dataclasses (no `frozen`, `eq` or `repr`): they
are read once, into `TaskSpec` and `AppConfig`; the methods those options write cost 2.5 ms
of every start that reads the file, and a frozen one sets each field of each task through
`object.__setattr__`, 20 ms of reading 10,000 tasks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from config.fields import (
    boolean,
    build,
    key,
    number,
    one_of,
    optional,
    parse_size,
    section,
    show,
    signal_ids,
    signal_number,
    signal_service,
    text,
    text_map,
    texts,
    then,
    whole,
)
from config.times import cron, interval, zone
from scheduler_core.model import RUN_VARIABLES
from scheduler_core.triggers import parse_duration

__all__ = ["TASK_ID", "build", "parse_duration", "parse_size"]

TASK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


# --- the sections ----------------------------------------------------------------------------


def _task_id(value: str) -> str:
    if not TASK_ID.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a task id: use 1-64 of a-z 0-9 _ -, starting with a letter "
            "or digit"
        )
    return value


def _not_run_variables(env: dict[str, str]) -> dict[str, str]:
    taken = [name for name in env if name in RUN_VARIABLES]
    if taken:
        raise ValueError(
            f"{', '.join(taken)}: set by moltsched for each run (the task's id, the run's, its "
            "checkpoint, the database, the configuration and moltsched's Python), not by a task"
        )
    return env


def _command(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("command needs at least the program")
    return value


NAME_MAX = 100  # characters: a name stands in every alert and `status TASK` line


def _task_name(value: str) -> str:
    import unicodedata

    if len(value) > NAME_MAX:
        raise ValueError(f"at most {NAME_MAX} characters (this one has {len(value)})")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
        raise ValueError(f"{show(value)} has a control character; a name is one line of text")
    return value


def _a_second_or_more(name: str) -> Callable[[float], float]:
    """A duration key's check: at least a second."""

    def check(value: float) -> float:
        if value < 1:
            raise ValueError(f"{name} must be at least 1s")
        return value

    return check


_FOR_EVER = "every run has one, so that none can hang for ever: write a long one, like 24h"


def _run_time(value: object) -> float:
    """`timeout:`, a duration; `none` or `0` for no timeout says why there is always one."""
    if isinstance(value, str) and value.strip().lower() in ("none", "never", "off", "unlimited"):
        raise ValueError(f"{show(value)} is not a duration: {_FOR_EVER}")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"timeout must be more than 0: {_FOR_EVER}")
    return seconds


# The seed skill's names for our keys. `interval_minutes` also changes the unit.
_SEED_ALIASES = {"task_id": "id", "script_path": "script", "interval_minutes": "every"}


def seed_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """A task's keys with the seed's names given ours; ValueError for a key given twice."""
    if not any(k in data for k in _SEED_ALIASES):
        return data
    data = dict(data)
    for seed_key, ours in _SEED_ALIASES.items():
        if seed_key not in data:
            continue
        if ours in data:
            raise ValueError(f"both {seed_key!r} and {ours!r} are given; keep one")
        value = data.pop(seed_key)
        if seed_key == "interval_minutes":
            try:  # a number in JSON, a text in YAML (config.raw)
                value = number(above=0)(value) * 60
            except ValueError as exc:
                raise ValueError(f"interval_minutes {exc}") from None
        data[ours] = value
    return data


@dataclass(eq=False, repr=False)
class TaskModel:
    id: str = key(then(text, _task_id))
    name: str | None = key(optional(then(text, _task_name)), None)
    script: str | None = key(optional(text), None)
    command: list[str] | None = key(optional(then(texts(), _command)), None)
    every: float | None = key(optional(then(interval, _a_second_or_more("every"))), None)
    cron: str | None = key(optional(then(text, cron)), None)
    priority: int = key(whole(1, 10), 5)
    enabled: bool = key(boolean, True)
    timeout: float = key(_run_time, 300.0)
    grace: float = key(parse_duration, 10.0)
    catch_up: str = key(one_of("once", "skip"), "once")
    interruptible: bool = key(boolean, True)
    alert: bool = key(boolean, True)
    env: dict[str, str] = key(then(text_map, _not_run_variables), factory=dict)
    retries: int = key(whole(0, 100), 0)
    retry_delay: float = key(then(parse_duration, _a_second_or_more("retry_delay")), 30.0)
    max_age: float | None = key(optional(then(parse_duration, _a_second_or_more("max_age"))), None)
    # Extra keys the seed's tasks.json carries that mean nothing here.
    description: str | None = key(optional(text), None)

    def __post_init__(self) -> None:
        problems = []
        if (self.script is None) == (self.command is None):
            problems.append("give exactly one of script or command")
        if (self.every is None) == (self.cron is None):
            problems.append("give exactly one of every or cron")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def read(cls, data: object, place: str, problems: list[str]) -> TaskModel | None:
        if isinstance(data, dict):
            try:
                data = seed_aliases(data)
            except ValueError as exc:
                problems.append(f"{place}: {exc}")
                return None
        return build(cls, data, place, problems)


@dataclass(eq=False, repr=False)
class SignalModel:
    account: str = key(signal_number)
    admins: list[str] = key(signal_ids(1))
    service: str = key(signal_service, "127.0.0.1:8080")
    groups: list[str] = key(texts(), factory=list)
    alert_to: list[str] | None = key(optional(signal_ids(groups=True)), None)
    # Every send (replies and alerts) to one recipient: at most this many a minute, after a
    # first burst (see bot.limiter).
    send_per_minute: float = key(number(hi=600, above=0), 6.0)
    send_burst: int = key(whole(1, 1000), 10)


@dataclass(eq=False, repr=False)
class AlertsModel:
    after_failures: int = key(whole(1), 1)
    repeat_every: float = key(parse_duration, 6 * 3600.0)
    recovery: bool = key(boolean, True)
    # Run with an alert's text on stdin when Signal has not delivered it within
    # `fallback_after`, and for every alert when there is no `signal:` section.
    fallback_command: list[str] = key(texts(), factory=list)
    fallback_after: float = key(parse_duration, 15 * 60.0)


@dataclass(eq=False, repr=False)
class RetentionModel:
    runs_per_task: int = key(whole(1, 10**9), 1000)
    log_days: float = key(number(0, 36525), 90.0)  # up to 100 years
    output: int = key(parse_size, 64 * 1000**2)  # all tasks' kept stdout and stderr together


def _loopback(value: str) -> str:
    import ipaddress

    try:
        loopback = value == "localhost" or ipaddress.ip_address(value).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{show(value)}: metrics are served on a loopback address only")
    return value


@dataclass(eq=False, repr=False)
class MetricsModel:
    port: int = key(whole(1, 65535))
    host: str = key(then(text, _loopback), "127.0.0.1")


def _group(value: str) -> str:
    import grp

    try:
        grp.getgrnam(value)
    except KeyError:
        raise ValueError(
            f"{show(value)} is not a group on this machine; create it: groupadd {value}"
        ) from None
    return value


@dataclass(eq=False, repr=False)
class ControlModel:
    """Who besides the daemon's own user may use the CLI through the daemon."""

    group: str | None = key(optional(then(text, _group)), None)


def _folder(value: str) -> str:
    if value.startswith("~"):  # it would be a folder named ~, beside the file
        raise ValueError(
            f"{show(value)}: ~ is not your home folder here (no shell reads the file); write "
            "the whole path"
        )
    return value


def _tasks(value: object) -> list[Any]:
    if value is None:  # `tasks:` and nothing under it
        raise ValueError("is empty: list the tasks under it, or write tasks: [] for none")
    if isinstance(value, dict) and ("id" in value or "task_id" in value):
        raise ValueError("is one task, not a list of them: begin each task with '- ' (a dash)")
    if not isinstance(value, list):
        raise ValueError(f"must be a list of tasks, not {show(value)}")
    return value


@dataclass(eq=False, repr=False)
class ConfigModel:
    state_dir: str = key(then(text, _folder), "state")
    tasks_dir: str = key(then(text, _folder), "tasks")
    timezone: str | None = key(optional(then(text, zone)), None)
    max_concurrent: int = key(whole(1, 1000), 2)
    # Each item is read as a TaskModel by the loader, one at a time (see config.loader).
    tasks: list[Any] = key(_tasks, factory=list)
    signal: SignalModel | None = section(SignalModel, nullable=True)
    alerts: AlertsModel = section(AlertsModel)
    retention: RetentionModel = section(RetentionModel)
    metrics: MetricsModel | None = section(MetricsModel, nullable=True)  # off unless set
    control: ControlModel = section(ControlModel)

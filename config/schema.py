"""The configuration file's schema (DESIGN.md section 3): one dataclass per section, each
field carrying the parser that checks and converts its value (`config.fields`).

Unknown keys are errors; durations, sizes and cron expressions are checked here, so a bad
file fails before the daemon starts, with every problem at its dotted place. Values are taken
as YAML and JSON give them, with the usual leniency (`"5"` for 5, `yes` for true, strings
stripped). The seed skill's `tasks.json` keys are accepted as aliases (`task_id`,
`script_path`, `interval_minutes`).

Plain code rather than a validation library: the daemon and `moltsched status` import this at
start-up, and a schema library cost them a third of their start and a quarter of their memory.
For the same reason the sections are plain dataclasses (no `frozen`, `eq` or `repr`): they
are read once, into `TaskSpec` and `AppConfig`; the methods those options write cost 2.5 ms
of every start that reads the file, and a frozen one sets each field of each task through
`object.__setattr__`, 20 ms of reading 10,000 tasks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
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
from scheduler_core.model import RUN_VARIABLES
from scheduler_core.triggers import cron_fields, parse_duration

__all__ = ["TASK_ID", "build", "cron_problem", "parse_duration", "parse_size"]

TASK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@functools.lru_cache(maxsize=256)
def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, or None. Cached: thousands of tasks tend to
    share a handful of expressions, and parsing one is the dearest check of a task."""
    from cronsim import CronSim, CronSimError

    if expression.strip().lower() == "@reboot":
        return "@reboot"
    try:
        CronSim(cron_fields(expression), datetime.now(UTC))
    except CronSimError as exc:
        fields = cron_fields(expression).split()
        if fields and fields[0].upper().startswith(("TZ=", "CRON_TZ=")):  # as Kubernetes has it
            return "a time zone is not part of the expression: set timezone: (for every task)"
        if "?" in fields:
            return "'?' is Quartz's 'any day'; write * for it"
        if len(fields) in (6, 7) and re.fullmatch(r"(19|20)\d\d\b.*", fields[-1]):
            return "cron has no year: leave it out (six fields are read with seconds first)"
        if len(fields) not in (5, 6):
            return (
                f"{len(fields)} fields, where cron has five (minute hour day month weekday), "
                "or six with seconds first"
            )
        day = len(fields) - 3  # day-of-month, month, weekday are the last three
        if str(exc) == "Bad day-of-month" and fields[day + 1] != "*":
            try:  # a day that some month has: none of the months named has it
                CronSim(" ".join([*fields[: day + 1], "*", fields[-1]]), datetime.now(UTC))
            except CronSimError:
                return str(exc)
            return f"none of the months it names has day {fields[day]}, so it would never run"
        return str(exc)
    return None


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


def _timeout(value: float) -> float:
    if value <= 0:
        raise ValueError("timeout must be more than 0")
    return value


def _cron(value: str) -> str:
    words = value.split(maxsplit=1)
    if len(words) == 2 and words[0].lower() in ("@every", "every"):  # Go's cron, or English
        try:
            parse_duration(words[1])
        except ValueError:
            pass
        else:
            raise ValueError(f"{show(value)} is an interval: write every: {words[1]}")
    if (problem := cron_problem(value)) == "@reboot":
        raise ValueError(
            f"{show(value)} is not a schedule here: moltsched runs no task at its own start; "
            "give a cron expression or every:"
        )
    if problem:
        raise ValueError(f"{show(value)} is not a cron expression: {problem}")
    return value


# What the words cron has nicknames for are as an interval (months and years are not one).
_AS_INTERVAL = {"hourly": ("1h", "the start of each hour"), "daily": ("1d", "each midnight")}
_AS_INTERVAL["weekly"] = ("1w", "the start of each Sunday")


def _interval(value: object) -> float:
    """`every:`, a duration. A word cron has a nickname for, or a cron expression, written
    here says what to write instead."""
    try:
        return parse_duration(value)
    except ValueError:
        if not isinstance(value, str):
            raise
        word = value.strip().lower().lstrip("@")
        if word in _AS_INTERVAL:
            every, when = _AS_INTERVAL[word]
            raise ValueError(
                f'{show(value)} is not a duration: write every: {every}, or cron: "@{word}" '
                f"for {when}"
            ) from None
        if word in ("monthly", "yearly", "annually", "midnight"):
            raise ValueError(f'{show(value)} is not a duration: write cron: "@{word}"') from None
        if len(value.split()) in (5, 6) and cron_problem(value) is None:
            raise ValueError(f'{show(value)} is a cron expression: write cron: "{value}"') from None
        raise


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
    every: float | None = key(optional(then(_interval, _a_second_or_more("every"))), None)
    cron: str | None = key(optional(then(text, _cron)), None)
    priority: int = key(whole(1, 10), 5)
    enabled: bool = key(boolean, True)
    timeout: float = key(then(parse_duration, _timeout), 300.0)
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


def _zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(_not_a_zone(value)) from None
    return value


_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])\s*(\d{1,2})(?::?(\d\d))?", re.IGNORECASE)
_PLACE = "name the place (like Europe/Berlin)"


def _not_a_zone(value: str) -> str:
    """What is said of a name that is not a zone: what it probably meant, and what to write."""
    from zoneinfo import available_timezones

    shown = show(value)
    offset = _OFFSET.fullmatch(value)
    if offset:  # UTC+2 is Berlin's winter and Cairo's, not Berlin's summer
        sign, hours, minutes = offset.groups()
        fixed = ""
        if int(hours) <= 12 and minutes in (None, "00"):  # Etc/GMT-2 is UTC+2: POSIX's sign
            fixed = f", or write Etc/GMT{'-+'[sign == '-']}{int(hours)} for UTC{sign}{int(hours)}"
            fixed += " all year"
        return f"{shown} is an offset, which does not follow summer time: {_PLACE}{fixed}"
    if value.lower() in ("local", "localtime", "system", "host"):
        return f"{shown} is not a time zone: leave timezone out for the host's zone"
    wanted = value.lower().replace(" ", "_")
    zones = sorted(available_timezones())
    found = [z for z in zones if z.lower() == wanted]
    found = found or [z for z in zones if z.lower().rsplit("/", 1)[-1] == wanted]
    if len(found) == 1:
        return f"{shown} is not a time zone (did you mean {found[0]}?)"
    if value.isalpha() and value.isupper() and 3 <= len(value) <= 5:  # CEST, BST, IST
        return f"{shown} is an abbreviation, which names no one place: {_PLACE}"
    return f"{shown} is not a time zone (like Europe/Berlin or UTC)"


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
    state_dir: str = key(text, "state")
    tasks_dir: str = key(text, "tasks")
    timezone: str | None = key(optional(then(text, _zone)), None)
    max_concurrent: int = key(whole(1, 1000), 2)
    # Each item is read as a TaskModel by the loader, one at a time (see config.loader).
    tasks: list[Any] = key(_tasks, factory=list)
    signal: SignalModel | None = section(SignalModel, nullable=True)
    alerts: AlertsModel = section(AlertsModel)
    retention: RetentionModel = section(RetentionModel)
    metrics: MetricsModel | None = section(MetricsModel, nullable=True)  # off unless set
    control: ControlModel = section(ControlModel)

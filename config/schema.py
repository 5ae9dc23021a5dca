"""The configuration file's schema (DESIGN.md section 3): one frozen dataclass per section,
each field carrying the parser that checks and converts its value (`build`).

Unknown keys are errors; durations, sizes and cron expressions are checked here, so a bad
file fails before the daemon starts, with every problem at its dotted place. Values are taken
as YAML and JSON give them, with the usual leniency (`"5"` for 5, `yes` for true, strings
stripped). The seed skill's `tasks.json` keys are accepted as aliases (`task_id`,
`script_path`, `interval_minutes`).

Plain code rather than a validation library: the daemon and `moltsched status` import this at
start-up, and a schema library cost them a third of their start and a quarter of their memory.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 2, 60, 60


def _show(value: object) -> str:
    """A value as a problem quotes it: short, and never expanded (a YAML alias bomb is nine
    lists of nine lists of ..., cheap until printed)."""
    return _SHOWN.repr(value)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
TASK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def parse_duration(value: object) -> float:
    """`90s`, `15m`, `2h`, `1d`, `1h30m` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration, like 90s, 15m, 2h, 1d or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ValueError(
                    f"{_show(value)} is not a duration (use 90s, 15m, 2h, 1d or seconds)"
                ) from None
            seconds = sum(float(n) * _UNIT_S[u.lower()] for n, u in parts)
    else:
        raise ValueError("a duration, like 90s, 15m, 2h, 1d or a number of seconds")
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{_show(value)} is not a duration (must not be negative)")
    return seconds


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?", re.IGNORECASE)
_UNIT_B = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2}
_UNIT_B["gib"] = 1024**3


def parse_size(value: object) -> int:
    """`64MB`, `500KiB`, `1GB` or a number of bytes -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{_show(value)} is not a size (use 64MB, 500KiB, 1GB or bytes)")
    number, unit = match.groups()
    return int(float(number) * _UNIT_B[(unit or "b").lower()])


@functools.lru_cache(maxsize=256)
def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, or None. Cached: thousands of tasks tend to
    share a handful of expressions, and parsing one is the dearest check of a task."""
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as exc:
        return str(exc)
    return None


# --- the parsers a field can carry -----------------------------------------------------------

Parser = Callable[[object], Any]
T = TypeVar("T")
_TRUE = {"true", "yes", "on", "y", "t", "1"}
_FALSE = {"false", "no", "off", "n", "f", "0"}


def text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {_show(value)}")
    return value.strip()


def whole(lo: int | None = None, hi: int | None = None) -> Parser:
    """A whole number within [lo, hi]."""

    def parse(value: object) -> int:
        number: object = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError(f"must be a whole number, not {_show(value)}")
        _in_range(number, lo, hi)
        return number

    return parse


def number(
    lo: float | None = None, hi: float | None = None, *, above: float | None = None
) -> Parser:
    """A number within [lo, hi], and more than `above`."""

    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"must be a number, not {_show(value)}")
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"must be a number, not {_show(value)}") from None
        if result != result:
            raise ValueError("must be a number, not NaN")
        if above is not None and result <= above:
            raise ValueError(f"must be more than {above:g}")
        _in_range(result, lo, hi)
        return result

    return parse


def _in_range(value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ValueError(f"must be at least {lo:g}, not {value:g}")
    if hi is not None and value > hi:
        raise ValueError(f"must be at most {hi:g}, not {value:g}")


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, not {_show(value)}")


def texts(min_items: int = 0) -> Parser:
    """A list of texts, at least `min_items` long."""

    def parse(value: object) -> list[str]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list, not {_show(value)}")
        items = [text(v) for v in value]
        if len(items) < min_items:
            raise ValueError(f"must list at least {min_items}")
        return items

    return parse


def text_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of names to texts, not {_show(value)}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"{_show(k)}: names and values must be text (quote numbers)")
        out[k] = v
    return out


def one_of(*choices: str) -> Parser:
    def parse(value: object) -> str:
        found = text(value)
        if found not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {_show(value)}")
        return found

    return parse


def optional(parse: Parser) -> Parser:
    return lambda value: None if value is None else parse(value)


def then(parse: Parser, check: Callable[[Any], Any]) -> Parser:
    """`parse`, then `check` on what it gave (which raises ValueError or returns the value)."""
    return lambda value: check(parse(value))


def key(parse: Parser, default: Any = dataclasses.MISSING, *, factory: Any = None) -> Any:
    """A field of a section: its parser, and its default (none: the key is required)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"parse": parse})
    return field(default=default, metadata={"parse": parse})


S = TypeVar("S")


def section(cls: type, default: Any = dataclasses.MISSING, *, nullable: bool = False) -> Any:
    """A field that is a section of its own (`cls`), its problems placed under its name."""
    meta = {"section": cls, "nullable": nullable}
    if default is dataclasses.MISSING and not nullable:
        return field(default_factory=cls, metadata=meta)
    return field(default=None, metadata=meta)


def build(cls: type[S], data: object, place: str, problems: list[str]) -> S | None:
    """An instance of the section `cls` from `data`, or None with every problem added."""
    if not isinstance(data, dict):
        problems.append(f"{place or 'the file'}: must be a mapping of settings, not {_show(data)}")
        return None
    count = len(problems)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for name, f in fields.items():
        where = f"{place}.{name}" if place else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{where}: is required")
            continue
        value = data[name]
        sub = f.metadata.get("section")
        if sub is not None:
            if value is not None or not f.metadata["nullable"]:
                values[name] = build(sub, value, where, problems)
            continue
        try:
            values[name] = f.metadata["parse"](value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    for name in data:
        if name not in fields:
            shown = name if isinstance(name, str) and len(name) <= 60 else _show(name)
            problems.append(f"{place}.{shown}: unknown key" if place else f"{shown}: unknown key")
    if len(problems) > count:
        return None
    try:
        return cls(**values)
    except ValueError as exc:  # a check across fields (__post_init__)
        problems.append(f"{place}: {exc}" if place else str(exc))
        return None


# --- the sections ----------------------------------------------------------------------------


def _task_id(value: str) -> str:
    if not TASK_ID.fullmatch(value):
        raise ValueError(
            f"{_show(value)} is not a task id: use 1-64 of a-z 0-9 _ -, starting with a letter "
            "or digit"
        )
    return value


def _command(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("command needs at least the program")
    return value


def _every(value: float) -> float:
    if value < 1:
        raise ValueError("every must be at least 1s")
    return value


def _timeout(value: float) -> float:
    if value <= 0:
        raise ValueError("timeout must be more than 0")
    return value


def _cron(value: str) -> str:
    if problem := cron_problem(value):
        raise ValueError(f"{_show(value)} is not a cron expression: {problem}")
    return value


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
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"interval_minutes must be a number, not {_show(value)}")
            value = float(value) * 60
        data[ours] = value
    return data


@dataclass(frozen=True)
class TaskModel:
    id: str = key(then(text, _task_id))
    name: str | None = key(optional(text), None)
    script: str | None = key(optional(text), None)
    command: list[str] | None = key(optional(then(texts(), _command)), None)
    every: float | None = key(optional(then(parse_duration, _every)), None)
    cron: str | None = key(optional(then(text, _cron)), None)
    priority: int = key(whole(1, 10), 5)
    enabled: bool = key(boolean, True)
    timeout: float = key(then(parse_duration, _timeout), 300.0)
    grace: float = key(parse_duration, 10.0)
    catch_up: str = key(one_of("once", "skip"), "once")
    interruptible: bool = key(boolean, True)
    alert: bool = key(boolean, True)
    env: dict[str, str] = key(text_map, factory=dict)
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


@dataclass(frozen=True)
class SignalModel:
    account: str = key(text)
    admins: list[str] = key(texts(1))
    service: str = key(text, "127.0.0.1:8080")
    groups: list[str] = key(texts(), factory=list)
    alert_to: list[str] | None = key(optional(texts()), None)
    # Every send (replies and alerts) to one recipient: at most this many a minute, after a
    # first burst (see bot.limiter).
    send_per_minute: float = key(number(hi=600, above=0), 6.0)
    send_burst: int = key(whole(1, 1000), 10)


@dataclass(frozen=True)
class AlertsModel:
    after_failures: int = key(whole(1), 1)
    repeat_every: float = key(parse_duration, 6 * 3600.0)
    recovery: bool = key(boolean, True)


@dataclass(frozen=True)
class RetentionModel:
    runs_per_task: int = key(whole(1), 1000)
    log_days: float = key(number(0), 90.0)
    output: int = key(parse_size, 64 * 1000**2)  # all tasks' kept stdout and stderr together


def _loopback(value: str) -> str:
    import ipaddress

    try:
        loopback = value == "localhost" or ipaddress.ip_address(value).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{_show(value)}: metrics are served on a loopback address only")
    return value


@dataclass(frozen=True)
class MetricsModel:
    port: int = key(whole(1, 65535))
    host: str = key(then(text, _loopback), "127.0.0.1")


def _group(value: str) -> str:
    import grp

    try:
        grp.getgrnam(value)
    except KeyError:
        raise ValueError(
            f"{_show(value)} is not a group on this machine; create it: groupadd {value}"
        ) from None
    return value


@dataclass(frozen=True)
class ControlModel:
    """Who besides the daemon's own user may use the CLI through the daemon."""

    group: str | None = key(optional(then(text, _group)), None)


def _zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{_show(value)} is not a time zone (like Europe/Berlin or UTC)") from None
    return value


def _tasks(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of tasks, not {_show(value)}")
    return value


@dataclass(frozen=True)
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

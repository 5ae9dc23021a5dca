"""The configuration file's schema (DESIGN.md section 3) as pydantic models.

Unknown keys are errors (`extra="forbid"`); durations and cron expressions are checked here, so
a bad file fails before the daemon starts. The seed skill's `tasks.json` keys are accepted as
aliases (`task_id`, `script_path`, `interval_minutes`).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

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
                    f"{value!r} is not a duration (use 90s, 15m, 2h, 1d or seconds)"
                ) from None
            seconds = sum(float(n) * _UNIT_S[u.lower()] for n, u in parts)
    else:
        raise ValueError("a duration, like 90s, 15m, 2h, 1d or a number of seconds")
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{value!r} is not a duration (must not be negative)")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?", re.IGNORECASE)
_UNIT_B = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2}
_UNIT_B["gib"] = 1024**3


def parse_size(value: object) -> int:
    """`64MB`, `500KiB`, `1GB` or a number of bytes -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a size (use 64MB, 500KiB, 1GB or bytes)")
    number, unit = match.groups()
    return int(float(number) * _UNIT_B[(unit or "b").lower()])


Size = Annotated[int, BeforeValidator(parse_size)]


@functools.lru_cache(maxsize=256)
def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, or None. Cached: thousands of tasks tend to
    share a handful of expressions, and parsing one is the dearest check of a task."""
    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as exc:
        return str(exc)
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# The seed skill's names for our keys. `interval_minutes` also changes the unit.
_SEED_ALIASES = {"task_id": "id", "script_path": "script", "interval_minutes": "every"}


class TaskModel(_Strict):
    id: str
    name: str | None = None
    script: str | None = None
    command: list[str] | None = None
    every: Duration | None = None
    cron: str | None = None
    priority: int = Field(default=5, ge=1, le=10)
    enabled: bool = True
    timeout: Duration = 300.0
    grace: Duration = 10.0
    catch_up: Literal["once", "skip"] = "once"
    interruptible: bool = True
    alert: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    # Extra keys the seed's tasks.json carries that mean nothing here.
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _seed_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for seed_key, key in _SEED_ALIASES.items():
            if seed_key not in data:
                continue
            if key in data:
                raise ValueError(f"both {seed_key!r} and {key!r} are given; keep one")
            value = data.pop(seed_key)
            if seed_key == "interval_minutes":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"interval_minutes must be a number, not {value!r}")
                value = float(value) * 60
            data[key] = value
        return data

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not TASK_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a task id: use 1-64 of a-z 0-9 _ -, starting with a letter "
                "or digit"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("command needs at least the program")
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            raise ValueError("every must be at least 1s")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timeout must be more than 0")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (problem := cron_problem(value)):
            raise ValueError(f"{value!r} is not a cron expression: {problem}")
        return value

    @model_validator(mode="after")
    def _one_of_each(self) -> TaskModel:
        problems = []
        if (self.script is None) == (self.command is None):
            problems.append("give exactly one of script or command")
        if (self.every is None) == (self.cron is None):
            problems.append("give exactly one of every or cron")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class SignalModel(_Strict):
    service: str = "127.0.0.1:8080"
    account: str
    admins: list[str] = Field(min_length=1)
    groups: list[str] = Field(default_factory=list)
    alert_to: list[str] | None = None
    # Every send (replies and alerts) to one recipient: at most this many a minute, after a
    # first burst (see bot.limiter).
    send_per_minute: float = Field(default=6.0, gt=0, le=600)
    send_burst: int = Field(default=10, ge=1, le=1000)


class AlertsModel(_Strict):
    after_failures: int = Field(default=1, ge=1)
    repeat_every: Duration = 6 * 3600.0
    recovery: bool = True


class RetentionModel(_Strict):
    runs_per_task: int = Field(default=1000, ge=1)
    log_days: float = Field(default=90, ge=0)
    output: Size = 64 * 1000**2  # all tasks' kept stdout and stderr together


class MetricsModel(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        import ipaddress

        try:
            loopback = value == "localhost" or ipaddress.ip_address(value).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{value!r}: metrics are served on a loopback address only")
        return value


class ControlModel(_Strict):
    """Who besides the daemon's own user may use the CLI through the daemon."""

    group: str | None = None

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import grp

        try:
            grp.getgrnam(value)
        except KeyError:
            raise ValueError(
                f"{value!r} is not a group on this machine; create it: groupadd {value}"
            ) from None
        return value


class ConfigModel(_Strict):
    state_dir: str = "state"
    tasks_dir: str = "tasks"
    timezone: str | None = None
    max_concurrent: int = Field(default=2, ge=1, le=1000)
    # Each item is validated as a TaskModel by the loader, one at a time (see config.loader).
    tasks: list[Any] = Field(default_factory=list)
    signal: SignalModel | None = None
    alerts: AlertsModel = Field(default_factory=AlertsModel)
    retention: RetentionModel = Field(default_factory=RetentionModel)
    metrics: MetricsModel | None = None  # off unless configured
    control: ControlModel = Field(default_factory=ControlModel)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone (like Europe/Berlin or UTC)") from None
        return value

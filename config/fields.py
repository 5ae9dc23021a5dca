"""The pieces the configuration schema is built of (`config.schema`): parsers for values as
YAML and JSON give them, with the usual leniency, and `build`, which reads a section (a frozen
dataclass whose fields carry their parsers) and places every problem at its dotted name.
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
from collections.abc import Callable
from dataclasses import field
from typing import Any, TypeVar
from urllib.parse import urlsplit

_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 2, 60, 60


def show(value: object) -> str:
    """A value as a problem quotes it: short, and never expanded (a YAML alias bomb is nine
    lists of nine lists of ..., cheap until printed)."""
    return _SHOWN.repr(value)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?", re.IGNORECASE)
_UNIT_B = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2}
_UNIT_B["gib"] = 1024**3


def parse_size(value: object) -> int:
    """`64MB`, `500KiB`, `1GB` or a number of bytes -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{show(value)} is not a size (use 64MB, 500KiB, 1GB or bytes)")
    number, unit = match.groups()
    return int(float(number) * _UNIT_B[(unit or "b").lower()])


# --- the parsers a field can carry -----------------------------------------------------------

Parser = Callable[[object], Any]
_TRUE = {"true", "yes", "on", "y", "t", "1"}
_FALSE = {"false", "no", "off", "n", "f", "0"}


def text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(not_text(value))
    return value.strip()


def not_text(value: object) -> str:
    """What is said of a value that must be text: what it is, and what to write instead."""
    if isinstance(value, bool):  # `command: [true]`: YAML and JSON read the word as true
        word = str(value).lower()
        return f'must be text, not {word} (for the word, write "{word}" in quotes)'
    if value is None:  # `KEY:` or `KEY: null`
        return 'must be text, not null (for an empty one, write "")'
    if isinstance(value, int | float):  # JSON's numbers (YAML's are read as written)
        return f'must be text, not the number {value} (write "{value}" in quotes)'
    return f"must be text, not {show(value)}"


_WRITTEN = re.compile(r"[\s().\-/]")  # how people space out a phone number
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def signal_number(value: object) -> str:
    """A phone number as Signal names it (+, the country code, digits), from how people write
    it: spaces, dashes, dots and brackets are left out. Messages say who sent them this way,
    so an admin written otherwise would never match."""
    written = text(value)
    number = _WRITTEN.sub("", written)
    if not _E164.fullmatch(number):
        raise ValueError(
            f"{show(written)} is not a Signal number in international form, like +4917612345678"
            + _instead(number)
        )
    return number


def _instead(number: str) -> str:
    """What to write for a number that is all but international: `0049…`, as many dial
    abroad, or `49…`, which lost its `+` (not `0176…`: that names no country)."""
    bare = number.removeprefix("00")
    return f" (write +{bare})" if number.isdigit() and _E164.fullmatch(f"+{bare}") else ""


_SCHEME = re.compile(r"(?:https?|wss?)://", re.IGNORECASE)


def signal_service(value: object) -> str:
    """signal-cli-rest-api's address: `host:port` (and any path its API lies under), after
    `https://` or `http://` when one was written (`wss://` and `ws://` are the same), without
    a last `/`. The scheme written is kept: it says whether TLS is required (see
    `config.loader.SignalConfig.tls`)."""
    written = text(value)
    m = _SCHEME.match(written)
    bare = (written[m.end() :] if m else written).rstrip("/")
    if not _usable(bare):
        raise ValueError(f"{show(written)} is not an address like 127.0.0.1:8080")
    if m is None:
        return bare
    return ("https://" if m[0].lower() in ("https://", "wss://") else "http://") + bare


def _usable(bare: str) -> bool:
    """Whether a connection could be made to `bare` (`host[:port][/path]`, `user@` allowed):
    a host, a port that is a number from 1 to 65535 if one is written, no space, query or
    fragment, IPv6 in brackets."""
    if "://" in bare or any(c.isspace() or c in "?#" for c in bare):
        return False
    try:
        parts = urlsplit(f"http://{bare}")
        port = parts.port
    except ValueError:
        return False
    if not parts.hostname or parts.netloc.endswith(":"):  # `host:` names no port
        return False
    return port != 0


class Problems(ValueError):
    """Several problems of one value, each at a place within it (`[2]`, an item's index;
    "": the value's own place)."""

    def __init__(self, found: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where} {what}" for where, what in found))
        self.found = found


def signal_ids(min_items: int = 0, *, groups: bool = False) -> Parser:
    """A list of Signal numbers (see `signal_number`) or accounts' UUIDs (in lower case, as
    messages carry them), at least `min_items` long; with `groups`, also `group.…` ids."""

    def one(value: str) -> str:
        if _UUID.fullmatch(value.lower()):
            return value.lower()
        if groups and value.startswith("group."):
            return value
        try:
            return signal_number(value)
        except ValueError:
            what = "a Signal number in international form (like +4917612345678)"
            instead = _instead(_WRITTEN.sub("", value))
            raise ValueError(f"{show(value)} is not {what} or an account's UUID{instead}") from None

    def parse(value: object) -> list[str]:
        found, bad = [], []
        for i, item in enumerate(texts(min_items)(value)):
            try:
                found.append(one(item))
            except ValueError as exc:
                bad.append((f"[{i}]", str(exc)))
        if bad:
            raise Problems(bad)  # every bad entry, each at its place
        return found

    return parse


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
            within = f" from {lo} to {hi}" if lo is not None and hi is not None else ""
            raise ValueError(f"must be a whole number{within}, not {show(value)}")
        _in_range(number, lo, hi)
        return number

    return parse


def number(
    lo: float | None = None, hi: float | None = None, *, above: float | None = None
) -> Parser:
    """A number within [lo, hi], and more than `above`."""

    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"must be a number, not {show(value)}")
        try:
            result = float(value)
        except (ValueError, OverflowError):
            raise ValueError(f"must be a number, not {show(value)}") from None
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
    raise ValueError(f"must be true or false, not {show(value)}")


def _as_words(value: object) -> str:
    """How a text given for a list is written as one (`a.sh --full` for a command)."""
    import json
    import shlex

    if not isinstance(value, str) or len(value) > 200:
        return ""
    try:
        words = shlex.split(value)
    except ValueError:  # an unclosed quote
        return ""
    return f"; write it as a list: {json.dumps(words, ensure_ascii=False)}" if words else ""


def texts(min_items: int = 0) -> Parser:
    """A list of texts, at least `min_items` long, none with a NUL (an argument list: no
    program can be given one)."""

    def parse(value: object) -> list[str]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list, not {show(value)}{_as_words(value)}")
        items = [text(v) for v in value]
        if len(items) < min_items:
            raise ValueError(f"must list at least {min_items}")
        for item in items:
            if "\0" in item:
                raise ValueError(f"{show(item)}: a NUL byte cannot be passed to a program")
        return items

    return parse


def text_map(value: object) -> dict[str, str]:
    """Environment variables: names and values that a program can be given."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of names to texts, not {show(value)}")
    out, bad = {}, []
    for k, v in value.items():
        if not isinstance(k, str):
            bad.append(("", f"{show(k)}: a variable's name is text: write it in quotes"))
        elif not isinstance(v, str):
            bad.append(("", f"{show(k)}: {not_text(v)}"))
        elif not k or "=" in k or "\0" in k:
            bad.append(("", f"{show(k)}: a variable's name is not empty and has no = or NUL"))
        elif "\0" in v:
            bad.append(("", f"{show(k)}: a NUL byte cannot be passed to a program"))
        else:
            out[k] = v
    if bad:
        raise Problems(bad)  # every bad variable, each at its place
    return out


def one_of(*choices: str) -> Parser:
    def parse(value: object) -> str:
        found = text(value)
        if found not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {show(value)}")
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


def section(cls: type, *, nullable: bool = False) -> Any:
    """A field that is a section of its own (`cls`), its problems placed under its name;
    missing, it is `cls()`, or None if `nullable` (a section that is off unless given)."""
    meta = {"section": cls, "nullable": nullable}
    if nullable:
        return field(default=None, metadata=meta)
    return field(default_factory=cls, metadata=meta)


def build(cls: type[S], data: object, place: str, problems: list[str]) -> S | None:
    """An instance of the section `cls` from `data`, or None with every problem added."""
    if not isinstance(data, dict):
        problems.append(f"{place or 'the file'}: must be a mapping of settings, not {show(data)}")
        return None
    count = len(problems)
    fields = _fields(cls)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{_at(place, name)}: is required")
            continue
        value = data[name]
        sub = f.metadata.get("section")
        if sub is not None:
            if value is not None or not f.metadata["nullable"]:
                values[name] = build(sub, value, _at(place, name), problems)
            continue
        try:
            values[name] = f.metadata["parse"](value)
        except Problems as exc:
            problems += [f"{_at(place, name)}{where}: {what}" for where, what in exc.found]
        except ValueError as exc:
            problems.append(f"{_at(place, name)}: {exc}")
    if len(data) > len(values):
        for name in data:
            if name not in fields:
                shown = name if isinstance(name, str) and len(name) <= 60 else show(name)
                problems.append(f"{_at(place, shown)}: unknown key")
    if len(problems) > count:
        return None
    try:
        return cls(**values)
    except ValueError as exc:  # a check across fields (__post_init__)
        problems.append(f"{place}: {exc}" if place else str(exc))
        return None


def _at(place: str, name: str) -> str:
    return f"{place}.{name}" if place else name


def _fields(cls: Any) -> dict[str, dataclasses.Field[Any]]:
    """A section's fields by name (read once per section, not once per task)."""
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = {f.name: f for f in dataclasses.fields(cls)}
    return known


_FIELDS: dict[type, dict[str, dataclasses.Field[Any]]] = {}

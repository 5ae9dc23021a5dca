"""A configuration file's text as data: JSON for `.json`, YAML otherwise, with every key
given twice in one mapping noted (both formats keep the last, silently), and every way the
file cannot be read as a ConfigError."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config.locate import FileTooBig, read_text


class ConfigError(Exception):
    """A configuration file that cannot be used; `problems` lists every reason."""

    def __init__(self, path: Path | str, problems: list[str], kind: str = "config") -> None:
        self.path = Path(path)
        self.problems = problems
        self.kind = kind  # "permission" when the file could not be read for that
        listing = "\n".join(f"  {p}" for p in problems)
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{path}: {count}:\n{listing}")


def _not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a file that is not UTF-8 stops being it, as an editor counts."""
    data, at = exc.object, exc.start
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "it is UTF-16 text: save it as UTF-8"
    line = data.count(b"\n", 0, at) + 1
    column = at - (data.rfind(b"\n", 0, at) + 1) + 1
    where = f"byte 0x{data[at]:02x} at line {line}, column {column}"
    return f"it is not UTF-8 text ({where}): save it as UTF-8"


def read_raw(path: Path) -> tuple[Any, list[str]]:
    """The file's data (JSON for `.json`, YAML otherwise), and the keys YAML found given twice
    in one mapping, as problems. Raises ConfigError."""
    try:
        text = read_text(path)
    except FileTooBig as exc:
        raise ConfigError(path, [str(exc)]) from None
    except FileNotFoundError:
        raise ConfigError(path, ["the file does not exist"]) from None
    except PermissionError as exc:
        raise ConfigError(
            path, [f"cannot read it: {exc.strerror} (ask its owner for read access)"], "permission"
        ) from None
    except IsADirectoryError:
        raise ConfigError(path, ["it is a folder, not a file"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [_not_utf8(exc)]) from None
    if path.suffix.lower() == ".json":
        twice: list[str] = []
        try:
            return json.loads(text, object_pairs_hook=_pairs(twice)), twice
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}: "
            raise ConfigError(path, [where + exc.msg + _json_slip(text, exc.pos)]) from None
        except RecursionError:
            raise ConfigError(path, ["nested too deeply to be a configuration"]) from None
    import yaml  # not for JSON: its import costs a daemon on 10,000 tasks half a megabyte

    loader = _loader(yaml)(text)
    try:
        return loader.get_single_data(), loader.twice
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        slip = _yaml_slip(text, str(exc.problem), mark.index) if mark and exc.problem else ""
        raise ConfigError(path, [f"{where}{exc.problem or exc}{slip}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from None
    except RecursionError:  # the pure-Python loader, where libyaml is missing
        raise ConfigError(path, ["nested too deeply to be a configuration"]) from None
    finally:
        loader.dispose()


def _json_slip(text: str, at: int) -> str:
    """What the everyday slips of hand-written JSON are, where json names only the symptom:
    a comma before `]` or `}`, a comment, single quotes."""
    if text[at : at + 2] in ("//", "/*") or text[at : at + 1] == "#":
        return " (JSON has no comments; YAML has, in a .yaml file)"
    if text[at : at + 1] in ("]", "}") and text[:at].rstrip().endswith(","):
        return " (a comma before it: JSON takes none after the last item)"
    if text[at : at + 1] == "'":
        return " (JSON quotes with \", not ')"
    return ""


def _yaml_slip(text: str, problem: str, at: int) -> str:
    """What the everyday slips of hand-written YAML are, where the parser names only the
    symptom: a tab, a value with `: ` in it, a key indented unlike its neighbours, a bracket
    left open."""
    if text[at : at + 1] == "\t" and "tab" not in problem:
        return " (a tab: YAML indents with spaces only)"
    lines = text.split("\n")
    row, column = text.count("\n", 0, at), at - text.rfind("\n", 0, at) - 1
    if problem.startswith("mapping values are not allowed") and ": " in lines[row][:column]:
        return " (a value with ': ' in it needs quotes around it, like name: \"Backup: daily\")"
    if problem.startswith(("mapping values are not allowed", "did not find expected key")):
        above = [r for r in range(row) if lines[r].strip() and lines[r].lstrip()[0] != "#"]
        if above and _indent(lines[row]) != _indent(lines[above[-1]]):
            return (
                f" (line {row + 1} is indented {_indent(lines[row])} spaces, line {above[-1] + 1} "
                f"{_indent(lines[above[-1]])}: the keys of one item line up)"
            )
    closing = problem.removeprefix("did not find expected ',' or ")
    if closing in ("']'", "'}'"):
        opener = "[" if closing == "']'" else "{"
        found = _open_bracket(text[:at], opener)
        if found is not None:
            return f" (the {opener} on line {found} is not closed)"
    return ""


def _indent(line: str) -> int:
    """Where a line's key begins: its spaces, and each `- ` of a list item."""
    stripped = line.lstrip(" ")
    depth = len(line) - len(stripped)
    while stripped.startswith("- "):
        depth, stripped = depth + 2, stripped[2:]
    return depth


def _open_bracket(text: str, opener: str) -> int | None:
    """The line of the last `opener` left open in `text` (quotes and comments passed over)."""
    closer = {"[": "]", "{": "}"}[opener]
    open_at: list[int] = []
    for number, line in enumerate(text.split("\n"), 1):
        quote = ""
        for i, ch in enumerate(line):
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
                break
            elif ch == opener:
                open_at.append(number)
            elif ch == closer and open_at:
                open_at.pop()
    return open_at[-1] if open_at else None


def _pairs(twice: list[str]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """json's object hook that notes a key given twice in one object (JSON keeps the last),
    naming the object by its id where it has one."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(items)
        if len(made) < len(items):
            seen: set[str] = set()
            named = made.get("id", made.get("task_id"))
            where = f" (in the one with id {named!r})" if isinstance(named, str) else ""
            for key, _ in items:
                if key in seen:
                    twice.append(f"{key!r} is given twice in one object{where}; say it once")
                seen.add(key)
        return made

    return pairs


def _loader(yaml: Any) -> Any:
    """libyaml's safe loader (the pure-Python one where it is missing) that notes a key given
    twice in one mapping: YAML keeps the last, and a `timeout:` added below a forgotten one
    would count, or not, with nothing said.

    A plain scalar is the text written, but for null and YAML 1.2's booleans (`true`,
    `false`): YAML 1.1 also makes booleans of yes, no, on and off, numbers of `5`, `010`
    (octal 8) and `1:30` (90), and dates of `2026-12-24`, so `id: off`, `command: [sleep, 5]`
    and `env: {PORT: 8080}` were not text where text is asked for, and what was written could
    not be given back. The settings that are numbers or booleans read them from the text
    (`config.fields`)."""

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def __init__(self, text: str) -> None:
            super().__init__(text)
            self.twice: list[str] = []

        def construct_yaml_bool(self, node: Any) -> bool | str:
            value: str = self.construct_scalar(node)
            return value.lower() == "true" if value.lower() in ("true", "false") else value

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = super().construct_mapping(node, deep)
            if len(mapping) < len(node.value):  # a key given twice, or a merge overridden
                start, end = node.start_mark.index, node.end_mark.index
                first: dict[object, tuple[int, int]] = {}
                for key, _ in node.value:  # its own keys: a merged one stands elsewhere
                    if start <= key.start_mark.index < end and isinstance(key.value, str):
                        at = (key.start_mark.line + 1, key.start_mark.column + 1)
                        if key.value in first:
                            line, column = first[key.value]
                            before = f"line {line}" if line != at[0] else f"column {column}"
                            self.twice.append(
                                f"line {at[0]}, column {at[1]}: {key.value!r} is given twice "
                                f"(first at {before}); say it once"
                            )
                        first.setdefault(key.value, at)
            return mapping

    Loader.add_constructor("tag:yaml.org,2002:bool", Loader.construct_yaml_bool)
    for tag in ("int", "float", "timestamp"):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", Loader.construct_scalar)
    return Loader

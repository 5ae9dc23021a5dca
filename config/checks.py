"""What a valid configuration may still get wrong at run time: warnings for `validate`.

A file with Windows line endings, a `command` that is not executable, a script with no `#!`
line that bash will run although it is Python: each loads fine and fails at the first run
with an error that does not point at the cause. These read the task files, so they are run by
`validate` and `doctor`, not on every load (a daemon with 10,000 tasks starts without them).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler_core.model import TaskSpec
from scheduler_core.shebang import BOM, head_of, no_shebang

if TYPE_CHECKING:
    from config.loader import AppConfig

READ_MAX = 1 << 20  # enough of any script to tell its line endings and its language

# A few lines that say "this is not bash", each with the #! line that would run it.
_LANGUAGES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "Python",
        re.compile(r"^(import \w|from [\w.]+ import |def \w+\(|print\(|if __name__ ==)", re.M),
        "#!/usr/bin/env python3",
    ),
    (
        "JavaScript",
        re.compile(r"^(const \w+ = require\(|console\.log\(|import .* from ['\"])", re.M),
        "#!/usr/bin/env node",
    ),
    ("Perl", re.compile(r"^(use strict;|use warnings;|my [$@%]\w+)", re.M), "#!/usr/bin/env perl"),
    ("Ruby", re.compile(r"^(require ['\"]\w+['\"]|puts )", re.M), "#!/usr/bin/env ruby"),
)
_BY_SUFFIX = {
    ".py": "Python",
    ".js": "JavaScript",
    ".mjs": "JavaScript",
    ".pl": "Perl",
    ".rb": "Ruby",
}


def task_warnings(
    specs: tuple[TaskSpec, ...],
    tasks_dir: Path,
    path: str | None,
    only: Collection[str] | None = None,
) -> list[str]:
    """One line per problem, each with the task's place (`tasks[2].script: ...`) and a fix.

    `path` is the PATH the tasks will see, for a `command` named without a folder; `only`,
    the ids of the tasks to look at (a reload's new and changed ones), else all."""
    warnings: list[str] = []
    if specs and only != set() and not tasks_dir.is_dir():  # every run starts there
        warnings.append(f"tasks_dir: {tasks_dir} is not a folder, so no task can start; make it")
    for i, spec in enumerate(specs):
        if only is not None and spec.id not in only:
            continue
        if spec.script is not None:
            warnings += [f"tasks[{i}].script: {w}" for w in _script(Path(spec.script))]
        elif spec.argv:
            found = _command(spec.argv[0], tasks_dir, path)
            warnings += [f"tasks[{i}].command: {w}" for w in found]
    return warnings


def _head(file: Path) -> bytes | None:
    return head_of(file, READ_MAX)


def _crlf(file: Path, text: bytes) -> list[str]:
    if b"\r\n" not in text:
        return []
    return [
        f"{file} has Windows (CRLF) line endings, which its interpreter will trip over; "
        f"convert it: sed -i 's/\\r$//' {file}"
    ]


def _script(file: Path) -> list[str]:
    text = _head(file)
    if text is None:
        return [f"{file} cannot be read by this user"]
    found = _crlf(file, text)
    if text.startswith(BOM):
        text = text.removeprefix(BOM)
        found.append(
            f'{file} begins with a byte-order mark (saved as "UTF-8 with BOM"): moltsched '
            f"passes over it, but bash, sh and the system trip over it; save it as plain UTF-8: "
            f"sed -i '1s/^\\xEF\\xBB\\xBF//' {file}"
        )
    if text.startswith(b"#!"):
        interpreter = text[2:].split(b"\n", 1)[0].strip().split(None, 1)
        if interpreter and not os.path.exists(os.fsdecode(interpreter[0].rstrip(b"\r"))):
            found.append(f"its #! line names {os.fsdecode(interpreter[0])}, which does not exist")
        return found
    language = _BY_SUFFIX.get(file.suffix.lower())
    decoded = text.decode("utf-8", "replace")
    shebang = ""
    for name, pattern, line in _LANGUAGES:
        if name == language or (language is None and pattern.search(decoded)):
            language, shebang = name, line
            break
    if language is not None:
        found.append(
            f"{file} has no #! line, so it runs with bash, but it looks like {language}; "
            f"make its first line {shebang}"
        )
    return found


def file_warnings(config: AppConfig, path: str | None) -> list[str]:
    """Every warning of `validate` for a loaded file: its tasks', then its fallback's."""
    found = task_warnings(config.tasks, config.settings.tasks_dir, path)
    return found + fallback_warnings(config.alerts.fallback_command, path)


def fallback_warnings(argv: Sequence[str], path: str | None) -> list[str]:
    """The alert fallback runs when Signal has failed: one that cannot start would be found
    out then, with the alert it was for. `path` is the PATH the daemon runs it with."""
    if not argv:
        return []
    program = argv[0]
    if os.sep in program and not program.startswith("~") and not os.path.isabs(program):
        found = [f"{program!r} is found from the folder the daemon starts in; write the whole path"]
    else:  # an absolute path stays as it is, whatever `tasks_dir` says
        found = _command(program, Path(os.sep), path)
    return [f"alerts.fallback_command: {w}" for w in found]


def _command(program: str, tasks_dir: Path, path: str | None) -> list[str]:
    if program.startswith("~"):
        return [
            f"{program!r}: ~ is not your home folder here (no shell reads the command); write "
            "the whole path"
        ]
    if os.sep not in program:
        if shutil.which(program, path=path) is not None:
            return []
        if (tasks_dir / program).is_file():  # a bare name is looked up on PATH alone
            return [f"{program!r} is not found on PATH (tasks_dir's is ./{program})"]
        return [f"{program!r} is not found on PATH ({path or os.defpath})"]
    file = tasks_dir / program  # runs start in tasks_dir; an absolute path stays as it is
    if not file.exists():
        return [f"no such file {str(file)!r}"]
    if not os.access(file, os.X_OK) or file.is_dir():
        return [f"{file} is not executable; make it so: chmod +x {file}"]
    text = _head(file)
    if text is None:  # a named pipe, a device: looked at without waiting on it
        return [f"{file} is not a regular file, so no run can start it"]
    if text.startswith(b"\x7fELF"):  # a program the system runs itself
        return []
    if text.startswith(b"#!"):
        return _crlf(file, text)
    return [f"{file} {no_shebang(text, str(file))}"]

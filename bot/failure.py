"""How the CLI fails: one line on stderr, an exit code, and under `--json` a JSON object
with `error` and `kind` on stdout (DESIGN.md section 4). Standard library only: the path
where the daemon answers must start fast.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.loader import AppConfig

EXIT_USAGE = 2
EXIT_STATE = 3  # the scheduler's state cannot be reached
EXIT_READER_GONE = 141  # whoever read the output went away: as if killed by SIGPIPE
EXIT_CANCELLED = 130  # Ctrl-C: 128 + SIGINT, as a shell expects


class Failure(Exception):
    """A command that cannot be carried out: one line on stderr, exit `code`, and under
    `--json` `{"error", "kind", ...extra}` on stdout (see `fail`)."""

    def __init__(
        self, message: str, kind: str, code: int = EXIT_USAGE, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.extra = extra or {}


def fail(
    message: str, kind: str, code: int, as_json: bool, extra: dict[str, Any] | None = None
) -> int:
    """Report a failure in one line on stderr, and as JSON on stdout under `--json`."""
    if as_json:
        print(json.dumps({"error": message, "kind": kind, **(extra or {})}))
    print(f"moltsched: {message}", file=sys.stderr)
    return code


def outputs_open(answers: bool = True) -> bool:
    """False if the process was started with its standard output closed and `answers` (it
    has an answer to print; said on stderr): then nothing is done whose answer could not be
    given. A closed stream that is not needed gets /dev/null, for the life of the process.
    Characters the output's encoding cannot write are escaped (`escaped`)."""
    if sys.stderr is None:  # errors have nowhere to go
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    if sys.stdout is None and answers:
        print("moltsched: standard output is closed (>/dev/null discards it)", file=sys.stderr)
        return False
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=_ESCAPED)
    return True


def escaped(error: UnicodeError) -> tuple[str, int]:
    """What a task printed or a name holds, where the output's encoding cannot write it (an
    ASCII or Latin-1 locale): `\\u2713`, a character beyond U+FFFF as its two UTF-16 halves.
    That is a JSON escape, and answers under `--json` hold such text only inside strings, so
    they stay valid JSON; a traceback half-way through an answer was the alternative."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    out = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out), error.end


_ESCAPED = "moltsched-escaped"
codecs.register_error(_ESCAPED, escaped)


def reader_gone() -> int:
    """Whoever read the output went away (`| head` had enough): stop quietly, as a command
    killed by SIGPIPE does, with nothing more said (also not at exit, by Python's flush)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_READER_GONE


def load(config_path: Path) -> AppConfig:
    from config.loader import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        code = EXIT_STATE if exc.kind == "permission" else EXIT_USAGE
        raise Failure(str(exc), exc.kind, code, {"problems": exc.problems}) from None

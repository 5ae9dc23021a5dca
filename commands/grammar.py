"""The chat grammar: text in, a Command (or a ParseError with the usage) out. Pure.

`status`, `status:TASK`, `run:TASK` (also `run:TASK now`, `run:TASK in 20m`, `run:TASK at 18:00`),
`cancel:TASK`, `stop:TASK`, `pause:TASK`, `resume:TASK`, `logs`, `logs:TASK`, `output:TASK`,
`help`.
The verb is case-insensitive, spaces around the `:` and the text are ignored, a leading `/` is
allowed, `run TASK` (a space for the colon) is read the same way, and so are the full-width
forms a CJK keyboard types (`run\uff1aTASK`). One table (`VERBS`)
drives parsing, the chat help and the command line's help, so they cannot drift apart.

Nothing here runs anything: the argument only ever becomes a task id that `execute` looks up
among the configured tasks, so `run:x; rm -rf ~` is just an unknown task.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from enum import Enum

from commands.command import (
    Cancel,
    Command,
    Help,
    Logs,
    Output,
    Pause,
    Resume,
    Run,
    RunLater,
    Status,
    Stop,
)
from scheduler_core.record import Record

MAX_TEXT = 200  # longer than any command; a longer message is not one


class Arg(Enum):
    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


class Verb(Record):
    """One row of the command table."""

    name: str
    arg: Arg
    make: Callable[[str | None], Command]
    help: str

    @property
    def usage(self) -> str:
        if self.arg is Arg.NONE:
            return self.name
        if self.arg is Arg.OPTIONAL:
            return f"{self.name}[:TASK]"
        return f"{self.name}:TASK"


def _run(arg: str | None) -> Command:
    """`run:TASK` (or `run:TASK now`), or `run:TASK in 20m` / `at 18:00` / `tomorrow at 9`
    later.
    Anything else after the task stays part of the argument, which no task id matches (ids
    have no spaces)."""
    text = arg or ""
    task, _, when = text.partition(" ")
    first = when.split(None, 1)[:1]
    if first and first[0].lower() in ("in", "at", "today", "tomorrow"):
        return RunLater(task, when.strip())
    if when.strip().lower() == "now":
        return Run(task)
    return Run(text)


VERBS: tuple[Verb, ...] = (
    Verb("status", Arg.OPTIONAL, lambda t: Status(t), "every task's state, or one task's"),
    Verb("run", Arg.REQUIRED, _run, "run it now and report the result; or: in 20m, at 18:00"),
    Verb("cancel", Arg.REQUIRED, lambda t: Cancel(t or ""), "remove its pending runs and retries"),
    Verb("stop", Arg.REQUIRED, lambda t: Stop(t or ""), "end its run now; the schedule stays"),
    Verb("pause", Arg.REQUIRED, lambda t: Pause(t or ""), "no scheduled runs until resume"),
    Verb("resume", Arg.REQUIRED, lambda t: Resume(t or ""), "schedule a paused task again"),
    Verb("logs", Arg.OPTIONAL, lambda t: Logs(t), "the newest log entries"),
    Verb("output", Arg.REQUIRED, lambda t: Output(t or ""), "what a task's newest run printed"),
    Verb("help", Arg.NONE, lambda _: Help(), "this help"),
)
_BY_NAME = {v.name: v for v in VERBS}


class ParseError(ValueError):
    """Text that is not a command; the message is a short answer fit for a chat."""


def help_text() -> str:
    """The chat help, one line per command."""
    width = max(len(v.usage) for v in VERBS)
    lines = [f"{v.usage.ljust(width)}  {v.help}" for v in VERBS]
    return "Commands:\n" + "\n".join(lines)


def shown(text: str, limit: int = 40) -> str:
    """Someone's text, safe to echo: control and direction characters escaped, length cut."""
    out = []
    for ch in text[:limit]:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(text) > limit else "")


_SPLIT = re.compile(r"\s*:\s*|\s+")


# Where a message mentions someone ("@Moltbot status" in a group), Signal puts U+FFFC in the
# text; a mention before or after the command is no part of it. (str.strip with the
# characters named, not a regex: one pass, whatever the message.)
_AROUND = (
    "\ufffc\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
    "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


# A CJK keyboard's full-width forms of ASCII ("run\uff1abackup"), as the characters they stand
# for. Only these: look-alikes from elsewhere (a Kelvin sign for K) stay what they are.
_FULL_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}


def parse(text: str) -> Command:
    """The command `text` asks for; ParseError (with the help) if it asks for none."""
    body = text.strip(_AROUND).translate(_FULL_WIDTH)
    body = body.rstrip(".!?…").rstrip(_AROUND)  # "Status." from a phone
    if len(body) > MAX_TEXT:
        raise ParseError(f"That is too long to be a command.\n{help_text()}")
    if len(body.splitlines()) > 1:
        raise ParseError("One command a message, please: send each line on its own.")
    if body.startswith("/"):
        body = body[1:].lstrip()
    if not body:
        raise ParseError(help_text())
    parts = _SPLIT.split(body, maxsplit=1)
    word = parts[0].lower()
    arg = parts[1].strip() if len(parts) > 1 else ""
    verb = _BY_NAME.get(word)
    if verb is None:
        import difflib  # only for a mistyped verb: not in every command's start-up

        near = difflib.get_close_matches(word, _BY_NAME, n=1, cutoff=0.75)  # "stats", "log"
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ParseError(f"I don't know '{shown(parts[0])}'{hint}.\n{help_text()}")
    if verb.arg is Arg.NONE and arg:
        raise ParseError(f"{verb.name} takes nothing after it.\n{help_text()}")
    if verb.arg is Arg.REQUIRED and not arg:
        raise ParseError(f"Which task? Send {verb.usage}")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in arg):
        raise ParseError(f"'{shown(arg)}' is not a task id.")
    return verb.make(arg or None)

"""The command line's words as argparse should see them.

argparse takes one word for an option's value, and a word that starts with "-" for an
option. A time is written as people say it, in several words (`--at 2026-12-24 18:00`,
`--in 20 minutes`, `--at 6 pm`: what the chat's `run:TASK at …` takes too), and a
negative one (`--in -5m`) is an answer's business, not argparse's ("expected one
argument"): such words are joined into the option's value, and `commands.when` says what
is wrong with a time. The text after `chat` is one message, whatever its words look like.
"""

from __future__ import annotations

import functools
import itertools
import re

_UNIT = r"(?:s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)"
_OPTIONS = ("--in", "--at")


@functools.cache
def _goes_on_with(option: str) -> re.Pattern[str]:
    """A word that goes on with a time after `--in` (`minutes`, `30min`) or after `--at`
    (`18:00`, `pm`); compiled only for a command that has one (most do not)."""
    if option == "--in":
        return re.compile(rf"(?:\d+(?:\.\d+)?)?{_UNIT}", re.IGNORECASE)
    return re.compile(
        r"\d{1,2}[:.h]\d{2}|\d{1,2}h|(?:\d{1,2})?\s*[ap]\.?m\.?|today|tomorrow|at|noon|midnight",
        re.IGNORECASE,
    )


def command_at(argv: list[str]) -> int | None:
    """Where the word naming the subcommand is, if it comes before any option but --config
    and --json; else None."""
    at = 0
    while at < len(argv):
        word = argv[at]
        if word == "--config":
            at += 2
        elif word == "--json" or word.startswith("--config="):
            at += 1
        else:
            return None if word.startswith("-") else at
    return None


def command_word(argv: list[str]) -> str | None:
    """The word naming the subcommand (see `command_at`): then only its part of the parser
    is built."""
    at = command_at(argv)
    return None if at is None else argv[at]


def joined_values(argv: list[str]) -> list[str]:
    """`argv` with each time given to `--in`/`--at` in one word (`--at=2026-12-24 18:00`),
    and the words after `chat` in one text (options after `chat` stay options, wherever
    they stand)."""
    at = command_at(argv)
    if at is not None and argv[at] == "chat":
        options, text = [], []
        words = iter(argv[at + 1 :])
        for word in words:
            if word in ("--json", "-h", "--help") or word.startswith("--config="):
                options.append(word)
            elif word == "--config":
                options += [word, *itertools.islice(words, 1)]
            else:
                text.append(word)
        return [*argv[: at + 1], *options, "--", " ".join(text)] if text else argv
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word not in _OPTIONS or i == len(argv) or _option(argv[i]):
            out.append(word)
            continue
        value = [argv[i]]
        i += 1
        while i < len(argv) and _goes_on(word, argv, i):
            value.append(argv[i])
            i += 1
        out.append(f"{word}={' '.join(value)}")
    return out


def _option(word: str) -> bool:
    """Whether argparse would take `word` for an option (`-5m` is a time)."""
    return word[:1] == "-" and not word[1:2].isdigit()


def _goes_on(option: str, argv: list[str], i: int) -> bool:
    """Whether argv[i] goes on with the time given to `option` (a number alone does after
    `--in` when a unit follows it: `1 hour 30 min`, and after a day for `--at`: `tomorrow 9`)."""
    if _goes_on_with(option).fullmatch(argv[i]):
        return True
    if option == "--at" and argv[i - 1].lower() in ("today", "tomorrow", "at"):
        return argv[i].isascii() and argv[i].isdigit() and len(argv[i]) <= 4  # `tomorrow 9`
    return (
        option == "--in"
        and argv[i].replace(".", "", 1).isdigit()
        and i + 1 < len(argv)
        and _goes_on_with("--in").fullmatch(argv[i + 1]) is not None
    )

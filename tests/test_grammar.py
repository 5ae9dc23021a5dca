"""The chat grammar as a table of inputs and the Commands they mean, and hostile input."""

from __future__ import annotations

import os
import subprocess

import pytest

from commands import grammar
from commands.command import (
    Cancel,
    Chat,
    Command,
    Help,
    Logs,
    Output,
    Pause,
    Reload,
    Resume,
    Run,
    RunAll,
    RunLater,
    Status,
    Stop,
)
from commands.grammar import VERBS, ParseError, help_text, parse, shown
from tests.helpers import MOLTSCHED


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("status", Status()),
        ("STATUS", Status()),
        ("  /status  ", Status()),
        ("/ Status", Status()),
        ("status:scraper", Status("scraper")),
        ("status : scraper", Status("scraper")),
        ("Status:  scraper ", Status("scraper")),
        ("status scraper", Status("scraper")),
        ("run:scrape-all", Run("scrape-all")),
        ("RUN:scrape-all", Run("scrape-all")),
        ("/run :scrape_all", Run("scrape_all")),
        ("run check-email", Run("check-email")),
        ("run:check-email in 20m", RunLater("check-email", "in 20m")),
        ("Run : check-email  AT 18:00 ", RunLater("check-email", "AT 18:00")),
        ("run check-email at 2026-12-01T18:00", RunLater("check-email", "at 2026-12-01T18:00")),
        ("run:check-email in forever", RunLater("check-email", "in forever")),  # execute says
        ("run:check-email tomorrow at 9", RunLater("check-email", "tomorrow at 9")),
        ("run check-email Today at 21:00", RunLater("check-email", "Today at 21:00")),
        ("run:check-email now", Run("check-email")),  # as typed on a phone
        ("Run check-email NOW", Run("check-email")),
        ("cancel:check-email", Cancel("check-email")),
        ("STOP : scraper", Stop("scraper")),
        ("pause:check-email", Pause("check-email")),
        ("Pause : check-email", Pause("check-email")),
        ("resume:check-email", Resume("check-email")),
        ("logs", Logs()),
        ("logs:scraper", Logs("scraper")),
        ("help", Help()),
        ("/HELP", Help()),
        # The argument is taken as it is; only a configured id can match it (execute's job).
        ("run:Scraper", Run("Scraper")),
        ("run:x; rm -rf ~", Run("x; rm -rf ~")),
        ("run:../../bin/sh", Run("../../bin/sh")),
        ("run:$(id)", Run("$(id)")),
        ("run:`reboot`", Run("`reboot`")),
        ("run: a:b", Run("a:b")),
        # "@Moltbot status" in a group: Signal puts U+FFFC where each mention stands.
        ("\ufffc status", Status()),
        ("\ufffc\u00a0/run:backup", Run("backup")),
        ("\ufffc \ufffc run backup", Run("backup")),
        ("run:backup \ufffc", Run("backup")),
        # A phone's keyboard or dictation ends a sentence ("Status."); no id has a full stop.
        ("Status.", Status()),
        ("run:backup!", Run("backup")),
        ("run backup in 20m.", RunLater("backup", "in 20m")),
        # A CJK keyboard's full-width letters, digits and punctuation (U+FF1A for the colon).
        ("run\uff1abackup", Run("backup")),
        ("\uff53\uff54\uff41\uff54\uff55\uff53\uff0e", Status()),
        ("run backup in \uff12\uff10m", RunLater("backup", "in 20m")),
        ("\uff0frun\u3000backup", Run("backup")),
    ],
)
def test_grammar(text: str, command: object) -> None:
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("", "Commands:"),
        ("   ", "Commands:"),
        ("/", "Commands:"),
        ("dance", "I don't know 'dance'."),
        ("stats", "I don't know 'stats' (did you mean status?)."),
        ("log:backup", "I don't know 'log' (did you mean logs?)."),
        ("Paus:backup", "I don't know 'Paus' (did you mean pause?)."),
        ("run", "Which task? Send run:TASK"),
        ("run:", "Which task? Send run:TASK"),
        ("pause", "Which task? Send pause:TASK"),
        ("resume :  ", "Which task? Send resume:TASK"),
        ("help:me", "help takes nothing after it."),
        ("x" * 10_000, "That is too long to be a command."),
        ("run:" + "a" * 300, "That is too long to be a command."),
        ("run:a\x00b", "'a\\u0000b' is not a task id"),  # escaped once, not twice
        ("run:scraper\u202egnp.exe", "is not a task id"),
        ("run:\x1b[31mred", "is not a task id"),
        ("🙂", "I don't know '🙂'."),
        ("\u202erun:x", "I don't know"),
        # Two commands, a line each: before, a garbled "… is not a task id."
        ("pause:a\npause:b", "One command a message, please"),
        ("status\r\nlogs", "One command a message, please"),
        ("run:x\u2028run:y", "One command a message, please"),
    ],
)
def test_what_is_not_a_command_gets_a_short_answer(text: str, answer: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    message = str(info.value)
    assert answer in message
    assert len(message) < 600
    assert "\x00" not in message and "\x1b" not in message and "\u202e" not in message


def test_shown_escapes_and_cuts() -> None:
    assert shown("a\u202eb\x00") == "a\\u202eb\\u0000"
    assert shown("x" * 100) == "x" * 40 + "…"


def test_one_table_drives_chat_help_and_cli_help() -> None:
    chat = help_text()
    for verb in VERBS:
        assert verb.usage in chat and verb.help in chat
    cli_help = subprocess.run([MOLTSCHED, "--help"], capture_output=True, text=True).stdout
    for verb in VERBS:
        if verb.name != "help":
            assert verb.name in cli_help and verb.help in cli_help
    chat_help = subprocess.run([MOLTSCHED, "chat", "--help"], capture_output=True, text=True)
    assert chat in chat_help.stdout


def test_help_is_as_wide_as_the_terminal_says() -> None:
    """The help fits $COLUMNS as argparse fits it (the CLI measures the terminal itself), and
    80 columns where nothing says (not a terminal)."""

    def widest(columns: str | None) -> int:
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        if columns is not None:
            env["COLUMNS"] = columns
        out = subprocess.run([MOLTSCHED, "--help"], capture_output=True, text=True, env=env)
        return max(len(line) for line in out.stdout.splitlines())

    assert widest("300") > 150  # the --config line whole
    assert widest("60") <= 58
    assert 60 < widest(None) <= 78
    assert widest("junk") == widest(None)


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["--json", "status", "tick"],
        ["--config", "status", "status", "--json"],
        ["--config=x.yaml", "run", "tick", "--in", "20m"],
        ["logs", "tick", "-n", "5", "--config", "y.yaml"],
        ["output", "tick", "7"],
        ["checkpoint", "save", "tick", "-"],
        ["chat", "run:tick", "in", "5m"],
        ["import-seed", "seed"],
        ["daemon"],
    ],
)
def test_a_parser_of_one_command_reads_what_the_whole_parser_reads(argv: list[str]) -> None:
    from bot.cli import build_parser
    from bot.words import command_word

    word = command_word(argv)
    assert word is not None and list(build_parser(word)._subparsers._group_actions[0].choices) == [
        word
    ]
    assert build_parser(word).parse_args(argv) == build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["status"], Status()),
        (["--json", "status", "tick"], Status("tick")),
        (["run", "tick"], Run("tick")),
        (["run", "tick", "--in", "20m"], RunLater("tick", "in 20m")),
        (["run", "tick", "--at", "18:00"], RunLater("tick", "at 18:00")),
        (["run", "tick", "--in", "-5m"], RunLater("tick", "in -5m")),  # refused when asked
        # As the chat takes them: a date and a time, a 12-hour time, a duration in words.
        (["run", "tick", "--at", "2026-12-24", "18:00"], RunLater("tick", "at 2026-12-24 18:00")),
        (["run", "tick", "--at", "6:30", "pm", "--json"], RunLater("tick", "at 6:30 pm")),
        (["run", "tick", "--in", "1", "hour", "30", "min"], RunLater("tick", "in 1 hour 30 min")),
        (["run", "--in", "20", "minutes", "tick"], RunLater("tick", "in 20 minutes")),
        (["run", "--in", "20m", "30"], RunLater("30", "in 20m")),  # a task may be called 30
        (["run", "--at", "18:00", "tick"], RunLater("tick", "at 18:00")),
        (["run", "tick", "--at", "tomorrow", "9"], RunLater("tick", "at tomorrow 9")),
        (
            ["run", "--at", "tomorrow", "at", "18h30", "tick"],
            RunLater("tick", "at tomorrow at 18h30"),
        ),
        (["run", "--at", "noon", "tomorrow", "tick"], RunLater("tick", "at noon tomorrow")),
        (["run", "--at", "9", "30"], RunLater("30", "at 9")),  # a task may be called 30
        (["cancel", "tick"], Cancel("tick")),
        (["stop", "tick"], Stop("tick")),
        (["run-all"], RunAll()),
        (["pause", "tick"], Pause("tick")),
        (["resume", "tick"], Resume("tick")),
        (["logs"], Logs()),
        (["logs", "tick", "-n", "5"], Logs("tick", 5)),
        (["output", "tick"], Output("tick")),
        (["output", "tick", "7"], Output("tick", 7)),
        (["chat", "run:tick", "in", "5m"], Chat("run:tick in 5m")),
        (["chat", "run:tick", "in", "-5m"], Chat("run:tick in -5m")),  # its answer says why
        (["chat", "--json", "run:tick", "at", "-1:00", "--json"], Chat("run:tick at -1:00")),
        (["reload"], Reload()),
    ],
)
def test_the_command_line_asks_for_the_command_its_words_name(
    argv: list[str], command: Command
) -> None:
    from bot.cli import _command, build_parser
    from bot.words import joined_values

    assert _command(build_parser().parse_args(joined_values(argv))) == command


def test_an_unknown_command_is_refused_with_every_command_named() -> None:
    result = subprocess.run([MOLTSCHED, "--json", "stauts"], capture_output=True, text=True)
    assert result.returncode == 2
    for name in ("daemon", "status", "run-all", "import-seed"):
        assert repr(name) in result.stderr and repr(name) in result.stdout


def test_what_is_stripped_around_a_command_is_every_space_and_the_mention_mark() -> None:
    spaces = {c for c in map(chr, range(0x3001)) if c.isspace()}
    assert set(grammar._AROUND) == spaces | {"\ufffc"}


def test_moltsched_alone_shows_what_it_can_do() -> None:
    """Before: only "the following arguments are required: COMMAND"."""
    result = subprocess.run([MOLTSCHED], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    for name, what in (("status", "every task's state"), ("run-all", "run every task")):
        assert any(
            line.split()[:1] == [name] and what in line for line in result.stderr.splitlines()
        ), result.stderr
    assert result.stderr.endswith("moltsched: give one of the commands above\n")


def test_moltsched_help_and_a_mistyped_command_are_answered_as_people_expect() -> None:
    """`moltsched help` (as git and most tools take it) was "invalid choice: 'help'", and
    `moltsched stauts` listed all sixteen commands without naming the one that was meant."""
    everything = subprocess.run([MOLTSCHED, "--help"], capture_output=True, text=True)
    helped = subprocess.run([MOLTSCHED, "help"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout == everything.stdout
    one = subprocess.run([MOLTSCHED, "help", "run"], capture_output=True, text=True)
    assert one.returncode == 0 and one.stdout.startswith("usage: moltsched run ")
    typo = subprocess.run([MOLTSCHED, "stauts"], capture_output=True, text=True)
    assert typo.returncode == 2
    assert typo.stderr.splitlines()[-1].startswith(
        "moltsched: error: unknown command 'stauts' (did you mean status?); choose from 'daemon', "
    )

"""`moltsched`: the command line (DESIGN.md section 4).

When a daemon is up, commands go to it over `STATE_DIR/control.sock`, so a task never runs
twice at once; otherwise they work on the database directly (`run` in the foreground, holding
the state lock). Exit codes: 0 ok, 1 the run failed or timed out, 2 usage, configuration or
unknown task, 3 the scheduler's state cannot be reached (damaged, locked or unwritable
database, no permission). `--json` prints machine-readable JSON on stdout; problems go to
stderr, and under `--json` also to stdout as `{"error": ..., "kind": ...}`.

The path where the daemon answers imports only the standard library: `moltsched status
--json` is what the agent polls.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bot import client, failure
from bot.direct import checkpoint, given_value, in_run, validate
from bot.failure import EXIT_STATE, EXIT_USAGE, Failure, fail, load
from bot.lean import import_asyncio
from bot.words import command_at, command_word, joined_values
from config.locate import ConfigNotFound, find_config_path, state_dir_hint, unreadable
from scheduler_core import __version__
from scheduler_core.errors import StoreError, user_name

# What only the commands need (commands.*) is imported where they are read, so that the
# daemon, which starts through here, does not carry it until it is asked something.
if TYPE_CHECKING:
    from commands.command import Command, Request


class _Formatter(argparse.HelpFormatter):
    """argparse's, measuring the terminal as shutil does without importing it: argparse
    builds a formatter for every argument added, and shutil brings zlib, bz2 and lzma (2 ms
    of every command, and of the daemon's start)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24) -> None:
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() else 0
        if width <= 0:
            try:
                width = os.get_terminal_size(1).columns or 80
            except OSError:
                width = 80
        super().__init__(prog, indent_increment, max_help_position, width - 2)


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error under `--json` is JSON on stdout too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = self._unknown_command(message)
        if "--json" in sys.argv[1:]:
            print(json.dumps({"error": f"{self.prog}: {message}", "kind": "usage"}))
        elif message.endswith("required: COMMAND"):  # `moltsched` alone: what it can do
            self.print_help(sys.stderr)
            self.exit(2, f"\n{self.prog}: give one of the commands above\n")
        super().error(message)

    def _unknown_command(self, message: str) -> str:
        """`moltsched stauts`: the nearest command first, then all sixteen as argparse has them."""
        commands = next((a.choices for a in self._actions if a.dest == "command"), None)
        word = re.match(r"argument COMMAND: invalid choice: '(.*?)' \(", message)
        if not commands or word is None:
            return message
        import difflib  # only for a mistyped command

        near = difflib.get_close_matches(word[1], list(commands), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        return f"unknown command {word[1]!r}{hint}; choose from {', '.join(map(repr, commands))}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with `command`, only that subcommand is added, if it is one.

    Each subcommand costs argparse a dozen gettext lookups (a stat of the locale directories
    each): built alone, the one asked for costs every command about 2 ms less than all sixteen.
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print machine-readable JSON on stdout",
    )
    common.add_argument(
        "--config", default=argparse.SUPPRESS, metavar="PATH", help="the configuration file"
    )
    parser = _Parser(
        prog="moltsched",
        description="A background-task scheduler controlled from Signal and this command line.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="configuration file (default: $MOLTSCHED_CONFIG, else the first of "
        "./config/moltsched.yaml, $XDG_CONFIG_HOME/moltsched/moltsched.yaml, "
        "/etc/moltsched/moltsched.yaml)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--version", action="version", version=f"moltsched {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(name: str, help: str | None = None, **more: Any) -> argparse.ArgumentParser | None:
        if command is not None and name != command:
            return None
        if help is None:  # a command chat has too: its help is the one command table's
            from commands.grammar import VERBS

            help = next(v.help for v in VERBS if v.name == name)
        return sub.add_parser(name, parents=[common], help=help, **more)

    add("daemon", "run the scheduler in the foreground")
    if p := add("status"):
        p.add_argument("task", nargs="?")
    if p := add("run"):
        p.add_argument("task")
        later = p.add_mutually_exclusive_group()
        later.add_argument(
            "--in", dest="run_in", metavar="DURATION", help="a one-shot run later: 20m, 2h, 1d"
        )
        later.add_argument(
            "--at",
            dest="run_at",
            metavar="TIME",
            help="a one-shot run at 18:00 (the next one), 6pm, tomorrow 9 or a date-time: "
            "2026-12-24 18:00",
        )
    for name in ("cancel", "stop"):
        if p := add(name):
            p.add_argument("task")
    add("run-all", "run every task that is due now")
    for name in ("pause", "resume"):
        if p := add(name):
            p.add_argument("task")
    if p := add("output"):
        p.add_argument("task")
        p.add_argument("run_id", nargs="?", type=int, metavar="RUN_ID", help="default: the newest")
    if p := add("logs"):
        p.add_argument("task", nargs="?")
        p.add_argument(
            "-n",
            type=int,
            default=20,
            dest="limit",
            metavar="N",
            help="how many entries (default 20)",
        )
    if command in (None, "chat"):
        from commands.grammar import help_text

        p = add(
            "chat",
            "answer TEXT exactly as the Signal bot answers an admin",
            description=help_text(),
            formatter_class=_RawFormatter,
        )
        assert p is not None
        p.add_argument("text", nargs="+")
    if p := add("checkpoint", "read, replace or clear a checkpoint"):
        p.add_argument("action", choices=["show", "save", "clear"])
        p.add_argument("task")
        p.add_argument("value", nargs="?", help="the JSON value to save ('-' reads standard input)")
    add("validate", "check the configuration; exit 2 if bad")
    add(
        "doctor",
        "check the installation and say how to fix what is wrong; exit 1 if anything fails",
    )
    add("reload", "make the running daemon re-read its configuration")
    if p := add(
        "import-seed", "import the seed skill's tasks, states, checkpoints and log from DIR"
    ):
        p.add_argument("dir", type=Path, metavar="DIR")
    if command is not None and command not in sub.choices:
        return build_parser()  # not a subcommand: the whole parser says so
    return parser


def main(argv: list[str] | None = None) -> int:
    # A command is a short process that reads a lot and keeps it: the cycle collector would
    # only look through what was read (10,000 tasks for `status`; 30 of the 250 ms `status`
    # with no daemon took). The daemon turns it back on once it has started (see `_daemon`).
    gc.disable()
    argv = sys.argv[1:] if argv is None else argv
    at = command_at(argv)
    if at is not None and argv[at] == "help":  # `moltsched help [COMMAND]`, as git takes it
        argv = [*argv[:at], *argv[at + 1 : at + 2], "--help"]
    word = command_word(argv)
    if not failure.outputs_open(answers=word != "daemon"):
        return EXIT_USAGE
    if word is None and "--version" in argv and "--json" in argv:
        print(json.dumps({"version": __version__}))  # the agent asks with --json too
        return 0
    args = build_parser(word).parse_args(joined_values(argv))
    try:
        return _main(args)
    except (client.ReaderGone, BrokenPipeError):  # `| head` had enough
        return failure.reader_gone()
    except KeyboardInterrupt:  # Ctrl-C: one line, and 128 + SIGINT as a shell expects
        return fail("interrupted", "cancelled", failure.EXIT_CANCELLED, args.json)
    except Failure as exc:
        return fail(str(exc), exc.kind, exc.code, args.json, exc.extra)
    except StoreError as exc:
        return fail(str(exc), exc.kind, EXIT_STATE, args.json)
    except OSError as exc:
        # The state directory, its lock or its socket, refused by the system.
        kind = "permission" if isinstance(exc, PermissionError) else "unavailable"
        where = f" {exc.filename}" if exc.filename else ""
        return fail(f"cannot use{where}: {exc.strerror or exc}", kind, EXIT_STATE, args.json)
    finally:
        gc.freeze()  # what was read needs no collecting at exit either


def _main(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        import_asyncio()
        from bot.doctor import doctor

        return doctor(args.config, args.json)
    try:
        config_path = find_config_path(args.config, existing=args.command != "import-seed")
    except ConfigNotFound as exc:
        raise Failure(str(exc), "config", extra={"looked": [str(p) for p in exc.places]}) from None
    if args.command == "daemon":
        return _daemon(config_path)
    if args.command == "validate":
        return validate(config_path, args.json)
    if args.command == "checkpoint":
        # Read once (stdin too), whoever answers; only a save has a value.
        args.value = given_value(args.value) if args.action == "save" else None
        if in_run(args.task):
            return checkpoint(config_path, args)
    if args.command == "import-seed":
        import_asyncio()
        from bot.import_seed import SeedError, import_seed

        try:
            return import_seed(config_path, args.dir, args.json)
        except SeedError as exc:
            raise Failure(str(exc), "usage") from None
    from commands.command import Reload, Request

    # The daemon takes who asks from the socket (bot.access); with no daemon, it is us.
    request = Request(_command(args), args.json, f"cli:{user_name(os.getuid())}")
    if isinstance(request.command, Reload):
        return _reload(config_path, request)
    hint = state_dir_hint(config_path)
    if hint is not None:
        answered = client.ask(hint, request)
        if answered is not None:
            return answered
    elif unreadable(config_path):  # its daemon may answer
        answered = client.ask_unreadable(config_path, request)
        if answered is not None:
            return answered
        closed = not os.access(config_path.parent, os.X_OK)  # its folder, or one above
        what = "is in a folder not yours to search" if closed else "is not yours to read"
        raise Failure(
            f"{config_path} {what}, and no daemon that runs it answers where it keeps its "
            "state by default: start the daemon (systemctl start moltsched); if its state_dir "
            "is elsewhere, its owner can let you read the file",
            "permission",
            EXIT_STATE,
        )
    import_asyncio()  # no daemon answered: this process does the work
    if args.command == "checkpoint":
        return checkpoint(config_path, args, request, hint)
    from bot.offline import answer

    return answer(config_path, request, hint)


def _command(args: argparse.Namespace) -> Command:
    """The command the arguments ask for, as the daemon reads it."""
    from commands.command import Chat, RunLater, command_from

    if args.command == "chat":
        return Chat(" ".join(args.text))
    if args.command == "run" and args.run_in is not None:
        return RunLater(args.task, f"in {args.run_in}")
    if args.command == "run" and args.run_at is not None:
        return RunLater(args.task, f"at {args.run_at}")
    return command_from(args.command, vars(args))


def _reload(config_path: Path, request: Request) -> int:
    """Ask the daemon to reload (as SIGHUP does) and wait for it: exit 0 once the new file is
    in use, 2 if it was rejected (the old one stays). With no daemon, check the file."""
    hint = state_dir_hint(config_path)
    answered = client.ask(hint, request) if hint is not None else None
    if answered is None:  # the daemon there refuses a new state_dir: that takes a restart
        answered = client.ask_where_it_ran(config_path, hint, request)  # before `load` keeps it
    if answered is not None:
        return answered
    config = load(config_path)
    state_dir = config.settings.state_dir
    answered = client.ask(state_dir, request)
    if answered is None:  # a daemon without its control socket is sent SIGHUP, which remakes it
        import_asyncio()
        from bot.offline import via_sighup

        answered = via_sighup(state_dir, lambda: client.ask(state_dir, request))
    if answered is not None:
        return answered
    from config.checks import file_warnings

    message = (
        f"No daemon is running on {state_dir}; it reads {config.path} when it starts (the "
        "file is valid)."
    )
    warnings = file_warnings(config, os.environ.get("PATH"))
    if request.json:
        body = {"reloaded": False, "daemon": False, "message": message, "warnings": warnings}
        print(json.dumps(body))
    else:
        print(message)
    for warning in warnings:  # as `validate` says them
        print(f"moltsched: warning: {warning}", file=sys.stderr)
    return 0


def _daemon(config_path: Path) -> int:
    from bot.signals import Signals

    signals = Signals.early()  # before the slow imports: see bot.signals
    import logging

    from bot.logs import setup_logging
    from bot.malloc import one_malloc_arena

    one_malloc_arena()

    setup_logging()
    try:
        config = load(config_path)
    except Failure as exc:
        logging.getLogger("moltsched").error("%s", exc)
        if exc.code == EXIT_USAGE:  # a file with problems, which a restart cannot mend
            from bot.start_refused import config_refused

            config_refused(config_path, list(exc.extra.get("problems", [str(exc)])), signals)
        return exc.code
    import_asyncio(tls=config.signal is not None)
    import asyncio

    from bot.daemon import serve

    # What was built to start (the modules, the tasks) lives as long as the daemon: frozen,
    # the cycle collector, on again for what the daemon does next, never looks through it.
    gc.freeze()
    gc.enable()
    try:
        return asyncio.run(serve(config, signals=signals))
    except (StoreError, OSError) as exc:  # its state cannot be used: exit 3, in main()
        from bot.start_refused import state_refused

        state_refused(config, exc, signals)
        raise


if __name__ == "__main__":
    sys.exit(main())

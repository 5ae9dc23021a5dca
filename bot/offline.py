"""Answers with no daemon: reads from the database directly, and what may start or stop
runs in the foreground, holding the state lock, so that it never overlaps a daemon or
another foreground run. And a daemon that holds the lock but does not answer on its socket:
one still starting is waited for, one whose socket was removed is made to make it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bot import client
from bot.failure import EXIT_STATE, Failure, load
from bot.lock import STARTING, STOPPING, StateLock, is_stopping
from bot.signals import Stops
from commands.command import Request
from commands.reply import LateFailure
from config.loader import AppConfig

START_PATIENCE_S = 120.0  # how long a daemon still starting is waited for


def answer(config_path: Path, request: Request, hint: Path | None) -> int:
    """Answer `request` with no daemon at `hint` (the state directory the file seems to
    name), or with the daemon found where the file really points; returns the exit code."""
    if hint is not None and not hint.exists():  # a state directory the file names anew
        answered = client.ask_where_it_ran(config_path, hint, request)
        if answered is not None:
            return answered
    config = load(config_path)
    if config.settings.state_dir != hint:
        # The quick look at the file was wrong or could not tell: ask the real place.
        answered = client.ask(config.settings.state_dir, request)
        if answered is not None:
            return answered
    return asyncio.run(_answer(config, request))


async def _answer(config: AppConfig, request: Request) -> int:
    """Answer with no daemon and print the answer; returns the exit code.

    Reads work on the database directly. What may start or stop runs happens in the
    foreground holding the state lock, so it never overlaps a daemon or another foreground run.
    """
    from bot.respond import only_reads, respond, runs_tasks
    from scheduler_core.store import Store

    settings = config.settings
    _engine_log()
    needs_the_daemon(settings.state_dir)
    if runs_tasks(request.command):
        from bot.access import runs_as_owner

        runs_as_owner(settings.state_dir)
    reads = only_reads(request.command)
    store = await Store.open(settings.db_path, settings.retention, reads_only=reads)
    try:
        if reads:  # the tasks alone: no scheduler to load or build
            from scheduler_core.clock import SystemClock
            from scheduler_core.reads import Reads

            holder = _holder(settings.state_dir)
            unowned = StateLock(settings.state_dir).unheld()  # before the store is read
            tasks = Reads(store, config.tasks, SystemClock(), unowned=unowned)
            answer = await respond(request, tasks, config.zone, daemon=False, holder=holder)
            return await _print(*answer)
        from bot.engine import build_engine
        from scheduler_core import procs

        scheduler = build_engine(config, store).scheduler
        if not runs_tasks(request.command):
            fg = _foreground(settings.state_dir)
            answer = await respond(request, scheduler, config.zone, daemon=False, foreground=fg)
            return await _print(*answer)
        lock = StateLock(settings.state_dir)
        if not lock.try_acquire():
            answered = client.ask(settings.state_dir, request)
            if answered is None:  # a daemon that is starting has no socket yet
                answered = once_started(lock, lambda: client.ask(settings.state_dir, request))
            if answered is not None:
                return answered
            stuck = lock.never_free()
            if stuck is not None:
                raise Failure(*stuck, EXIT_STATE)
            pid = _foreground(settings.state_dir)
            who = f" (pid {pid})" if pid is not None else ""
            print(
                f"moltsched: waiting for the foreground `moltsched run`{who} to finish "
                "(with the daemon up, runs do not wait for each other); Ctrl-C gives up",
                file=sys.stderr,
            )
            await lock.acquire()
        try:
            await scheduler.prepare()
            procs.only_runs()  # a foreground run: this process starts nothing else
            loop = asyncio.get_running_loop()

            asked = Stops()

            def stop() -> None:  # a second one: no grace (Ctrl-C twice), unless an echo
                again = scheduler.closing
                if not again:
                    asked.first()
                elif asked.echo():
                    return
                scheduler.close(now=again)
                if not again:
                    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                        print("moltsched: stopping the run (again: at once)", file=sys.stderr)

            # SIGHUP: the terminal closed. The run has a session of its own, so nothing else
            # would stop it, and a process killed by it could not record it. Unless it is
            # ignored already: `nohup moltsched run TASK` is meant to outlive the terminal.
            stops = [signal.SIGINT, signal.SIGTERM]
            if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
                stops.append(signal.SIGHUP)
            for sig in stops:
                loop.add_signal_handler(sig, stop)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(scheduler.run(schedule=False))
                    try:
                        return await _print(
                            *await respond(request, scheduler, config.zone, daemon=False)
                        )
                    finally:
                        scheduler.close()
            except ExceptionGroup as group:  # as main() knows it: a reader gone, a Failure...
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
        finally:
            lock.release()
    finally:
        await store.close()


def _engine_log() -> None:
    """What the engine logs, in a command answered here: its errors on stderr, as the
    command's own problems are. Its warnings and notes, which a daemon writes to its journal,
    are in the answer or the action log (a failed run's line would say the answer again)."""
    import logging

    handler = logging.StreamHandler()  # stderr
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("moltsched: %(message)s"))
    logging.getLogger().addHandler(handler)


def _holder(state_dir: Path) -> tuple[int, str] | None:
    """A daemon that holds the state without answering: its pid and what it is doing."""
    from bot.lock import STARTING, STOPPING, StateLock

    found = StateLock(state_dir).daemon()
    if found is None:
        return None
    pid, phase = found
    return pid, phase if phase in (STARTING, STOPPING) else "not answering"


def _foreground(state_dir: Path) -> int | None:
    """The pid of a foreground `moltsched run` that holds the state now, if one does."""
    lock = StateLock(state_dir)
    found = lock.holder()
    return found[0] if found is not None and found[1] == "run" and lock.file_held() else None


async def _print(meta: dict[str, Any], body: AsyncIterator[str]) -> int:
    # Printed while the store is open: a streamed answer reads from it as it goes. One that
    # fails before its first piece raises StoreError (main() says it); see commands.streams.
    try:
        async for chunk in body:
            try:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            except OSError as exc:  # `| head` had enough (EPIPE), the terminal hung up (EIO)
                raise client.ReaderGone() from exc
    except LateFailure as exc:
        with contextlib.suppress(OSError):
            sys.stdout.write("\n")
            sys.stderr.write(f"moltsched: {exc}\n")
        return EXIT_STATE
    with contextlib.suppress(OSError):  # nowhere left to say it
        sys.stderr.write(str(meta.get("err", "")))
    return int(meta.get("exit", 1))


def needs_the_daemon(state_dir: Path) -> None:
    """With no daemon, a command works on the state directly, which is its owner's alone
    (0700, or 0710 for `control.group`: its members reach the socket, nothing more). Failure
    (exit 3, kind `not-running`) for anyone who may not write it: what they lack is the
    daemon, not a permission (the agent would ask the owner for access it has). A daemon
    that holds the state without answering yet (starting, stopping) is `unavailable`."""
    try:
        owner = state_dir.stat().st_uid
    except OSError:
        return  # not made yet, or not ours to look at: the store says what is wrong
    if owner == os.geteuid() or os.access(state_dir, os.W_OK):
        return
    found = _holder(state_dir)  # found by its lock, in /proc/locks: the lock file is not ours
    if found is not None:
        pid, doing = found
        if doing == "not answering":
            doing = "does not answer on its control socket: it is starting or stopping"
        else:
            doing = f"is {doing}"
        raise Failure(
            f"the daemon (pid {pid}) {doing}; ask again in a minute (after a crash, a start "
            "first stops what the runs cut short left, giving each its grace)",
            "unavailable",
            EXIT_STATE,
        )
    from scheduler_core.errors import user_name

    name = user_name(owner)
    raise Failure(
        f"no daemon is running on {state_dir}, and without it only {name} may use its state: "
        f"start the daemon (systemctl start moltsched), or run this as {name}",
        "not-running",
        EXIT_STATE,
    )


def via_sighup(state_dir: Path, ask: Callable[[], int | None]) -> int | None:
    """When the daemon that holds the state runs without its control socket (the file was
    removed): SIGHUP it, which makes the socket again, and `ask` it once it answers; one
    still starting is waited for instead (`once_started`). None if no daemon holds the
    state; Failure (exit 3) if it is stopping, or does not answer within 10 s."""
    lock = StateLock(state_dir)
    found = lock.daemon()
    if found is None:
        return None
    pid, phase = found
    if phase == STOPPING:
        raise Failure(is_stopping(pid), "unavailable", EXIT_STATE)
    if phase == STARTING:
        return once_started(lock, ask)
    os.kill(pid, signal.SIGHUP)
    for _ in range(200):
        answered = ask()
        if answered is not None:
            return answered
        time.sleep(0.05)
    raise Failure(
        f"the daemon (pid {pid}) did not make its control socket again", "unavailable", EXIT_STATE
    )


def once_started(lock: StateLock, ask: Callable[[], int | None]) -> int | None:
    """While the daemon that holds `lock` is starting (after a crash it first stops what the
    runs cut short left, each given its grace: seconds, or more), wait for it, and `ask` it
    once it answers. None if no daemon is starting there, or it ended meanwhile; Failure
    (exit 3) if it is still starting after START_PATIENCE_S."""
    found = lock.daemon()
    if found is None or found[1] != STARTING:
        return None
    print(f"moltsched: waiting for the daemon (pid {found[0]}) to finish starting", file=sys.stderr)
    deadline = time.monotonic() + START_PATIENCE_S
    while time.monotonic() < deadline:
        answered = ask()
        if answered is not None:
            return answered
        now = lock.daemon()
        if now is None or now[0] != found[0] or now[1] == STOPPING:
            return None  # it ended, or stops: the caller goes on as with no daemon
        time.sleep(0.1)
    raise Failure(
        f"the daemon (pid {found[0]}) is still starting after {START_PATIENCE_S:.0f}s; its log "
        "says what it waits for",
        "unavailable",
        EXIT_STATE,
    )

"""The answers written a batch at a time, so that none sits in memory whole: `status --json`
and `logs` on the command line (`Reply.chunks`).

Nothing is said before the first batch is read: a database that cannot be read then is an
answer of its own (exit 3, `{"error", "kind"}`; see `bot.control`). One that fails after it
ends what was begun in its form and raises `LateFailure`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

from commands.context import Context
from commands.render import log_json, log_line, task_json_text
from commands.reply import LateFailure, encode_json
from scheduler_core import __version__
from scheduler_core.errors import StoreError
from scheduler_core.model import LogEntry, TaskState
from scheduler_core.safe import safe_text


async def status_chunks(ctx: Context) -> AsyncIterator[str]:
    """`status --json` (DESIGN.md section 4 shape). A failure after its first piece ends the
    document with `"error"` and `"kind"` beside `"tasks"`, which holds what was read."""
    specs = ctx.tasks.by_id
    waiting = await ctx.tasks.store.alerts_waiting()
    listing = ctx.tasks.listing.iter_states()
    async with contextlib.aclosing(listing):
        batch: list[TaskState] = await anext(listing, [])
        running = "true" if ctx.daemon else "false"
        trouble = ctx.tasks.store.health.error
        yield (
            f'{{"running": {running}, "daemon": "{ctx.daemon_state}", "version": '
            f'"{__version__}", "signal_connected": {encode_json(ctx.signal_connected)}, '
            f'"alerts_waiting": {waiting}, '
            f'"database_error": {encode_json(trouble and str(trouble))}, '
            f'"task_count": {len(specs)}, "tasks": ['
        )
        sep = ""
        seen: set[str] = set()
        times: dict[datetime, str] = {}
        again = ctx.daemon  # only a daemon is asked again (see task_json_text)
        try:
            while batch:
                parts = []
                for state in batch:
                    spec = specs.get(state.id)
                    if spec is not None:
                        seen.add(state.id)
                        parts.append(task_json_text(spec, state, ctx.zone, times, remember=again))
                if parts:
                    yield sep + ", ".join(parts)
                    sep = ", "
                batch = await anext(listing, [])
            # Tasks no daemon has taken in since they were added: no row yet, or only the one
            # a checkpoint saved before the daemon's first start.
            unseen = [s for s in specs.values() if s.id not in seen]
            if unseen:
                ids = [s.id for s in unseen]
                found = {st.id: st for st in await ctx.tasks.listing.states_of(ids)}
                blank = ctx.tasks.listing.blank
                missing = [
                    task_json_text(s, found.get(s.id) or blank(s), ctx.zone, times, remember=again)
                    for s in unseen
                ]
                yield sep + ", ".join(missing)
        except StoreError as exc:
            yield f'], "error": {encode_json(str(exc))}, "kind": {encode_json(exc.kind)}}}'
            raise LateFailure(str(exc)) from exc
    yield "]}"


async def log_chunks(
    first: list[LogEntry],
    rest: AsyncGenerator[list[LogEntry], None],
    zone: ZoneInfo,
    now: datetime,
    *,
    as_json: bool,
) -> AsyncIterator[str]:
    """`logs`: the JSON list, or the lines for a terminal (made safe, as `reply.render`
    makes text), `first` read already. A failure after it closes the list (a list holds no
    `error`: the exit code and stderr say it)."""
    wrote = False
    async with contextlib.aclosing(rest):
        batch = first
        while batch:
            if as_json:
                text = ", ".join(encode_json(log_json(e, zone)) for e in batch)
                yield (", " if wrote else "[") + text
            else:
                text = "\n".join(safe_text(log_line(e, zone, now)) for e in batch)
                yield ("\n" if wrote else "") + text
            wrote = True
            try:
                batch = await anext(rest, [])
            except StoreError as exc:
                yield "]" if as_json else "\n"
                raise LateFailure(str(exc)) from exc
    if as_json:
        yield "]" if wrote else "[]"
    elif not wrote:
        yield "No log entries yet."

"""What the bot answers an admin's message: the grammar, then execute, in chat form.

`run:x` is answered twice: at once (started, queued, or already running) and again with the
result. Everything else is answered once. Unknown text gets the short help. This is what
`moltsched chat TEXT` prints and what the Signal front end sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from commands.context import Context
from commands.execute import execute
from commands.grammar import ParseError, parse
from commands.reply import Reply


async def converse(text: str, ctx: Context) -> AsyncIterator[Reply]:
    """The replies to one message, each as soon as it is known."""
    try:
        cmd = parse(text)
    except ParseError as exc:
        yield Reply(str(exc))
        return
    acks: asyncio.Queue[Reply] = asyncio.Queue()
    chat = ctx._replace(chat=True, json=False, notify=acks.put)
    outcome = asyncio.ensure_future(execute(cmd, chat))
    # If the one asking goes away meanwhile, a run already started goes on and is recorded.
    while not outcome.done():
        ack = asyncio.ensure_future(acks.get())
        await asyncio.wait({ack, outcome}, return_when=asyncio.FIRST_COMPLETED)
        if ack.done():
            yield ack.result()
        else:
            ack.cancel()
    while not acks.empty():
        yield acks.get_nowait()
    yield outcome.result()

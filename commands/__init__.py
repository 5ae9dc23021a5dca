"""The command language shared by chat and CLI: Command -> execute -> Reply."""

from commands.command import Command, Logs, Run, RunAll, Status, from_wire
from commands.execute import Context, execute
from commands.reply import Reply

__all__ = [
    "Command",
    "Context",
    "Logs",
    "Reply",
    "Run",
    "RunAll",
    "Status",
    "execute",
    "from_wire",
]

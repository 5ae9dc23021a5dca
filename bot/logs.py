"""The daemon's log lines: for a terminal, or for the journal.

Under systemd (`JOURNAL_STREAM` names our stderr) each line starts with its syslog priority,
`<3>` for errors down to `<7>` for debug, which journald reads and strips, so `journalctl -p
warning` works; the journal stamps the time itself, so the line carries none. Elsewhere a
line is `time LEVEL logger: message`.

signalbot adds a console handler of its own to its logger (so every line of it would appear
twice) and announces its in-memory storage, which means nothing for a bot that keeps no
state in it: `quiet_signalbot` undoes both once SignalBot is built.
"""

from __future__ import annotations

import logging
import os
import sys

# syslog priorities (sd-daemon.h): err 3, warning 4, notice 5, info 6, debug 7.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


class JournalFormatter(logging.Formatter):
    """`<N>logger: message`; a traceback's lines carry the same priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 7 if record.levelno < logging.INFO else 3)
        prefix = f"<{priority}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def under_journal() -> bool:
    """Whether our stderr is the journal's stream (systemd.exec(5), `$JOURNAL_STREAM`)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def setup_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("MOLTSCHED_LOG_LEVEL") or "INFO").upper())


class _NotStorage(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "storage" not in record.getMessage()


def quiet_signalbot() -> None:
    """signalbot's lines once, through our handler, without its storage notices."""
    logger = logging.getLogger("signalbot")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _NotStorage) for f in logger.filters):
        logger.addFilter(_NotStorage())

"""The daemon's log lines: for a terminal, or for the journal.

Under systemd (`JOURNAL_STREAM` names our stderr) each line starts with its syslog priority,
`<3>` for errors down to `<7>` for debug, which journald reads and strips, so `journalctl -p
warning` works; the journal stamps the time itself, so the line carries none. Elsewhere a
line is `time LEVEL logger: message`.

The daemon never waits for whoever reads its log (`Unblocked`): a line goes out at once while
the stream has room, and to a thread of its own when it has none. Under `moltsched daemon
2>&1 | less` scrolled back, a terminal paused with Ctrl-S or a stalled journal, the runs go
on; the newest lines wait in memory, and what did not fit is counted and said when the
reader is back.

signalbot adds a console handler of its own to its logger (so every line of it would appear
twice) and announces its in-memory storage, which means nothing for a bot that keeps no
state in it: `quiet_signalbot` undoes both once SignalBot is built.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import TextIO

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


LINES_KEPT = 10_000  # waiting for a reader that does not read; past it the oldest go
FLUSH_S = 5.0  # how long `flush` (and so the exit) waits for a reader that does not read


class Unblocked(logging.Handler):
    """Writes each line at once while `stream` has room for it, as a plain handler would (so
    what the daemon logs is written before it goes on); when the stream has none (its reader
    does not read), hands lines to a writer thread instead, which waits for the reader. At
    most `kept` lines wait; older ones are left out, and a line says how many before the next
    one written. Room is asked of the kernel (poll) for lines up to PIPE_BUF, which a pipe or
    socket with room takes whole. The thread starts when a line first has to wait."""

    def __init__(self, stream: TextIO, kept: int = LINES_KEPT) -> None:
        super().__init__()
        self.stream = stream
        self._lines: collections.deque[str] = collections.deque(maxlen=kept)
        self._left_out = 0
        self._writing = False  # a line is being written, here or by the writer
        self._flushing = 0  # callers of `flush` waiting
        self._closing = False
        self._changed = threading.Condition()
        self._room = _room_check(stream)
        # Started when a line first has to wait: an idle daemon whose log is read has none.
        self._writer: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._changed:
            size = len(text) + 1 if text.isascii() else 4 * len(text) + 1  # at most, in bytes
            direct = not self._lines and not self._writing and self._room(size)
            if direct:
                self._writing = True
            else:
                if len(self._lines) == self._lines.maxlen:
                    self._left_out += 1
                self._lines.append(text)
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write, name="log-writer", daemon=True
                    )
                    self._writer.start()
                self._changed.notify_all()
                return
        try:
            self._out(text)
        finally:
            with self._changed:
                self._writing = False
                if self._lines or self._flushing:  # someone waits for this write to end
                    self._changed.notify_all()

    def flush(self) -> None:
        """Wait until every line so far is written, or FLUSH_S has passed."""
        with self._changed:
            self._flushing += 1
            try:
                self._changed.wait_for(lambda: not self._lines and not self._writing, FLUSH_S)
            finally:
                self._flushing -= 1

    def close(self) -> None:
        """Let the writer end once the lines are written (logging.shutdown, at exit, has
        flushed first); a writer still stuck on the stream ends with the process."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        super().close()

    def _write(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: (self._lines or self._closing) and not self._writing)
                if not self._lines:
                    return
                text = self._lines.popleft()
                left_out, self._left_out = self._left_out, 0
                self._writing = True
            try:
                if left_out:
                    self._out(self._note(left_out))
                self._out(text)
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _note(self, left_out: int) -> str:
        note = logging.LogRecord(
            "bot.logs",
            logging.WARNING,
            __file__,
            0,
            "%d log line(s) left out: nothing read the log for a while",
            (left_out,),
            None,
        )
        return self.format(note)

    def _out(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the reader is gone, or the stream closed
            pass


def _room_check(stream: TextIO) -> Callable[[int], bool]:
    """Whether `stream` takes n more bytes now without waiting."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's capture): it takes all
        return lambda n: True
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return lambda n: n <= select.PIPE_BUF and bool(poll.poll(0))


def setup_logging(level: str | None = None) -> None:
    handler = Unblocked(sys.stderr)
    if under_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()
        old.close()
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

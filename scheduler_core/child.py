"""A run's leader on the event loop: its pipes read by reader callbacks, its exit by a pidfd.

Not asyncio's subprocess support: that gives each child a transport, a protocol, a stream
reader and a pipe transport per pipe, a task to connect them and, before Python 3.12, a
thread to wait for it; in a burst of short runs, leaving it out took a quarter off the loop's
time per run.
A run needs less. Its two pipes are read into bounded tails as data comes; a pidfd says when
the leader itself has exited (a helper it left can hold the pipes open for ever) and is
where its exit status is collected, at once, so no other reaper ever sees it as a zombie.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from scheduler_core import procs

TAIL_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024
_POLL_S = 0.02


class Tail:
    """The last `limit` bytes written to it."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._limit = limit
        self._buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if len(data) >= self._limit:
            self._buf[:] = data[-self._limit :]
            return
        self._buf += data
        excess = len(self._buf) - self._limit
        if excess > 0:
            del self._buf[:excess]

    def text(self) -> str:
        data = bytes(self._buf)
        if self.total > len(data):
            # Cut mid-line: drop the partial first line so the tail starts cleanly.
            nl = data.find(b"\n")
            if 0 <= nl < 512:
                data = data[nl + 1 :]
        return data.decode("utf-8", errors="replace")


class Child:
    """`argv` started in a session of its own (its group id is its pid), stdin on /dev/null,
    stdout and stderr read into `stdout` and `stderr`. Registered with `procs` as a run's
    leader from the moment its pid exists. `exited` resolves once it is gone and its status
    is in `returncode`; `drained` once both pipes are closed (at the far end, or by `close`).

    OSError if it cannot be started (no such program, the environment too big...), ValueError
    if an argument or variable cannot be passed at all (a NUL byte, a name with `=`)."""

    def __init__(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | Mapping[bytes, bytes]
    ) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self.stdout, self.stderr = Tail(), Tail()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        out = os.pipe()
        try:
            err = os.pipe()
        except OSError:  # out of descriptors, say: the first pipe must not stay open
            os.close(out[0])
            os.close(out[1])
            raise
        try:
            with procs.Spawning() as spawning:
                self._popen = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=_devnull(),
                    stdout=out[1],
                    stderr=err[1],
                    start_new_session=True,
                )
                spawning.registered(self._popen.pid)
        except BaseException:
            os.close(out[0])
            os.close(err[0])
            raise
        finally:
            os.close(out[1])  # the child has its copies; EOF comes when its side closes
            os.close(err[1])
        self.pid = self._popen.pid
        self._open: set[int] = set()
        for fd, tail in ((out[0], self.stdout), (err[0], self.stderr)):
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._read, fd, tail)
            self._open.add(fd)
        self._watch_exit()

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: the signal that killed it), once `exited`."""
        return self._popen.returncode

    def close(self) -> None:
        """Stop reading: close our ends of the pipes, whoever still holds theirs."""
        for fd in list(self._open):
            self._closed(fd)

    def _read(self, fd: int, tail: Tail) -> None:
        try:
            data = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            tail.write(data)
        else:
            self._closed(fd)

    def _closed(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        self._open.discard(fd)
        if not self._open and not self.drained.done():
            self.drained.set_result(None)

    def _watch_exit(self) -> None:
        try:
            fd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):  # no pidfds (not Linux, or before 5.3)
            self._poll = asyncio.ensure_future(self._poll_exit())
            return
        self._loop.add_reader(fd, self._on_exit, fd)

    def _on_exit(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        self._popen.wait()  # it has exited: this returns at once, with its status
        if not self.exited.done():
            self.exited.set_result(None)

    async def _poll_exit(self) -> None:
        # Only where there is no pidfd: nothing else to wait on without a thread.
        while self._popen.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(_POLL_S)
        self.exited.set_result(None)


_null: int | None = None


def _devnull() -> int:
    """One /dev/null for every child's stdin, opened once (not per spawn)."""
    global _null
    if _null is None:
        _null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _null

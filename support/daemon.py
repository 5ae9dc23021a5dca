"""The real `moltsched daemon` as a child process, for tests, benchmarks and the demo.

It is ready when it says so: the helper gives it a notify socket of its own
(`NOTIFY_SOCKET`, as systemd would) and waits for `READY=1` there, rather than for a line in
its log. Its stderr goes to `daemon.log` beside the configuration, appended to across
restarts.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

MOLTSCHED = str(Path(sys.executable).parent / "moltsched")
READY_S = 60.0

_names = itertools.count()


class DaemonNotReady(RuntimeError):
    """The daemon exited, or said nothing, before it was ready."""


class DaemonProcess:
    """`moltsched --config CONFIG daemon` (or `argv`, another program that speaks sd_notify),
    started by `start()`; `spawned` and `ready` are when it was started and said READY=1."""

    def __init__(
        self, config: Path, env: Mapping[str, str] | None = None, argv: list[str] | None = None
    ) -> None:
        self.config = config
        self.argv = argv or [MOLTSCHED, "--config", str(config), "daemon"]
        self.env = dict(env or {})
        self.spawned = self.ready = 0.0  # time.monotonic()
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify_path = config.parent / f"notify-{os.getpid()}-{next(_names)}.sock"

    @property
    def db(self) -> Path:
        return self.config.parent / "state" / "moltsched.db"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = READY_S) -> DaemonProcess:
        """Start it and return once it has said READY=1."""
        self.notify_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(self.notify_path))
            with open(self.log, "ab") as log:
                self.spawned = time.monotonic()
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=os.environ | self.env | {"NOTIFY_SOCKET": str(self.notify_path)},
                )
            try:
                self._wait_ready(notify, timeout)
            finally:
                self.notify_path.unlink(missing_ok=True)
        return self

    def _wait_ready(self, notify: socket.socket, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        notify.settimeout(0.2)
        while True:
            try:
                if notify.recv(4096).startswith(b"READY=1"):
                    self.ready = time.monotonic()
                    return
            except TimeoutError:
                pass
            if self.proc.poll() is not None:
                raise DaemonNotReady(
                    f"the daemon exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            if time.monotonic() > deadline:
                raise DaemonNotReady(f"the daemon was not ready in {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal it and wait for it to exit; its exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Make sure it is gone (a test's cleanup)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def proc_status(pid: int, key: str) -> int:
    """A number from /proc/PID/status (VmRSS, VmHWM, Threads...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)

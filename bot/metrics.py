"""Prometheus metrics on a loopback port: the `metrics:` section, off unless configured.

Runs by task and outcome, run durations, runs under way and waiting for a slot, alerts
waiting, Signal connected. Counters are fed by the after-run hook; the gauges are read when
Prometheus scrapes, so the daemon does no periodic work for them. Served by a small asyncio
endpoint in the daemon's loop (no thread); the text is prometheus_client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bot.control import REQUEST_S, WRITE_S, Connections
from scheduler_core.model import RunResult, TaskSpec, TaskState
from scheduler_core.scheduler import Scheduler

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
MAX_SCRAPES = 16  # connections open at once; Prometheus makes one at a time
RETRY_FIRST_S = 1.0  # a port that was taken is tried again after this, doubling
RETRY_MAX_S = 300.0


class Metrics:
    """The daemon's metrics and their endpoint."""

    def __init__(self, scheduler: Scheduler, signal_connected: Callable[[], bool | None]) -> None:
        self.scheduler = scheduler
        self.signal_connected = signal_connected
        self.registry = r = CollectorRegistry()
        self.runs = Counter(
            "moltsched_runs",
            "Finished runs, by task and outcome",
            ["task", "outcome"],
            registry=r,
        )
        self.durations = Histogram(
            "moltsched_run_duration_seconds",
            "How long runs took, by task",
            ["task"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.running = Gauge("moltsched_runs_running", "Runs under way", registry=r)
        self.queued = Gauge("moltsched_queue_length", "Runs waiting for a slot", registry=r)
        self.alerts = Gauge("moltsched_alerts_waiting", "Alerts not delivered yet", registry=r)
        self.signal = Gauge(
            "moltsched_signal_connected",
            "1 if connected to signal-cli-rest-api, 0 if not or not configured",
            registry=r,
        )
        self._server: asyncio.AbstractServer | None = None
        self._binding: asyncio.Task[None] | None = None  # trying for a port that was taken
        self._connections = Connections(MAX_SCRAPES)

    async def on_finish(self, spec: TaskSpec, result: RunResult, state: TaskState) -> None:
        self.runs.labels(spec.id, str(result.outcome)).inc()
        self.durations.labels(spec.id).observe(result.duration_s)

    async def render(self) -> bytes:
        """The metrics in Prometheus' text format, gauges read now."""
        running, queued = self.scheduler.counts()
        self.running.set(running)
        self.queued.set(queued)
        self.alerts.set(await self.scheduler.store.alerts_waiting())
        self.signal.set(1 if self.signal_connected() else 0)
        return generate_latest(self.registry)

    async def start(self, host: str, port: int) -> None:
        """Serve on host:port; if it cannot be had now (another program has the port), say
        so once and keep trying in the background: metrics are never a reason to leave the
        tasks unscheduled."""
        try:
            await self._bind(host, port)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s:%d: %s; trying again until it can (the tasks run)",
                host,
                port,
                exc,
            )
            self._binding = asyncio.create_task(self._bind_later(host, port))

    async def _bind(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        log.info("metrics on http://%s:%d/metrics", host, port)

    async def _bind_later(self, host: str, port: int) -> None:
        delay = RETRY_FIRST_S
        while True:
            await asyncio.sleep(delay)
            with contextlib.suppress(OSError):
                return await self._bind(host, port)
            delay = min(RETRY_MAX_S, delay * 2)

    async def close(self) -> None:
        if self._binding is not None:
            self._binding.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._connections.close(WRITE_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connections.serve(writer, lambda: self._answer(reader, writer), "metrics")

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await self._request_line(reader, writer)
        if request is None:
            return
        parts = request.decode("latin-1").split()
        if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
            body, status, kind = await self.render(), "200 OK", CONTENT_TYPE_LATEST
        else:
            body, status, kind = b"not found\n", "404 Not Found", "text/plain"
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)

    async def _request_line(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The request's first line, once its whole head has come; None if a line of it is
        longer than the reader takes. Any local process can connect here: as on the control
        socket (bot.control), none can hold the daemon. The head must come within REQUEST_S,
        and past MAX_SCRAPES connections the oldest still sending its head is closed."""
        with self._connections.waiting(writer):
            async with asyncio.timeout(REQUEST_S):
                try:
                    request = await reader.readline()
                    while (await reader.readline()).strip():
                        pass  # the headers: nothing in them matters here
                except ValueError:  # asyncio's word for a line over the limit
                    return None
        return request

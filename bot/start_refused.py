"""Telling the owner that the daemon cannot start, when no one would see it otherwise.

- A configuration with problems: the daemon refuses it, and systemd does not start it again
  (exit 2), so from then on nothing runs. A file broken by an edit that was never reloaded
  (or whose reload was rejected and forgotten) shows only at the next start, often a reboot
  days later, when no one watches the journal. The alert recipients of the configuration it
  last ran with (`config.cache` keeps it) are told, once for each broken version of the file;
  not when the file never loaded (a first setup: no one to tell yet).
- A state it cannot use (a damaged database, a state directory it may not write): the
  daemon exits 3, which systemd restarts every 5 s, each time the same. The alert recipients
  are told at the first such start, and again once a day while it lasts.

Over Signal, waiting a while for a service that starts with the machine too, or else
through the fallback command (`MOLTSCHED_ALERT_KIND` `config` or `state`). Not at all when
whoever starts the daemon watches a terminal, where the problem shows, or when it is told to
stop (systemctl stop): a stop while it tells ends the telling at once, with what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal as signals_
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bot.fallback import command_delivers
from bot.signals import STOPPING, Signals
from config import cache
from config.loader import AppConfig, SignalConfig
from scheduler_core.safe import safe_text

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
PATIENCE_S = 60.0  # for a Signal service that is still starting, as at boot
REMIND_S = 86_400.0  # a start that keeps failing the same way is told of again after this
SHOWN = 5  # problems named in the message


def config_refused(config_path: Path, problems: list[str], signals: Signals) -> None:
    """Tell whom the last good configuration alerts that this one cannot be started on."""
    kept = cache.last(config_path)
    try:
        identity = cache.identity(config_path)
    except OSError:
        return
    if not isinstance(kept, AppConfig):
        return
    shown = [f"- {p[:200]}" for p in problems[:SHOWN]]
    if len(problems) > SHOWN:
        shown.append(f"- and {len(problems) - SHOWN} more")
    text = (
        f"⚠️ moltsched cannot start: {config_path} has {len(problems)} problem(s), so no task "
        "runs until it is fixed:\n" + "\n".join(shown) + "\n`moltsched validate` lists them; "
        "then start it again (systemctl restart moltsched)."
    )
    _tell(kept, text, "config", ("config", str(config_path.resolve()), identity), None, signals)


def state_refused(config: AppConfig, error: Exception, signals: Signals) -> None:
    """Tell whom `config` alerts that the daemon cannot use its state: once, and again a day
    later while it lasts."""
    text = (
        f"⚠️ moltsched cannot start: {str(error)[:600]}. No task runs until it can (systemd "
        "tries again every 5 s); `moltsched doctor` says how to fix it."
    )
    key = ("state", str(config.path), str(error))
    _tell(config, text, "state", key, REMIND_S, signals)


def _tell(
    config: AppConfig, text: str, kind: str, key: object, again: float | None, signals: Signals
) -> None:
    """Deliver `text` to whom `config` alerts, unless it was for `key` already (less than
    `again` seconds ago; None: ever), or the daemon was told to stop."""
    if sys.stderr.isatty() or signals.stop_signal is not None:
        return  # whoever started it is reading the problem now, or stopping it
    if not (config.signal and config.signal.alert_to) and not config.alerts.fallback_command:
        return  # no one to tell
    marker = _marker(key)
    if marker is None:
        return
    with contextlib.suppress(OSError):  # no marker: not told yet
        age = time.time() - marker.stat().st_mtime
        if again is None or age < again:
            return
    told = asyncio.run(_deliver_unless_stopped(config, safe_text(text), kind, signals))
    if told is None:
        log.warning("stopped before anyone was told that the daemon cannot start")
    elif told:
        try:
            marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # said again at the next try: better than not at all
    else:
        log.error("could not tell anyone that the daemon cannot start")


async def _deliver_unless_stopped(
    config: AppConfig, text: str, kind: str, signals: Signals
) -> bool | None:
    """`_deliver`; None if a stop came first (the fallback command is then stopped)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOPPING:
        loop.add_signal_handler(sig, stop.set)
    if signals.stop_signal is not None:  # it came just before the loop took the signals over
        stop.set()
    delivery = asyncio.create_task(_deliver(config, text, kind))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({delivery, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if delivery.done():
            return delivery.result()
        delivery.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivery
        return None
    finally:
        stopped.cancel()
        for sig in STOPPING:  # the process is stopping anyway: see bot.signals
            loop.remove_signal_handler(sig)
            signals_.signal(sig, signals_.SIG_IGN)


async def _deliver(config: AppConfig, text: str, kind: str) -> bool:
    signal = config.signal
    delivered = False
    if signal is not None and signal.alert_to:
        delivered = await _unwaited_thread(lambda: _signal_delivers(signal, text))
    if delivered:
        return True
    argv = config.alerts.fallback_command
    return bool(argv) and await command_delivers(argv, text, None, kind)


async def _unwaited_thread(work: Callable[[], bool]) -> bool:
    """`work()` in a thread the process does not wait for at its exit (asyncio.to_thread's
    would be waited for, through a send's timeout and Signal's patience, after a stop)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool, error: Exception | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def run() -> None:
        result, error = False, None
        try:
            result = work()
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: no one waits for it
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="tell-over-signal", daemon=True).start()
    return await done


def _signal_delivers(signal: SignalConfig, text: str) -> bool:
    """Send `text` to each alert recipient through signal-cli-rest-api; whether all got it.
    A service that cannot be reached is tried again for PATIENCE_S."""
    deadline = time.monotonic() + PATIENCE_S
    pause = 1.0
    waiting = list(signal.alert_to)
    while waiting:
        to = waiting[0]
        body = {"message": text, "number": signal.account, "recipients": [to]}
        request = urllib.request.Request(
            signal.url("/v2/send"),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_S):
                pass
            log.info("told %s over Signal that the daemon cannot start", to)
            waiting.pop(0)
            continue
        except urllib.error.HTTPError as exc:  # the service answered: it will not send it
            log.warning("Signal refused the message to %s: HTTP %s", to, exc.code)
            return False
        except OSError as exc:
            if time.monotonic() + pause > deadline:
                log.warning("Signal could not be reached at %s: %s", signal.service, exc)
                return False
        time.sleep(pause)
        pause = min(pause * 2, 10.0)
    return True


def _marker(key: object) -> Path | None:
    """The file that says what was told for `key`, and when (its modification time)."""
    folder = cache.folder()
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    return None if folder is None else folder / "refused" / digest

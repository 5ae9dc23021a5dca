"""Telling the owner that the daemon cannot start on its configuration.

The daemon refuses a file with problems, and systemd does not start it again (exit 2): from
then on nothing runs. A file broken by an edit that was never reloaded (or whose reload was
rejected and forgotten) shows only at the next start, often a reboot days later, when no one
watches the journal. So the alert recipients of the configuration the daemon last ran with
(`config.cache` keeps it) are told: over Signal, waiting a while for a service that starts
with the machine too, or else through its fallback command (`MOLTSCHED_ALERT_KIND=config`).

Once for each broken version of the file (its identity, marked in the cache folder), however
often the start is tried again; not at all when whoever starts it watches a terminal, or when
the file never loaded (a first setup: no one to tell yet).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bot.fallback import command_delivers
from config import cache
from config.loader import AppConfig, SignalConfig
from scheduler_core.safe import safe_text

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
PATIENCE_S = 60.0  # for a Signal service that is still starting, as at boot
SHOWN = 5  # problems named in the message


def tell(config_path: Path, problems: list[str]) -> None:
    """Tell whom the last good configuration alerts that this one cannot be started on."""
    if sys.stderr.isatty():
        return  # whoever started it is reading the problems now
    kept = cache.last(config_path)
    marker = _marker(config_path)
    if not isinstance(kept, AppConfig) or marker is None or marker.exists():
        return
    shown = [f"- {p[:200]}" for p in problems[:SHOWN]]
    if len(problems) > SHOWN:
        shown.append(f"- and {len(problems) - SHOWN} more")
    text = safe_text(
        f"⚠️ moltsched cannot start: {config_path} has {len(problems)} problem(s), so no task "
        "runs until it is fixed:\n" + "\n".join(shown) + "\n`moltsched validate` lists them; "
        "then start it again (systemctl restart moltsched)."
    )
    if asyncio.run(_deliver(kept, text)):
        try:
            marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # said again at the next try: better than not at all
    else:
        log.error("could not tell anyone that the daemon cannot start")


async def _deliver(config: AppConfig, text: str) -> bool:
    signal = config.signal
    if signal is not None and await asyncio.to_thread(_signal_delivers, signal, text):
        return True
    argv = config.alerts.fallback_command
    return bool(argv) and await command_delivers(argv, text, None, "config")


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
            f"http://{signal.service}/v2/send",
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


def _marker(config_path: Path) -> Path | None:
    """The file that says this version of the file was told of already."""
    folder = cache.folder()
    try:
        identity = cache.identity(config_path)
    except OSError:
        return None
    key = hashlib.sha256(repr((str(config_path.resolve()), identity)).encode()).hexdigest()
    return None if folder is None else folder / "refused" / key[:32]

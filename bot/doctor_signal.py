"""doctor's checks of the Signal service and of the alerts waiting for it, and `Check`, the
shape of every check `moltsched doctor` makes. The service is only asked `GET`s."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from config.loader import AppConfig, SignalConfig
from scheduler_core.record import Record
from scheduler_core.store import Inspection

HTTP_TIMEOUT_S = 3.0
MIN_SIGNAL_API = (0, 101)  # what signalbot 2.2 needs


class Check(Record):
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _get(signal: SignalConfig, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(signal.url(path), timeout=HTTP_TIMEOUT_S) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def signal_checks(config: AppConfig, waiting: Inspection | None) -> list[Check]:
    """The service (up, json-rpc mode, new enough), the account, and the alerts `waiting`."""
    assert config.signal is not None
    service, account = config.signal.service, config.signal.account
    checks: list[Check] = []
    up = "docker compose -f deploy/docker-compose.yml up -d (see the README, 'Signal')"
    try:
        status, _ = _get(config.signal, "/v1/health")
        about_status, about = _get(config.signal, "/v1/about")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return [Check("signal", "fail", f"{service} cannot be reached: {reason}", up)]
    if status != 204 or about_status != 200 or not isinstance(about, dict):
        return [Check("signal", "fail", f"{service} does not answer as signal-cli-rest-api", up)]
    mode, version = about.get("mode"), str(about.get("version", "?"))
    if mode != "json-rpc":
        checks.append(
            Check(
                "signal",
                "fail",
                f"{service} runs in {mode} mode; moltsched needs json-rpc",
                "set MODE=json-rpc for the container (deploy/docker-compose.yml does)",
            )
        )
    elif version != "unset" and _version(version) < MIN_SIGNAL_API:
        checks.append(
            Check(
                "signal",
                "fail",
                f"{service}: signal-cli-rest-api {version}; 0.101 or later is needed",
                "pull a newer bbernhard/signal-cli-rest-api image",
            )
        )
    else:
        checks.append(Check("signal", "ok", f"{service}: json-rpc mode, version {version}"))
    try:
        accounts_status, accounts = _get(config.signal, "/v1/accounts")
    except (OSError, ValueError) as exc:
        accounts_status, accounts = 0, str(exc)
    if accounts_status == 200 and isinstance(accounts, list):
        if account in accounts:
            checks.append(Check("signal account", "ok", f"{account} is registered"))
        else:
            checks.append(
                Check(
                    "signal account",
                    "fail",
                    f"{account} is not registered with {service}",
                    "link or register it (see the README, 'Signal')",
                )
            )
    else:
        checks.append(
            Check("signal account", "warn", f"could not list the accounts of {service}", "")
        )
    if waiting is not None:
        checks.append(_alerts(waiting, config.signal))
    return checks


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(".")[:2])
    except ValueError:
        return (0,)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _alerts(found: Inspection, signal: SignalConfig) -> Check:
    """The alerts not delivered yet: how many, how long, and what the service said the last
    time it refused one (its own words: the daemon logged nothing better)."""
    if found.alerts_waiting == 0 and found.missed is not None:
        when, said = found.missed
        ago = _age((datetime.now(UTC) - when).total_seconds())
        detail = f"no alerts waiting, but a send {ago} ago some members missed: {said}"
        fix = "see who missed it, and why, in the detail"
        changed = re.search(r"not to (\S+) \(IDENTITY_FAILURE\)", said)
        if changed:
            fix = _trust(changed[1], signal)
        return Check("alerts", "warn", detail, fix)
    if found.alerts_waiting == 0:
        return Check("alerts", "ok", "no alerts waiting")
    assert found.oldest_alert is not None
    age = (datetime.now(UTC) - found.oldest_alert).total_seconds()
    detail = f"{found.alerts_waiting} alert(s) waiting, the oldest for {_age(age)}"
    fix = "they go out once Signal delivers again; see the daemon's log"
    if found.refused is not None:
        recipient, said = found.refused
        detail += f"; the last try: {said}"
        if "untrusted" in said:  # signal-cli's word when a recipient's key changed
            fix = _trust(recipient, signal)
    return Check("alerts", "warn" if age < 3600 else "fail", detail, fix)


def _trust(recipient: str, signal: SignalConfig) -> str:
    """How to trust the new safety number of `recipient`."""
    return (
        f"{recipient} has a new safety number (a new phone, Signal reinstalled): compare "
        "it with theirs, then trust it: curl -X PUT -H 'Content-Type: application/json' "
        f"""-d '{{"trust_all_known_keys": true}}' """
        + signal.url(f"/v1/identities/{signal.account}/trust/{recipient}")
    )

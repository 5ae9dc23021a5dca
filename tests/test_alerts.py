"""The alert policy as a table, and the alert texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler_core.alerts import (
    AlertKind,
    AlertPolicy,
    alert_text,
    decide,
    decide_flapping,
    quiet,
)
from scheduler_core.model import Outcome

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
F, T, S, CUT = Outcome.FAILED, Outcome.TIMEOUT, Outcome.SUCCESS, Outcome.INTERRUPTED


@pytest.mark.parametrize(
    ("policy", "outcome", "streak", "alerted_at", "expected"),
    [
        (AlertPolicy(), F, 1, None, AlertKind.FAILURE),
        (AlertPolicy(), T, 1, None, AlertKind.FAILURE),
        (AlertPolicy(), F, 2, NOW - HOUR, None),  # alerted an hour ago: not yet
        (AlertPolicy(), F, 9, NOW - 6 * HOUR, AlertKind.REMINDER),
        (AlertPolicy(repeat_every=60), F, 3, NOW - timedelta(seconds=61), AlertKind.REMINDER),
        (AlertPolicy(after_failures=3), F, 2, None, None),
        (AlertPolicy(after_failures=3), F, 3, None, AlertKind.FAILURE),
        (AlertPolicy(), S, 0, NOW - HOUR, AlertKind.RECOVERY),
        (AlertPolicy(recovery=False), S, 0, NOW - HOUR, None),
        (AlertPolicy(), S, 0, None, None),  # never alerted: no recovery message
        (AlertPolicy(), CUT, 4, None, None),  # interrupted is not a failure
        (AlertPolicy(), CUT, 0, NOW - HOUR, None),  # nor a recovery
    ],
)
def test_policy(
    policy: AlertPolicy,
    outcome: Outcome,
    streak: int,
    alerted_at: datetime | None,
    expected: AlertKind | None,
) -> None:
    assert decide(policy, outcome, streak, alerted_at, NOW) == expected


def test_texts() -> None:
    out = "\n".join(f"line {i}" for i in range(10))
    text = alert_text(
        AlertKind.FAILURE, "Email", "check-email", message="exit 3 in 2.0s", failures=1, output=out
    )
    assert text.splitlines() == [
        "⚠️ Email (check-email) failed: exit 3 in 2.0s",
        "line 5",
        "line 6",
        "line 7",
        "line 8",
        "line 9",
    ]
    text = alert_text(
        AlertKind.REMINDER, "x", "x", message="timed out after 5m", failures=4, output=""
    )
    assert text == "⚠️ x is still failing (4 runs in a row): timed out after 5m"
    assert (
        alert_text(AlertKind.RECOVERY, "x", "x", message="exit 0 in 1.0s", failures=0, output="ok")
        == "✅ x is working again: exit 0 in 1.0s"
    )
    # The message quotes stderr's last line; the output under it does not say it again.
    text = alert_text(
        AlertKind.FAILURE,
        "x",
        "x",
        message="exit 4 in 0.0s: disk on fire",
        failures=1,
        output="checking\ndisk on fire\n",
    )
    assert text.splitlines() == ["⚠️ x failed: exit 4 in 0.0s: disk on fire", "checking"]


def test_flapping_is_said_once_and_settling_once() -> None:
    said = []
    runs: list[bool] = []
    for worked in [False, True] * 6 + [True] * 5 + [False] * 6:
        runs.append(worked)
        said.append((decide_flapping(runs), quiet(runs)))
    kinds = [str(k) for k, _ in said if k is not None]
    assert kinds == ["flapping", "settled", "flapping", "settled"][: len(kinds)]
    assert kinds[:2] == ["flapping", "settled"]
    # Between saying it flaps and saying it settled, every run is quiet.
    start = next(i for i, (k, _) in enumerate(said) if k is not None)
    end = next(i for i, (k, _) in enumerate(said) if i > start and k is not None)
    assert all(q for _, q in said[start + 1 : end])

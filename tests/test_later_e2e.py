"""Issue 15 against the real daemon: retries, one-shot runs across a restart, cancel, stop,
max_age, and the alert fallback command (a real command writing to a file)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from support.daemon import DaemonProcess, proc_status
from support.signal_service import ACCOUNT, ALICE, SignalService
from tests.helpers import MOLTSCHED, acli, alive, cli, processes_of, query, wait_for, wait_sync

# The fallback command: what it was given, one block per alert.
# Each alert is appended whole, in one write: a test that sees a block sees all of it.
ALERT_SH = (
    'block=$(printf "== %s %s\\n" "$MOLTSCHED_ALERT_TASK" "$MOLTSCHED_ALERT_KIND"; cat)\n'
    'printf "%s\\n\\n" "$block" >> "{log}"\n'
)


def write_setup(root: Path, tasks: str, scripts: dict[str, str], more: str = "") -> Path:
    (root / "tasks").mkdir()
    for name, text in scripts.items():
        (root / "tasks" / name).write_text(text.format(root=root))
    (root / "alert.sh").write_text(ALERT_SH.format(log=root / "alerts.log"))
    config = root / "moltsched.yaml"
    config.write_text(f"state_dir: state\ntimezone: UTC\ntasks:\n{tasks}{more}")
    return config


def fallback(root: Path, after: str = "") -> str:
    extra = f"\n  fallback_after: {after}" if after else ""
    return f"alerts:\n  fallback_command: [bash, {root / 'alert.sh'}]{extra}\n"


def alerts(root: Path) -> list[tuple[str, str]]:
    """(task kind, text) of each alert the fallback command was given."""
    path = root / "alerts.log"
    if not path.exists():
        return []
    blocks = path.read_text().split("== ")[1:]
    return [(b.split("\n", 1)[0], b.split("\n", 1)[1].strip()) for b in blocks]


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()


def start(config: Path, daemons: list[DaemonProcess]) -> DaemonProcess:
    d = DaemonProcess(config, env={"MOLTSCHED_LOG_LEVEL": "INFO"}).start()
    daemons.append(d)
    return d


def test_a_failing_run_is_retried_across_a_restart_and_alerts_once_by_the_fallback(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    config = write_setup(
        tmp_path,
        "  - {id: flaky, script: flaky.sh, every: 1h, retries: 1, retry_delay: 2s}\n",
        {"flaky.sh": "echo trying; echo 'mailbox locked' >&2; exit 3\n"},
        fallback(tmp_path),
    )
    db = tmp_path / "state" / "moltsched.db"
    d = start(config, daemons)
    wait_sync(lambda: query(db, "SELECT COUNT(*) FROM later")[0][0] == 1, what="a retry kept")
    assert d.stop() == 0  # the retry is due in 2s: the daemon is down then
    assert query(db, "SELECT cause, attempt FROM later") == [("retry", 1)]
    start(config, daemons)
    sent = "SELECT recipient, channel FROM outbox WHERE sent IS NOT NULL"
    wait_sync(lambda: query(db, sent) == [("", "fallback")], what="the alert, after the retry")
    runs = query(db, "SELECT cause, outcome, retried FROM run WHERE task_id = 'flaky' ORDER BY id")
    assert runs == [("schedule", "failed", 1), ("retry", "failed", 0)]
    ((head, text),) = alerts(tmp_path)  # one alert for the run and its retry
    assert head == "flaky failure" and "flaky failed: exit 3" in text and "mailbox locked" in text
    logs = json.loads(cli("--json", "logs", "flaky", "-n", "50", config=config).stdout)
    actions = [(e["action"], e["message"]) for e in logs]
    assert ("started", "retry run") in actions
    assert any(a == "alert_sent" and "via the fallback command" in m for a, m in actions)
    assert any(a == "scheduled" and m.startswith("retry 1 of 1 at") for a, m in actions)
    status = json.loads(cli("--json", "status", "flaky", config=config).stdout)
    assert status["retries"] == 1 and status["error_count"] == 2 and status["pending"] == []


def test_one_shot_runs_survive_a_restart_and_can_be_cancelled_within_a_limit(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    config = write_setup(
        tmp_path,
        '  - {id: note, script: note.sh, cron: "0 0 1 1 *"}\n',
        {"note.sh": 'echo "$MOLTSCHED_RUN_ID" >> "{root}/note.log"\n'},
    )
    db = tmp_path / "state" / "moltsched.db"
    d = start(config, daemons)
    asked = cli("--json", "run", "note", "--in", "2s", config=config)
    assert asked.returncode == 0, asked.stderr
    due = datetime.fromisoformat(json.loads(asked.stdout)["scheduled"]).timestamp()
    assert d.stop() == 0
    # `scheduled` is said to the second: the run is due within the second after it.
    wait_sync(lambda: time.time() > due + 1.5, what="the one-shot's time, passed while down")
    start(config, daemons)
    wait_sync(lambda: (tmp_path / "note.log").exists(), what="the missed one-shot, run once")
    wait_sync(lambda: query(db, "SELECT COUNT(*) FROM run WHERE ended IS NOT NULL")[0][0] == 1)
    assert query(db, "SELECT cause, outcome FROM run") == [("one-shot", "success")]
    logs = cli("logs", "note", config=config).stdout
    assert "missed" in logs and "was missed; running it now" in logs

    said = cli("chat", "run:note in 1h", config=config)
    assert said.stdout.startswith("note will run ") and "cancel:note removes it" in said.stdout
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert cli("run", "note", "--at", f"{tomorrow}T08:00", config=config).returncode == 0
    status = json.loads(cli("--json", "status", "note", config=config).stdout)
    assert [p["cause"] for p in status["pending"]] == ["one-shot", "one-shot"]
    assert status["pending"][1]["due"] == f"{tomorrow}T08:00:00+00:00"
    assert "pending: one-shot" in cli("status", "note", config=config).stdout
    again = cli("--json", "run", "note", "--at", f"{tomorrow}T08:00", config=config)
    twice = json.loads(again.stdout)
    assert not twice["added"] and twice["scheduled"] == status["pending"][1]["due"]
    said = cli("chat", f"run:note at {tomorrow}T08:00:30", config=config).stdout
    assert said.startswith("note is already set to run ") and "nothing added" in said
    for hours in range(2, 10):
        assert cli("run", "note", "--in", f"{hours}h", config=config).returncode == 0
    refused = cli("--json", "run", "note", "--in", "11h", config=config)
    assert refused.returncode == 2
    assert "10 one-shot runs pending already" in json.loads(refused.stdout)["error"]
    cancelled = json.loads(cli("--json", "cancel", "note", config=config).stdout)
    assert len(cancelled["cancelled"]) == 10
    assert json.loads(cli("--json", "status", "note", config=config).stdout)["pending"] == []
    assert cli("chat", "cancel:note", config=config).stdout.strip() == "note has no pending runs."
    bad = cli("chat", "run:note in forever", config=config).stdout
    assert "'forever' is not a duration" in bad
    assert "in the past" in cli("run", "note", "--at", "2001-01-01T00:00", config=config).stderr
    # A time that starts with "-": argparse took it for an option ("expected one argument").
    negative = cli("--json", "run", "note", "--in", "-5m", config=config)
    assert negative.returncode == 2
    assert "'-5m' is not a duration" in json.loads(negative.stdout)["error"]
    unquoted = cli("chat", "run:note", "in", "-5m", config=config)  # "unrecognized arguments"
    assert unquoted.returncode == 0 and "'-5m' is not a duration" in unquoted.stdout


def test_a_one_shot_for_a_paused_task_says_it_waits_for_resume(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """`run TASK --in 1s` on a paused task answered "TASK will run 10:00:01 (in 1s)"; it
    waits for `resume` (as the README says), so it did not run then, and nothing said so."""
    config = write_setup(
        tmp_path, '  - {id: note, script: note.sh, cron: "0 0 1 1 *"}\n', {"note.sh": "true\n"}
    )
    for up in (False, True):
        if up:
            start(config, daemons)
        assert cli("pause", "note", config=config).returncode == 0
        asked = cli("run", "note", "--in", "1s", config=config)
        assert asked.returncode == 0, asked.stderr
        assert "note is paused: it runs once resumed (`moltsched resume note`)" in asked.stdout
        said = cli("chat", "run:note in 1h", config=config).stdout
        assert "note is paused: it runs once resumed (resume:note)" in said
        answer = json.loads(cli("--json", "run", "note", "--in", "1h", config=config).stdout)
        assert answer["paused"] is True
        assert cli("resume", "note", config=config).returncode == 0
        answer = json.loads(cli("--json", "run", "note", "--in", "1h", config=config).stdout)
        assert answer["paused"] is False
        assert cli("cancel", "note", config=config).returncode == 0


def test_resume_says_that_a_run_held_while_paused_goes_now(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """A one-shot or a retry that came due while its task was paused is held, and goes at
    `resume`. Resume answered "next run 08:02" all the same, and the held run (a retry that
    fails again: an alert) came a second later, unannounced."""
    config = write_setup(
        tmp_path,
        '  - {id: note, script: note.sh, cron: "0 0 1 1 *"}\n',
        {"note.sh": 'echo ran >> "{root}/note.log"\n'},
    )
    start(config, daemons)
    assert cli("pause", "note", config=config).returncode == 0
    asked = json.loads(cli("--json", "run", "note", "--in", "1s", config=config).stdout)
    due = datetime.fromisoformat(asked["scheduled"]).timestamp()
    wait_sync(lambda: time.time() > due + 1.5, what="the one-shot's time, passed while paused")
    said = cli("resume", "note", config=config).stdout
    assert "the run held while it was paused goes now" in said, said
    wait_sync(lambda: (tmp_path / "note.log").exists(), what="the held run")
    again = cli("chat", "resume:note", config=config).stdout  # nothing held now
    assert again.strip() == "note is not paused."


def test_stop_ends_the_run_says_who_to_its_waiter_and_leaves_the_schedule(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    config = write_setup(
        tmp_path,
        "  - {id: long, script: long.sh, every: 1h, retries: 2, grace: 1s}\n",
        {
            "long.sh": "moltsched checkpoint save long '{{\"page\": 7}}'\n"
            'echo started > "{root}/long.started"\n'
            "sleep 60 & sleep 60\n"
        },
    )
    db = tmp_path / "state" / "moltsched.db"
    start(config, daemons)
    wait_sync(lambda: (tmp_path / "long.started").exists(), what="the long run")
    ((due,),) = query(db, "SELECT due FROM run WHERE task_id = 'long'")
    next_run = due + 3600  # every 1h, from the slot it was due at
    waiter = subprocess.Popen(
        [MOLTSCHED, "--config", str(config), "--json", "run", "long"],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_sync(lambda: "run:long" in cli("logs", "long", config=config).stdout, what="joined")
    stopped = cli("--json", "stop", "long", config=config)
    assert stopped.returncode == 0, stopped.stderr
    answer = json.loads(stopped.stdout)
    assert answer["stopped"] is True and answer["outcome"] == "stopped"
    assert answer["message"].startswith("stopped by cli:")
    out, _ = waiter.communicate(timeout=30)
    heard = json.loads(out)
    assert waiter.returncode == 1 and heard["outcome"] == "stopped"
    assert heard["message"].startswith("stopped by cli:") and heard["kind"] == "stopped"
    assert processes_of(db, {"long"}) == []  # both sleeps went with it
    row = query(db, "SELECT status, last_outcome, checkpoint, next_run FROM task WHERE id = 'long'")
    assert row == [("idle", "stopped", '{"page":7}', next_run)]
    assert query(db, "SELECT COUNT(*) FROM later")[0][0] == 0  # not retried
    assert cli("chat", "stop:long", config=config).stdout.strip() == "long is not running."


def test_max_age_alerts_once_per_stale_period_even_when_paused_and_down(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    config = write_setup(
        tmp_path,
        "  - {id: backup, script: backup.sh, every: 1s, max_age: 2s, alert: false}\n",
        {"backup.sh": '[ -e "{root}/ok" ] || {{ echo "no disk" >&2; exit 1; }}\n'},
        fallback(tmp_path),
    )
    db = tmp_path / "state" / "moltsched.db"
    d = start(config, daemons)
    wait_sync(lambda: alerts(tmp_path), what="the stale alert")
    (tmp_path / "ok").touch()
    wait_sync(lambda: len(alerts(tmp_path)) == 2, what="the recovery")
    (stale, stale_text), (fresh, fresh_text) = alerts(tmp_path)
    assert stale == "backup stale" and "backup has not succeeded in 2s" in stale_text
    assert "no disk" in stale_text  # why: its last error
    assert fresh == "backup fresh" and "backup has succeeded again" in fresh_text
    # A pause that was forgotten, while the daemon was down too: said when it starts again.
    assert cli("pause", "backup", config=config).returncode == 0
    assert d.stop() == 0
    last = query(db, "SELECT last_success FROM task WHERE id = 'backup'")[0][0]
    wait_sync(lambda: time.time() > last + 2.5, what="max_age passed while down")
    start(config, daemons)
    wait_sync(lambda: len(alerts(tmp_path)) == 3, what="the stale alert at start-up")
    head, text = alerts(tmp_path)[2]
    assert head == "backup stale" and "It is paused." in text
    status = json.loads(cli("--json", "status", "backup", config=config).stdout)
    assert status["stale"] is True and status["max_age_s"] == 2.0


async def test_an_alert_signal_cannot_deliver_goes_by_the_fallback_and_never_again_by_signal(
    tmp_path: Path,
) -> None:
    config = write_setup(
        tmp_path,
        '  - {id: bad, script: bad.sh, cron: "0 0 1 1 *"}\n'
        '  - {id: worse, script: bad.sh, cron: "0 0 1 1 *"}\n',
        {"bad.sh": "echo 'disk full' >&2; exit 5\n"},
        fallback(tmp_path, "1s"),
    )
    async with SignalService() as service:
        with config.open("a") as f:
            f.write(f'signal:\n  service: {service.service}\n  account: "{ACCOUNT}"\n')
            f.write(f'  admins: ["{ALICE}"]\n')
        service.send_status = 500  # signal-cli-rest-api answers every send with an error
        log = (tmp_path / "daemon.log").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            MOLTSCHED, "--config", str(config), "daemon", stderr=log
        )
        try:
            await service.wait_connected(20)
            assert (await acli("run", "bad", config=config)).returncode == 1
            await wait_for(lambda: bool(alerts(tmp_path)), timeout=20)
            ((head, text),) = alerts(tmp_path)
            assert head == "bad failure" and text.startswith("⚠️ bad failed: exit 5")
            service.send_status = None  # Signal is back: the next alert goes by Signal
            assert (await acli("run", "worse", config=config)).returncode == 1
            sent = await service.wait_sent(1, 30)
            assert [m["message"].split(":")[0] for m in sent] == ["⚠️ worse failed"]
            # Alerts go in order: had `bad` still been waiting, it would have gone first.
            db = tmp_path / "state" / "moltsched.db"
            channels = "SELECT task_id, channel FROM outbox ORDER BY id"
            await wait_for(
                lambda: query(db, channels) == [("bad", "fallback"), ("worse", "signal")]
            )
            logs = json.loads((await acli("--json", "logs", config=config)).stdout)
            sent_by = [(e["task_id"], e["message"]) for e in logs if e["action"] == "alert_sent"]
            assert sent_by == [
                ("worse", f"failure to {ALICE} via signal"),
                ("bad", "failure via the fallback command"),
            ]
        finally:
            daemon.terminate()
            await asyncio.wait_for(daemon.wait(), 20)
            log.close()


def test_a_fallback_command_that_writes_without_end_costs_its_last_lines(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """A fallback command that writes 300 MB to stderr and fails: the daemon keeps the last
    of it for its log line, not all of it in memory (before: 300 MB more at its peak)."""
    daemon = alerting_by(
        tmp_path,
        "cat > /dev/null; head -c 300000000 /dev/zero | tr '\\0' x >&2\n"
        "printf '\\nlast words\\n' >&2; exit 1\n",
        daemons,
    )
    before = proc_status(daemon.pid, "VmHWM")
    assert cli("run", "bad", config=daemon.config).returncode == 1
    wait_sync(lambda: "last words" in daemon.log.read_text(), 60, "the fallback's failure")
    assert (proc_status(daemon.pid, "VmHWM") - before) / 1024 < 50  # MB
    assert daemon.stop() == 0


def test_a_reload_that_removes_the_fallback_command_stops_it_and_one_that_brings_it_back(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """Removed by a reload, `alerts.fallback_command` is run no more (before, the old command
    took every alert until a restart, though the file no longer named it), and the daemon
    says that alerts now reach no one; put back by a reload, it delivers again."""
    config = write_setup(
        tmp_path,
        '  - {id: bad, script: bad.sh, cron: "0 0 1 1 *"}\n',
        {"bad.sh": "exit 3\n"},
        fallback(tmp_path),
    )
    with_fallback = config.read_text()
    db = tmp_path / "state" / "moltsched.db"
    d = start(config, daemons)
    assert cli("run", "bad", config=config).returncode == 1
    wait_sync(lambda: len(alerts(tmp_path)) == 1, what="the first alert")
    config.write_text(with_fallback.replace(fallback(tmp_path), ""))
    assert cli("reload", config=config).returncode == 0
    assert "fails alerts no one" in d.log.read_text()
    (tmp_path / "tasks" / "bad.sh").write_text("exit 0\n")
    assert cli("run", "bad", config=config).returncode == 0
    # The recovery would be queued before `run` answers: nothing was (no one to tell).
    assert query(db, "SELECT COUNT(*) FROM outbox") == [(1,)]
    config.write_text(with_fallback)
    assert cli("reload", config=config).returncode == 0
    (tmp_path / "tasks" / "bad.sh").write_text("exit 4\n")
    assert cli("run", "bad", config=config).returncode == 1
    wait_sync(lambda: len(alerts(tmp_path)) == 2, what="the alert after the fallback came back")
    assert [head for head, _ in alerts(tmp_path)] == ["bad failure", "bad failure"]


def test_a_fallback_command_that_hangs_holds_up_a_stop_for_a_few_seconds_only(
    tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """A fallback command that never ends, under way when the daemon is told to stop: it is
    stopped after a short grace (`bot.fallback.STOP_GRACE_S`), with all it started, and its
    alert waits in the outbox for the next start (before: the stop waited out its 60 s
    timeout, past systemd's TimeoutStopSec)."""
    daemon = alerting_by(
        tmp_path, f"cat > /dev/null; sleep 600 & touch {tmp_path / 'began'}; sleep 600\n", daemons
    )
    config = daemon.config
    assert cli("run", "bad", config=config).returncode == 1
    wait_sync((tmp_path / "began").exists, 30, "the fallback command to begin")
    helpers = in_session_of(str(tmp_path / "alert-by.sh"))
    assert len(helpers) == 3  # bash, the sleep it waits for and the one it left going
    assert daemon.stop(timeout=20) == 0
    assert "still running at the stop; stopped" in daemon.log.read_text()
    wait_sync(lambda: not [p for p in helpers if alive(p)], 10, "the command's processes to end")
    db = config.parent / "state" / "moltsched.db"
    assert query(db, "SELECT COUNT(*) FROM outbox WHERE sent IS NULL") == [(1,)]


def alerting_by(root: Path, command: str, daemons: list[DaemonProcess]) -> DaemonProcess:
    """The daemon on a task `bad` that fails when asked to run, with `command` (bash, in
    alert-by.sh) as its alert fallback."""
    (root / "alert-by.sh").write_text(command)
    config = write_setup(
        root,
        "  - {id: bad, script: bad.sh, cron: '0 0 1 1 *'}\n",
        {"bad.sh": "exit 3\n"},
        f"alerts:\n  fallback_command: [bash, {root / 'alert-by.sh'}]\n",
    )
    return start(config, daemons)


def in_session_of(word: str) -> list[int]:
    """The processes in the session of the one whose command line has `word`."""
    sessions: dict[int, list[int]] = {}
    leader = None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            line = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        sid = int(stat.rsplit(")", 1)[1].split()[3])
        sessions.setdefault(sid, []).append(int(proc.name))
        if word.encode() in line:
            leader = sid
    return sessions.get(leader, []) if leader is not None else []

"""Reload (SIGHUP and `moltsched reload`) against the real daemon."""

from __future__ import annotations

import contextlib
import grp
import json
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

from support.daemon import DaemonProcess
from tests.helpers import MOLTSCHED, REPO, cli, processes_of, query, wait_sync
from tests.unix_users import need_root, unix_group

BEFORE = """
tasks:
  - {id: stays, script: slow.sh, cron: "0 0 1 1 *", grace: 2s}
  - {id: goes, script: quick.sh, cron: "0 0 1 1 *"}
"""

AFTER = """
timezone: Asia/Tokyo
tasks:
  - {id: stays, script: slow.sh, cron: "0 0 1 1 *", priority: 1, grace: 2s}
  - {id: comes, script: quick.sh, every: 1h}
"""


def test_reload_applies_changes_without_disturbing_a_run(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "slow.sh").write_text("sleep 3; echo slow done\n")
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(BEFORE)
    db = tmp_path / "state" / "moltsched.db"
    daemon = DaemonProcess(config).start()
    try:
        cli("run", "goes", config=config)
        runner = subprocess.Popen(
            [MOLTSCHED, "--config", str(config), "--json", "run", "stays"],
            stdout=subprocess.PIPE,
            text=True,
        )
        wait_sync(
            lambda: query(db, "SELECT status FROM task WHERE id = 'stays'") == [("running",)],
            10,
            "stays to run",
        )
        config.write_text(AFTER)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_sync(lambda: "reloaded" in daemon.log.read_text(), 10, "the reload")
        assert "added comes; removed goes; changed stays" in daemon.log.read_text()
        # The new interval task runs at once; the removed one is gone from status.
        wait_sync(
            lambda: query(db, "SELECT COUNT(*) FROM run WHERE task_id = 'comes'")[0][0] >= 1,
            10,
            "comes to run",
        )
        status = json.loads(cli("--json", "status", config=config).stdout)
        assert [t["id"] for t in status["tasks"]] == ["stays", "comes"]
        assert status["tasks"][0]["next_run"].endswith("+09:00")  # the new zone
        # The run that was going when the reload came finished undisturbed.
        out, _ = runner.communicate(timeout=20)
        assert json.loads(out)["outcome"] == "success"
        # History of the removed task is kept.
        assert query(db, "SELECT run_count FROM task WHERE id = 'goes'") == [(1,)]

        config.write_text(AFTER + "  - {id: Bad, script: nope.sh, every: soon}\n")
        result = cli("reload", config=config)
        assert result.returncode == 2
        assert "reload rejected, the running configuration is kept" in result.stderr
        assert "tasks[2].every" in result.stderr and "tasks[2].id" in result.stderr
        assert "reload rejected" in daemon.log.read_text()
        assert cli("status", "comes", config=config).returncode == 0

        config.write_text(AFTER)
        result = cli("reload", config=config)
        assert result.returncode == 0 and "reloaded" in result.stdout
    finally:
        assert daemon.stop() == 0


def test_a_task_added_to_the_file_but_not_reloaded_says_reload(tmp_path: Path) -> None:
    """The owner adds a task and asks for it before a reload: "unknown task 'b'" made them
    doubt the file. The answer now says the file has it and the daemon has not loaded it."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: a, script: quick.sh, cron: '0 0 1 1 *'}\n")
    daemon = DaemonProcess(config).start()
    try:
        config.write_text(config.read_text() + "  - {id: b, script: quick.sh, cron: '0 0 1 1 *'}\n")
        hint = "is in the configuration file, but the daemon has not loaded it since"
        done = cli("run", "B", config=config)
        assert done.returncode == 2 and hint in done.stderr, done.stderr
        assert "moltsched reload" in done.stderr
        error = json.loads(cli("--json", "status", "b", config=config).stdout)
        assert error["kind"] == "unknown-task" and hint in error["error"], error
        said = cli("chat", "run:b", config=config).stdout
        assert "unknown task 'b'" in said and hint in said, said
        other = cli("run", "zzz", config=config)
        assert other.returncode == 2 and hint not in other.stderr, other.stderr
        assert cli("reload", config=config).returncode == 0
        assert cli("run", "b", config=config).returncode == 0
    finally:
        assert daemon.stop() == 0


def test_reload_without_a_daemon_checks_the_file(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: a, script: quick.sh, every: 1h}\n")
    result = cli("reload", config=config)
    assert result.returncode == 0 and "No daemon is running" in result.stdout
    config.write_text("tasks:\n  - {id: a, script: quick.sh, every: never}\n")
    assert cli("reload", config=config).returncode == 2


def test_a_reload_our_own_code_fails_keeps_the_daemon_and_its_configuration(
    tmp_path: Path,
) -> None:
    """Half an upgrade under a running daemon: the code a reload loads for the first time
    raises. That reload fails with one answer; the daemon goes on with the configuration it
    had, and once the code is whole again, a reload takes the new file."""
    code = tmp_path / "code"
    for package in ("bot", "commands", "config", "scheduler_core"):
        shutil.copytree(
            REPO / package, code / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: before, script: quick.sh, cron: '0 0 1 1 *'}\n")
    env = {"PYTHONPATH": str(code), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    # Started twice: the second start takes the cached configuration, so the schema's code
    # is first loaded by the reload (as after a restart of an unchanged file).
    assert DaemonProcess(config, env=env).start().stop() == 0
    daemon = DaemonProcess(config, env=env).start()
    try:
        schema = code / "config" / "schema.py"
        whole = schema.read_text()
        schema.write_text(whole + 'raise RuntimeError("half upgraded")\n')
        config.write_text("tasks:\n  - {id: after, script: quick.sh, cron: '0 0 1 1 *'}\n")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_sync(lambda: "reload failed" in daemon.log.read_text(), 10, "the failed reload")
        result = cli("reload", config=config)
        assert result.returncode == 1, result
        assert "reload failed" in result.stderr and "half upgraded" in result.stderr
        answer = json.loads(cli("--json", "reload", config=config).stdout)
        assert (answer["reloaded"], answer["kind"]) == (False, "internal")
        status = json.loads(cli("--json", "status", config=config).stdout)
        assert status["running"] and [t["id"] for t in status["tasks"]] == ["before"]

        schema.write_text(whole)
        assert cli("reload", config=config).returncode == 0
        status = json.loads(cli("--json", "status", config=config).stdout)
        assert [t["id"] for t in status["tasks"]] == ["after"]
    finally:
        assert daemon.stop() == 0


def test_a_reload_opens_and_closes_the_control_socket_to_a_group(tmp_path: Path) -> None:
    """`control.group` added by a reload applies at once (the socket 0660 in the group, the
    state directory searchable by it), and removed by one, the socket is the user's alone
    again; a changed `metrics:` section says it takes a restart."""
    need_root()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    config = tmp_path / "moltsched.yaml"
    tasks = "tasks:\n  - {id: a, script: quick.sh, cron: '0 0 1 1 *'}\n"
    config.write_text(tasks)
    sock = tmp_path / "state" / "control.sock"
    with unix_group() as group:
        daemon = DaemonProcess(config).start()
        try:
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            config.write_text(tasks + f"control: {{group: {group}}}\nmetrics: {{port: 9}}\n")
            assert cli("reload", config=config).returncode == 0
            info = sock.stat()
            assert stat.S_IMODE(info.st_mode) == 0o660
            assert info.st_gid == grp.getgrnam(group).gr_gid
            assert sock.parent.stat().st_mode & stat.S_IXGRP
            assert "metrics: changed; it applies after a restart" in daemon.log.read_text()
            config.write_text(tasks)
            assert cli("reload", config=config).returncode == 0
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        finally:
            assert daemon.stop() == 0


@contextlib.contextmanager
def state_dir_edited(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    """The daemon on BEFORE, and then the file edited to name another `state_dir`
    (`elsewhere`): (daemon, config). The daemon is stopped at the end."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(BEFORE.replace("slow.sh", "quick.sh"))
    daemon = DaemonProcess(config).start()
    try:
        config.write_text("state_dir: elsewhere\n" + BEFORE.replace("slow.sh", "quick.sh"))
        yield daemon, config
    finally:
        assert daemon.stop() == 0


def test_a_reload_that_moves_the_state_directory_reaches_the_daemon_and_is_refused(
    tmp_path: Path,
) -> None:
    """The file edited to name another `state_dir`, then `moltsched reload` (systemctl
    reload runs it): before, it looked for a daemon in the new place only, said "No daemon
    is running" and exited 0, while the daemon ran on with the old file; someone told so
    would start a second one, and every task would run twice."""
    with state_dir_edited(tmp_path) as (daemon, config):
        result = cli("reload", config=config)
        assert result.returncode == 2, result.stdout
        assert "state_dir changed" in result.stderr and "takes a restart" in result.stderr
        assert "reload rejected" in daemon.log.read_text()
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert not (tmp_path / "elsewhere").exists()  # nothing was made there


def test_commands_after_the_state_directory_was_edited_reach_the_running_daemon(
    tmp_path: Path,
) -> None:
    """Until the daemon is restarted, it runs on the state directory the file named when it
    started. Before, `status` then said "daemon not running", made an empty database in the
    new place, and `run` ran the task there in the foreground, beside the daemon."""
    with state_dir_edited(tmp_path) as (daemon, config):
        status = cli("--json", "status", config=config)
        assert json.loads(status.stdout)["running"] is True
        assert "takes a restart" in status.stderr
        ran = cli("--json", "run", "goes", config=config)
        assert json.loads(ran.stdout)["outcome"] == "success"
        assert query(daemon.db, "SELECT run_count FROM task WHERE id = 'goes'") == [(1,)]
        assert not (tmp_path / "elsewhere").exists()


def test_doctor_finds_the_daemon_on_the_state_directory_the_file_named_before(
    tmp_path: Path,
) -> None:
    """Before, `doctor` said "not running" and to start it: a second daemon."""
    with state_dir_edited(tmp_path) as (daemon, config):
        result = cli("doctor", config=config)
        line = next(x for x in result.stdout.splitlines() if " daemon: " in x)
        assert line.startswith("FAIL") and f"running (pid {daemon.pid}) on " in line, line
        assert "restart" in result.stdout and "not running" not in line


def test_a_reload_that_removes_a_task_stops_its_run(tmp_path: Path) -> None:
    """A run of a task removed by a reload went on to its end, which could be never: it
    was gone from `status`, and `stop` said the task was unknown. Nothing could end it but
    a kill by hand. Now the reload stops it, as `stop` does (its grace, then SIGKILL)."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "long.sh").write_text("echo started; sleep 600\n")
    (tmp_path / "tasks" / "quick.sh").write_text("echo quick\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n"
        "  - {id: long, script: long.sh, every: 1h, grace: 2s}\n"
        "  - {id: quick, script: quick.sh, every: 1h}\n"
    )
    db = tmp_path / "state" / "moltsched.db"
    daemon = DaemonProcess(config).start()
    try:
        wait_sync(lambda: processes_of(db, {"long"}) != [], 10, "long to run")
        config.write_text("tasks:\n  - {id: quick, script: quick.sh, every: 1h}\n")
        result = cli("reload", config=config)
        assert result.returncode == 0, result.stderr
        assert "removed long (its run is stopped)" in result.stdout
        rows = "SELECT outcome, message FROM run WHERE task_id = 'long'"
        wait_sync(lambda: query(db, rows)[0][0] is not None, 20, "the run's end")
        ((outcome, message),) = query(db, rows)
        assert outcome == "stopped" and "stopped by a reload that removed the task" in message
        assert processes_of(db, {"long"}) == []
        status = json.loads(cli("--json", "status", config=config).stdout)
        assert [t["id"] for t in status["tasks"]] == ["quick"]
    finally:
        assert daemon.stop() == 0


def test_a_reload_follows_a_configuration_link_to_its_new_file(tmp_path: Path) -> None:
    """A configuration kept as a link to the file in use (NixOS and home-manager, stow,
    a deploy tool's `current` link): the daemon kept the file the link named at its start,
    so after the link was moved to a new file every reload read the old one again and
    answered "reloaded", the edit never applied."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo a\n")
    one, two = tmp_path / "gen1.yaml", tmp_path / "gen2.yaml"
    one.write_text("tasks:\n  - {id: a, script: a.sh, every: 1h}\n")
    two.write_text(one.read_text() + "  - {id: b, script: a.sh, every: 1h}\n")
    config = tmp_path / "moltsched.yaml"
    config.symlink_to(one.name)
    daemon = DaemonProcess(config).start()
    try:
        config.unlink()
        config.symlink_to(two.name)
        result = cli("reload", config=config)
        assert result.returncode == 0 and "added b" in result.stdout, result.stdout
        status = json.loads(cli("--json", "status", config=config).stdout)
        assert [t["id"] for t in status["tasks"]] == ["a", "b"]
    finally:
        assert daemon.stop() == 0


def test_runs_follow_a_tasks_dir_link_to_its_new_folder(tmp_path: Path) -> None:
    """`tasks_dir` as a link to the release in use (`current` -> releases/v2), switched by
    a deploy: the daemon had resolved the link when it read the file, so every run went on
    starting the old release's scripts, as long as they stayed on disk, until a restart.
    cron starts the path it is given, link and all; so do runs now."""
    for release in ("v1", "v2"):
        folder = tmp_path / "releases" / release
        folder.mkdir(parents=True)
        (folder / "job.sh").write_text(f"echo {release}\n")
    current = tmp_path / "current"
    current.symlink_to("releases/v1")
    config = tmp_path / "moltsched.yaml"
    config.write_text(f"tasks_dir: {current}\ntasks:\n  - {{id: job, script: job.sh, every: 1h}}\n")
    daemon = DaemonProcess(config).start()
    try:
        assert cli("run", "job", config=config).stdout.strip().endswith("v1")
        current.unlink()
        current.symlink_to("releases/v2")
        ran = cli("run", "job", config=config)
        assert ran.stdout.strip().endswith("v2"), ran.stdout
    finally:
        assert daemon.stop() == 0


def test_a_reload_says_what_validate_would_warn_of_in_the_tasks_it_adds_or_changes(
    tmp_path: Path,
) -> None:
    """A script saved with Windows line endings, added by a reload: the reload said only
    "added c", and the run failed with bash's "numeric argument required". It now warns as
    `validate` does, in its answer and in the journal, for the tasks it added or changed."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "ok.sh").write_text("exit 0\n")
    (tmp_path / "tasks" / "crlf.sh").write_text("echo hi\r\nexit 0\r\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: a, script: ok.sh, cron: '0 0 1 1 *'}\n")
    daemon = DaemonProcess(config).start()
    try:
        config.write_text(
            "tasks:\n  - {id: a, script: ok.sh, cron: '0 0 1 1 *'}\n"
            "  - {id: c, script: crlf.sh, cron: '0 0 1 1 *'}\n"
        )
        done = cli("reload", config=config)
        assert done.returncode == 0 and "added c" in done.stdout, done.stdout
        crlf = f"tasks[1].script: {tmp_path / 'tasks' / 'crlf.sh'} has Windows (CRLF) line endings"
        assert crlf in done.stdout, done.stdout
        assert crlf in daemon.log.read_text()
        answer = json.loads(cli("--json", "reload", config=config).stdout)
        assert answer["reloaded"] is True and not any("CRLF" in w for w in answer["warnings"])
    finally:
        assert daemon.stop() == 0
    alone = cli("reload", config=config)  # no daemon: the file checked, as validate does
    assert alone.returncode == 0 and "No daemon is running" in alone.stdout
    assert f"moltsched: warning: {crlf}" in alone.stderr, alone.stderr

"""`moltsched ... | head`: it stops quietly once the reader has enough, as `git log` does
(exit 141, as if by SIGPIPE); with its output closed, it says so in a line and does nothing.
With the daemon up and without. Before: a traceback (BrokenPipeError, then another while
reporting it as "cannot use: Broken pipe"), or an AttributeError with no stdout at all.
An output whose encoding cannot write a character gets it escaped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support.daemon import DaemonProcess
from tests.helpers import MOLTSCHED, query, wait_sync

TASKS = 3000  # `status --json` of these is far more than a pipe holds


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo hi\n")
    path = tmp_path / "moltsched.yaml"
    path.write_text(
        "tasks:\n"
        + "".join(f"  - {{id: t{i}, script: a.sh, cron: '0 0 1 1 *'}}\n" for i in range(TASKS))
    )
    return path


def into_head(config: Path, *args: str) -> tuple[int, str]:
    """`moltsched ARGS | head -c 100`: the exit code and what it wrote to stderr."""
    proc = subprocess.Popen(
        [MOLTSCHED, "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()  # head has what it wanted
    with proc.stderr:
        err = proc.stderr.read().decode()
    return proc.wait(timeout=30), err


def closed_stdout(config: Path, *args: str) -> tuple[int, str]:
    """`moltsched ARGS >&-`."""
    done = subprocess.run(
        [MOLTSCHED, "--config", str(config), *args],
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        preexec_fn=lambda: os.close(1),
    )
    return done.returncode, done.stderr


COMMANDS = [("--json", "status"), ("status",)]
CLOSED = "moltsched: standard output is closed (>/dev/null discards it)\n"


def check(config: Path) -> None:
    for args in COMMANDS:
        code, err = into_head(config, *args)
        # 141 once a write meets the closed pipe; a single write that the closing cut short
        # is reported to Python as written, and the command ends as usual.
        assert code in (0, 141) and err == "", (args, code, err)
        code, err = closed_stdout(config, *args)
        assert code == 2 and err == CLOSED, (args, code, err)


def test_no_daemon(config: Path) -> None:
    check(config)


def test_daemon_up(config: Path) -> None:
    daemon = DaemonProcess(config).start()
    try:
        check(config)
    finally:
        assert daemon.stop() == 0


def test_a_run_in_the_foreground_whose_reader_left(config: Path) -> None:
    """`moltsched run TASK | true` with no daemon: the run is recorded and the command stops
    quietly. Before: a traceback (the broken pipe came out of the run's task group wrapped
    in an exception group, which the command did not take for a reader gone)."""
    proc = subprocess.Popen(
        [MOLTSCHED, "--config", str(config), "run", "t1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err.decode()) == (141, "")
    db = config.parent / "state" / "moltsched.db"
    assert query(db, "SELECT outcome FROM run WHERE task_id = 't1'") == [("success",)]


def test_a_daemon_started_with_its_outputs_closed_runs(tmp_path: Path) -> None:
    """`moltsched daemon >&- 2>&-` needs no output: it runs (and the files it opens never
    take the places of stdout or stderr, where a stray write would land in them)."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo hi\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: a, script: a.sh, every: 1h}\n")

    def close_outputs() -> None:
        os.close(1)
        os.close(2)

    daemon = subprocess.Popen(
        [MOLTSCHED, "--config", str(config), "daemon"], preexec_fn=close_outputs
    )
    try:
        db = tmp_path / "state" / "moltsched.db"
        ran = "SELECT outcome FROM run WHERE task_id = 'a'"
        wait_sync(lambda: db.exists() and query(db, ran) == [("success",)], 15, "a's run")
        targets = {os.readlink(f"/proc/{daemon.pid}/fd/{fd}") for fd in (1, 2)}
        assert targets == {os.devnull}, targets
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0


def test_an_output_that_cannot_write_a_character_gets_it_escaped(tmp_path: Path) -> None:
    """A terminal in a Latin-1 or ASCII locale (`PYTHONIOENCODING=ascii`, an old server):
    a task that printed "✓" or an emoji made every answer that showed it a traceback half-way
    through. Now such a character is written as `\\uXXXX`, which is also what JSON writes.
    (A daemon's answer is passed on as the UTF-8 bytes it is, which raises nothing.)"""
    (tmp_path / "tasks").mkdir()
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n  - {id: uni, name: Kalender ✓, command: [echo, '✓ 日本 😀'], every: 1h}\n"
    )
    env = os.environ | {"PYTHONIOENCODING": "ascii"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MOLTSCHED, "--config", str(config), *args],
            capture_output=True,
            text=True,
            encoding="ascii",
            env=env,
            timeout=60,
        )

    done = run("run", "uni")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.endswith("\\u2713 \\u65e5\\u672c \\ud83d\\ude00\n"), done.stdout
    answer = json.loads(run("--json", "output", "uni").stdout)
    assert answer["stdout"] == "✓ 日本 😀\n"
    assert json.loads(run("--json", "status").stdout)["tasks"][0]["name"] == "Kalender ✓"
    assert "Kalender \\u2713 (uni)" in run("status", "uni").stdout

"""Tasks run in the owner's world (issue 12, point 2): the daemon's own PATH, the interpreter a
script's `#!` line names, none of systemd's variables, and `validate` warning about what would
fail at run time."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.engine import task_environment
from scheduler_core.shebang import script_argv
from tests.helpers import MOLTSCHED, cli, wait_sync

VENV_BIN = str(Path(MOLTSCHED).parent)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Each writes what it sees to ../seen-NAME.json (next to the config), as JSON.
DUMP_PY = """#!/usr/bin/env python3
import json, os, sys
out = os.path.join(os.path.dirname(os.environ["MOLTSCHED_DB"]), "..", "seen-py.json")
json.dump({"python": sys.executable, "env": dict(os.environ)}, open(out, "w"))
"""
DUMP_SH = """out="$(dirname "$MOLTSCHED_DB")/../seen-sh.json"
printf '{"bash": "%s", "shell_opts": "%s"}' "$BASH_VERSION" "$-" > "$out"
"""
DUMP_SH_E = """#!/bin/sh -e
out="$(dirname "$MOLTSCHED_DB")/../seen-sh-e.json"
printf '{"bash": "%s", "shell_opts": "%s"}' "${BASH_VERSION:-}" "$-" > "$out"
"""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield path
    sock.close()


def test_a_run_sees_the_daemons_path_its_own_interpreter_and_no_systemd_variables(
    tmp_path: Path, notify_socket: Path
) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "dump.py").write_text(DUMP_PY)
    (tasks / "dump.sh").write_text(DUMP_SH)
    (tasks / "dump-e.sh").write_text(DUMP_SH_E)
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n"
        "  - {id: py, script: dump.py, every: 1h}\n"
        "  - {id: sh, script: dump.sh, every: 1h}\n"
        "  - {id: she, script: dump-e.sh, every: 1h}\n"
    )
    # As under systemd: a PATH without our venv, and the service manager's variables.
    env = {
        "PATH": SYSTEM_PATH,
        "HOME": str(tmp_path),
        "NOTIFY_SOCKET": str(notify_socket),
        "WATCHDOG_USEC": "60000000",
        "WATCHDOG_PID": "1",  # not us: the daemon must not ping, and no task may see it
        "JOURNAL_STREAM": "8:12345",
        "LISTEN_PID": "1",
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "control",
        "OWNER_SETTING": "kept",
    }
    log = tmp_path / "daemon.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([MOLTSCHED, "--config", str(config), "daemon"], stderr=err, env=env)
    try:
        wait_sync(lambda: (tmp_path / "seen-py.json").exists(), 20, "the Python task to run")
        wait_sync(lambda: (tmp_path / "seen-sh-e.json").exists(), 20, "the sh task to run")
        wait_sync(lambda: (tmp_path / "seen-sh.json").exists(), 20, "the bash task to run")
    finally:
        proc.terminate()
        proc.wait(15)
    seen = json.loads((tmp_path / "seen-py.json").read_text())
    task_env = seen["env"]
    # `#!/usr/bin/env python3` found the system's Python on the daemon's PATH, not ours.
    assert not seen["python"].startswith(str(Path(VENV_BIN).parent)), seen["python"]
    assert task_env["PATH"] == SYSTEM_PATH + os.pathsep + VENV_BIN  # ours only at the end
    assert task_env["OWNER_SETTING"] == "kept"
    leaked = [k for k in task_env if k in ("NOTIFY_SOCKET", "JOURNAL_STREAM")]
    leaked += [k for k in task_env if k.startswith(("WATCHDOG_", "LISTEN_"))]
    assert leaked == []
    # MOLTSCHED_PYTHON has the checkpoint module, whatever the script's own Python is.
    checked = subprocess.run(
        [task_env["MOLTSCHED_PYTHON"], "-c", "import scheduler_core.checkpoint"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    # No #! line: bash, as before. `#!/bin/sh -e`: sh, with its argument.
    assert json.loads((tmp_path / "seen-sh.json").read_text())["bash"]
    she = json.loads((tmp_path / "seen-sh-e.json").read_text())
    assert she["bash"] == "" and "e" in she["shell_opts"]


def test_validate_looks_at_a_named_pipe_without_waiting_on_it(tmp_path: Path) -> None:
    """An executable named pipe where a command's program belongs (a task may make one in
    tasks_dir): validate, reload and the daemon's start read it to warn about its #! line,
    and waited for a writer for ever."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    os.mkfifo(tasks / "pipe")
    (tasks / "pipe").chmod(0o755)
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: p, command: [./pipe], every: 1h}\n")
    done = cli("--json", "validate", config=config, timeout=20)
    assert done.returncode == 0, done.stderr
    (warning,) = json.loads(done.stdout)["warnings"]
    said = f"{tasks / 'pipe'} is not a regular file, so no run can start it"
    assert warning == f"tasks[0].command: {said}"


def test_path_is_left_alone_when_moltsched_is_already_on_it() -> None:
    path = os.pathsep.join([VENV_BIN, SYSTEM_PATH])
    assert task_environment({"PATH": path})["PATH"] == path
    later = os.pathsep.join([SYSTEM_PATH, VENV_BIN])
    assert task_environment({"PATH": later})["PATH"] == later
    env = task_environment({"PATH": SYSTEM_PATH})
    assert env["PATH"].split(os.pathsep)[-1] == VENV_BIN
    assert env["MOLTSCHED_PYTHON"] == sys.executable


def test_the_shebang_line_is_read_as_the_kernel_reads_it(tmp_path: Path) -> None:
    cases = {
        "#!/usr/bin/env python3\nprint(1)\n": ("/usr/bin/env", "python3"),
        "#! /bin/sh -e -u\n": ("/bin/sh", "-e -u"),  # one argument, as the kernel passes it
        "#!/usr/bin/env python3\r\nprint(1)\r\n": ("/usr/bin/env", "python3"),
        "echo no shebang\n": ("bash",),
        "#!\n": ("bash",),
        # A byte-order mark ("UTF-8 with BOM", as some editors save) hides the line from the
        # kernel, not from the person who wrote it.
        "\ufeff#!/usr/bin/env python3\nprint(1)\n": ("/usr/bin/env", "python3"),
        "\ufeffecho no shebang\n": ("bash",),
    }
    for i, (text, expected) in enumerate(cases.items()):
        script = tmp_path / f"s{i}"
        script.write_text(text)
        assert script_argv(str(script)) == (*expected, str(script)), text
    assert script_argv(str(tmp_path / "missing")) == ("bash", str(tmp_path / "missing"))


def test_an_edited_shebang_line_applies_at_the_next_run(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n")
    assert script_argv(str(script)) == ("/bin/sh", str(script))
    assert script_argv(str(script)) == ("/bin/sh", str(script))  # known: not read again
    with open(script, "r+b") as f:  # edited in place
        f.write(b"#!/bin/zsh\n")
    assert script_argv(str(script)) == ("/bin/zsh", str(script))
    replaced = tmp_path / "new"
    replaced.write_text("echo no shebang\n")
    os.replace(replaced, script)  # as editors save: a new file under the old name
    assert script_argv(str(script)) == ("bash", str(script))
    script.unlink()
    assert script_argv(str(script)) == ("bash", str(script))


def test_validate_warns_about_what_would_fail_at_run_time(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "crlf.sh").write_bytes(b"echo one\r\necho two\r\n")
    (tasks / "looks-python.sh").write_text("import json\nprint(json.dumps({}))\n")
    (tasks / "fine.sh").write_text("echo fine\n")
    (tasks / "fine.py").write_text("#!/usr/bin/env python3\nimport json\n")
    (tasks / "bom.py").write_text("\ufeff#!/usr/bin/env python3\nprint('bom ok')\n")
    (tasks / "noexec.sh").write_text("#!/bin/sh\necho x\n")
    (tasks / "exec.sh").write_text("#!/bin/sh\necho x\n")
    (tasks / "exec.sh").chmod(0o755)
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n"
        "  - {id: crlf, script: crlf.sh, every: 1h}\n"
        "  - {id: py, script: looks-python.sh, every: 1h}\n"
        "  - {id: fine, script: fine.sh, every: 1h}\n"
        "  - {id: finepy, script: fine.py, every: 1h}\n"
        "  - {id: noexec, command: [./noexec.sh], every: 1h}\n"
        "  - {id: exec, command: [./exec.sh, arg], every: 1h}\n"
        "  - {id: nowhere, command: [no-such-program-here], every: 1h}\n"
        "  - {id: onpath, command: [echo], every: 1h}\n"
        "  - {id: bare, command: [exec.sh], every: 1h}\n"
        "  - {id: bom, script: bom.py, every: 1h}\n"
        "  - {id: cbom, command: [./bom.py], every: 1h}\n"
        "  - {id: noline, command: [./looks-python.sh], every: 1h}\n"
    )
    for file in ("bom.py", "looks-python.sh"):
        (tasks / file).chmod(0o755)
    result = cli("--json", "validate", config=config)
    assert result.returncode == 0, result.stderr  # warnings, not problems
    report = json.loads(result.stdout)
    assert report["valid"] is True
    warnings = report["warnings"]
    places = [w.split(":")[0] for w in warnings]
    assert places == [
        "tasks[0].script",
        "tasks[1].script",
        "tasks[4].command",
        "tasks[6].command",
        "tasks[8].command",
        "tasks[9].script",
        "tasks[10].command",
        "tasks[11].command",
    ]
    text = "\n".join(warnings)
    assert "CRLF" in text and "looks like Python" in text and "#!/usr/bin/env python3" in text
    assert "chmod +x" in text and "not found on PATH" in text
    # A task's own program named bare is looked up on PATH, not in tasks_dir: said how to name it.
    assert "'exec.sh' is not found on PATH (tasks_dir's is ./exec.sh)" in text
    # A byte-order mark is named as what it is, not as a missing #! line; the script still runs
    # with the interpreter its line names.
    bom = next(w for w in warnings if w.startswith("tasks[9]"))
    assert "byte-order mark" in bom and "no #! line" not in bom, bom
    # A program run by the system itself must have its #! line first.
    assert "byte-order mark" in next(w for w in warnings if w.startswith("tasks[10]"))
    assert "has no #! line" in next(w for w in warnings if w.startswith("tasks[11]"))
    ran = cli("run", "bom", config=config)
    assert ran.returncode == 0 and "bom ok" in ran.stdout, ran.stdout + ran.stderr
    # The same, for a person: one line each on stderr.
    result = cli("validate", config=config)
    assert result.returncode == 0
    assert sum("warning: tasks[" in ln for ln in result.stderr.splitlines()) == 8
    shutil.rmtree(tasks)  # every run starts there, a command's too
    config.write_text("tasks:\n  - {id: onpath, command: [echo], every: 1h}\n")
    gone = json.loads(cli("--json", "validate", config=config).stdout)["warnings"]
    assert gone == [f"tasks_dir: {tasks} is not a folder, so no task can start; make it"]


def test_moltsched_is_found_on_a_path_as_shutil_finds_it(tmp_path: Path) -> None:
    import shutil

    from scheduler_core.shebang import which

    plain, runnable, folder, linked = (tmp_path / n for n in ("plain", "runnable", "dir", "link"))
    for d in (plain, runnable, folder, linked):
        d.mkdir()
    (plain / "moltsched").write_text("not executable\n")
    (runnable / "moltsched").write_text("#!/bin/sh\n")
    (runnable / "moltsched").chmod(0o755)
    (folder / "moltsched").mkdir(mode=0o755)  # a folder is searchable, not a program
    (linked / "moltsched").symlink_to(runnable / "moltsched")
    paths = [
        f"{plain}:{folder}:{runnable}",
        f"{folder}:{linked}:{runnable}",
        f"{plain}:{folder}",
        f"{tmp_path / 'missing'}::{runnable}",
        "",
        f"{runnable}:{runnable}",
    ]
    found = [which("moltsched", p) for p in paths]
    assert found == [shutil.which("moltsched", path=p) for p in paths]
    assert found[0] == str(runnable / "moltsched") and found[2] is None


def test_validate_and_doctor_warn_of_an_alert_fallback_that_cannot_start(tmp_path: Path) -> None:
    """The fallback runs when Signal has failed: one that cannot start was found only then,
    with the alert it was for. A `~` in a command was "no such file" under tasks_dir."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "notify.sh").write_text("#!/bin/sh\ncat\n")  # not executable
    config = tmp_path / "moltsched.yaml"
    cases = {
        "no-such-notifier": "'no-such-notifier' is not found on PATH",
        "~/bin/notify": "'~/bin/notify': ~ is not your home folder here (no shell reads the "
        "command); write the whole path",
        "./notify.sh": "'./notify.sh' is found from the folder the daemon starts in; write the "
        "whole path",
        str(tmp_path / "notify.sh"): f"{tmp_path / 'notify.sh'} is not executable",
        "/bin/cat": None,
        "cat": None,
    }
    for program, said in cases.items():
        config.write_text(
            f"alerts: {{fallback_command: ['{program}', '-t', alert]}}\n"
            "tasks:\n  - {id: a, command: ['~/bin/task.sh'], every: 1h}\n"
        )
        report = json.loads(cli("--json", "validate", config=config).stdout)
        assert report["valid"] is True
        task = "tasks[0].command: '~/bin/task.sh': ~ is not your home folder here"
        assert report["warnings"][0].startswith(task), report["warnings"]
        found = report["warnings"][1:]
        assert found == ([] if said is None else [f"alerts.fallback_command: {said}"]) or (
            said is not None and len(found) == 1 and said in found[0]
        ), (program, found)
        doctor = json.loads(cli("--json", "doctor", config=config).stdout)
        alerts = [c for c in doctor["checks"] if c["name"] == "alerts"]
        assert (said is None) == (alerts == []), (program, alerts)
        if said is not None:
            assert alerts[0]["status"] == "warn" and said in alerts[0]["detail"], alerts

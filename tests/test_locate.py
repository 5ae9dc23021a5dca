"""The CLI's quick look for the state directory agrees with the real loader, or declines."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from config.loader import load_config
from config.locate import state_dir_hint
from tests.helpers import MOLTSCHED


@pytest.mark.parametrize(
    "line",
    [
        "state_dir: st",
        "state_dir: 'st'",
        'state_dir: "st"',
        "state_dir: st   # where the database lives",
        '"state_dir": st',
    ],
)
def test_hint_matches_the_loader(tmp_path: Path, line: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"# config\n{line}\ntasks: []\n")
    assert state_dir_hint(path) == load_config(path).settings.state_dir


def test_hint_reads_lines_as_yaml_does(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"# config\r\nstate_dir: st\r\ntasks: []\r\n")
    assert state_dir_hint(path) == tmp_path / "st" == load_config(path).settings.state_dir
    path.write_bytes(b"tasks: []\rstate_dir: st # mac\r")
    assert state_dir_hint(path) == tmp_path / "st" == load_config(path).settings.state_dir


def test_default_when_absent_and_json(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("tasks:\n  - id: a\n    env:\n      state_dir: not-this\n")
    assert state_dir_hint(path) == tmp_path / "state"
    js = tmp_path / "c.json"
    js.write_text('{"state_dir": "x", "tasks": []}')
    assert state_dir_hint(js) == tmp_path / "x"


@pytest.mark.parametrize(
    "text",
    [
        "{state_dir: x, tasks: []}\n",
        "state_dir: &anchor x\n",
        "state_dir: [x]\n",
        "state_dir: a\nstate_dir: b\n",
        'state_dir: "a\\"b"\n',
    ],
)
def test_unusual_files_are_left_to_the_real_parser(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert state_dir_hint(path) is None


def test_missing_file(tmp_path: Path) -> None:
    assert state_dir_hint(tmp_path / "none.yaml") is None


def test_the_configuration_is_found_where_servers_keep_it(tmp_path: Path) -> None:
    """--config, $MOLTSCHED_CONFIG, ./config/moltsched.yaml, $XDG_CONFIG_HOME/moltsched/,
    /etc/moltsched/: the first there wins; with none, the error names every place."""
    import json
    import os
    import subprocess

    from config.locate import SYSTEM_CONFIG
    from tests.helpers import MOLTSCHED

    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine")
    here, xdg = tmp_path / "here", tmp_path / "xdg"
    here.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MOLTSCHED_CONFIG"}
    env["XDG_CONFIG_HOME"] = str(xdg)

    def validate(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MOLTSCHED, *args, "--json", "validate"],
            cwd=here,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=30,
        )

    nothing = validate()
    assert nothing.returncode == 2
    for place in (here / "config" / "moltsched.yaml", xdg / "moltsched" / "moltsched.yaml"):
        assert str(place) in nothing.stderr
    assert str(SYSTEM_CONFIG) in nothing.stderr and "--config" in nothing.stderr
    answer = json.loads(nothing.stdout)
    assert answer["kind"] == "config" and len(answer["looked"]) == 3

    def place(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("tasks: []\n")
        return path

    user = place(xdg / "moltsched" / "moltsched.yaml")
    assert json.loads(validate().stdout)["path"] == str(user)
    local = place(here / "config" / "moltsched.yaml")
    assert json.loads(validate().stdout)["path"] == str(local)
    named = place(tmp_path / "named.yaml")
    assert json.loads(validate(MOLTSCHED_CONFIG=str(named)).stdout)["path"] == str(named)
    flag = place(tmp_path / "flag.yaml")
    chosen = validate("--config", str(flag), MOLTSCHED_CONFIG=str(named))
    assert json.loads(chosen.stdout)["path"] == str(flag)


def test_a_working_folder_removed_under_the_shell_is_no_place_to_look(tmp_path: Path) -> None:
    """A shell whose folder was removed (a release directory replaced, a `rm -rf` of a
    checkout): `moltsched status` said "cannot use: No such file or directory", exit 3. The
    folder's `config/` is simply not there: the next places are looked at."""
    import json
    import os
    import subprocess

    from tests.helpers import MOLTSCHED

    gone, xdg = tmp_path / "gone", tmp_path / "xdg"
    (xdg / "moltsched").mkdir(parents=True)
    (xdg / "moltsched" / "moltsched.yaml").write_text("tasks: []\n")
    gone.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MOLTSCHED_CONFIG"}
    done = subprocess.run(
        ["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "{MOLTSCHED}" --json validate'],
        env=env | {"XDG_CONFIG_HOME": str(xdg)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(xdg / "moltsched" / "moltsched.yaml")


def test_a_configuration_from_a_pipe_is_read_once(tmp_path: Path) -> None:
    """`moltsched --config <(sops -d moltsched.yaml) status`: a pipe can be read once, and
    each command read the file twice (for its state directory, then whole), so it saw an
    empty file the second time and looked for its state under /proc."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("echo from a pipe\n")
    text = (
        f"state_dir: {tmp_path / 'state'}\ntasks_dir: {tmp_path / 'tasks'}\n"
        "tasks:\n  - {id: a, script: a.sh, every: 1h}\n"
    )
    for args in (["--json", "status"], ["run", "a"]):
        read, write = os.pipe()
        os.write(write, text.encode())
        os.close(write)
        try:
            done = subprocess.run(
                [MOLTSCHED, "--config", f"/dev/fd/{read}", *args],
                pass_fds=(read,),
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            os.close(read)
        assert done.returncode == 0, done.stderr
    assert (
        json.loads(
            subprocess.run(
                [MOLTSCHED, "--config", str(_write(tmp_path, text)), "--json", "status"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        )["tasks"][0]["run_count"]
        == 1
    )


def _write(root: Path, text: str) -> Path:
    path = root / "moltsched.yaml"
    path.write_text(text)
    return path


def test_a_configuration_that_is_a_pipe_no_one_writes_to_is_refused_not_waited_on(
    tmp_path: Path,
) -> None:
    """A named pipe at the configuration's path whose writer never comes: opened to be read,
    it waited for ever, the daemon deaf to SIGTERM meanwhile. Now, past PIPE_WAIT_S with
    nothing written, it is a configuration problem (exit 2) like any file that cannot be
    read; a writer that does come (`sops exec-file`, which hands the file over a named pipe)
    is read as before."""
    fifo = tmp_path / "moltsched.yaml"
    os.mkfifo(fifo)
    started = [
        subprocess.Popen(
            [MOLTSCHED, "--config", str(fifo), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (["status"], ["daemon"])
    ]
    try:
        for proc in started:
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 2, (out, err)
            assert "a pipe no one wrote to" in err and "Traceback" not in err, err
    finally:
        for proc in started:
            proc.kill()
            proc.wait()

    (tmp_path / "tasks").mkdir()
    writer = subprocess.Popen(
        ["sh", "-c", f'sleep 0.5; printf "tasks: []\\n" > "{fifo}"'], start_new_session=True
    )
    try:
        done = subprocess.run(
            [MOLTSCHED, "--config", str(fifo), "--json", "status"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0 and json.loads(done.stdout)["task_count"] == 0, done.stderr
    finally:
        writer.wait(timeout=10)

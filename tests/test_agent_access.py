"""The agent as a first-class user (issue 12, point 1), with real Unix users: the daemon runs as
a service user, the agent is in `control.group`, a stranger is not. Who did what is what the
kernel says (SO_PEERCRED), whatever the client writes in its request."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import MOLTSCHED, processes_of, query, running_program, wait_sync
from tests.unix_users import (
    FOLDERS,
    User,
    moltsched_as,
    need_root,
    popen_as,
    run_as,
    sweep_leftovers,
    unix_group,
    unix_user,
    users_folder,
)

# A raw request claiming to be root; the daemon must record who really sent it.
FORGED = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"command": {"verb": "pause", "task": "tick"}, "actor": "cli:root"}).encode()
          + b"\\n")
s.shutdown(socket.SHUT_WR)
print(s.recv(65536).decode())
"""


@pytest.fixture
def world() -> Iterator[tuple[Path, str, User, User, User]]:
    """(root folder, group, service user, agent, stranger), removed after."""
    with (
        unix_group() as group,
        unix_user((group,)) as service,
        unix_user((group,)) as agent,
        unix_user() as stranger,
        users_folder() as root,
    ):
        (root / "tasks").mkdir()
        (root / "tasks" / "tick.sh").write_text("echo tick\n")
        # As systemd's StateDirectoryMode=0700 leaves it: only the service user.
        (root / "state").mkdir(mode=0o700)
        for path in (root, root / "tasks", root / "state"):
            os.chown(path, service.uid, service.gid)
        yield root, group, service, agent, stranger


def group_daemon(
    root: Path, group: str, service: User
) -> tuple[Path, subprocess.Popen[bytes], Path]:
    """The daemon, as `service`, on a configuration with `control.group` set to `group`:
    (configuration, process, log)."""
    config = root / "moltsched.yaml"
    config.write_text(
        f"control:\n  group: {group}\ntasks:\n  - {{id: tick, script: tick.sh, every: 1h}}\n"
    )
    config.chmod(0o644)
    argv, env = moltsched_as(service)
    log = root / "daemon.log"
    with open(log, "wb") as err:
        daemon = popen_as(service, [*argv, "--config", str(config), "daemon"], env, err)
    return config, daemon, log


def test_members_of_control_group_use_it_and_everyone_else_is_refused(
    world: tuple[Path, str, User, User, User],
) -> None:
    root, group, service, agent, stranger = world
    config, daemon, log = group_daemon(root, group, service)
    try:
        sock = root / "state" / "control.sock"
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
        # The daemon opened the socket and the state directory to the group, no further.
        info = sock.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == _gid(group)
        state = (root / "state").stat()
        assert state.st_gid == _gid(group) and stat.S_IMODE(state.st_mode) == 0o710

        agent_argv, agent_env = moltsched_as(agent)
        done = run_as(agent, [*agent_argv, "--config", str(config), "--json", "status"], agent_env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["running"] is True
        done = run_as(
            agent, [*agent_argv, "--config", str(config), "--json", "run", "TICK"], agent_env
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["outcome"] == "success"

        # A request that claims to be root is recorded as the agent's.
        system_python = agent_argv[0] if agent_argv[0].endswith("python3") else "python3"
        forged = run_as(agent, [system_python, "-c", FORGED, str(sock)], {})
        assert forged.returncode == 0, forged.stderr
        db = root / "state" / "moltsched.db"
        actors = {a for (a,) in query(db, "SELECT actor FROM log WHERE actor IS NOT NULL")}
        assert f"cli:{agent.name}" in actors and "cli:root" not in actors
        logs = run_as(agent, [*agent_argv, "--config", str(config), "--json", "logs"], agent_env)
        entries = json.loads(logs.stdout)
        paused = next(e for e in entries if e["action"] == "paused")
        assert paused["actor"] == f"cli:{agent.name}"
        ran = next(e for e in entries if e["message"] == "run:tick")  # as configured
        assert ran["actor"] == f"cli:{agent.name}" and ran["action"] == "command"
        text = run_as(agent, [*agent_argv, "--config", str(config), "logs"], agent_env).stdout
        assert f"cli:{agent.name}" in text

        # A stranger: exit 3, one line on stderr, and under --json a JSON error on stdout.
        stranger_argv, stranger_env = moltsched_as(stranger)
        for extra in (["--json"], []):
            done = run_as(
                stranger, [*stranger_argv, "--config", str(config), *extra, "status"], stranger_env
            )
            assert done.returncode == 3, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
            if extra:
                error = json.loads(done.stdout)
                assert error["kind"] == "permission" and "control.group" in error["error"]
            else:
                assert done.stdout == ""
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0
    assert "members of group" in log.read_text()


def test_members_of_control_group_reach_the_socket_and_nothing_more(
    world: tuple[Path, str, User, User, User],
) -> None:
    """The group may search the state directory, to reach the socket. The database files
    were 0644, SQLite's mode: through the directory, the agent read every task's output and
    checkpoint, and could hold a read transaction that keeps the daemon's WAL from being
    checkpointed. They are the daemon's alone now, one an earlier version made included,
    and doctor, run by a member, no longer tells it to become a member."""
    root, group, service, agent, _ = world
    db = root / "state" / "moltsched.db"
    sqlite3.connect(db).close()  # as an earlier version left it: 0644
    for made in root.glob("state/moltsched.db*"):
        os.chown(made, service.uid, service.gid)
        made.chmod(0o644)
    config, daemon, log = group_daemon(root, group, service)
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
        files = sorted(p.name for p in (root / "state").glob("moltsched.db*"))
        assert files == ["moltsched.db", "moltsched.db-shm", "moltsched.db-wal"]
        for name in files:
            mode = stat.S_IMODE((root / "state" / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
        agent_argv, agent_env = moltsched_as(agent)
        python = agent_argv[0] if agent_argv[0].endswith("python3") else "python3"
        peek = run_as(agent, [python, "-c", f"open({str(db)!r}, 'rb')"], {})
        assert peek.returncode != 0 and "PermissionError" in peek.stderr, peek.stderr
        assert run_as(agent, [*agent_argv, "--config", str(config), "status"], agent_env).stdout
        done = run_as(agent, [*agent_argv, "--config", str(config), "--json", "doctor"], agent_env)
        assert done.returncode == 0, done.stdout + done.stderr
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        for name in ("state_dir", "database", "daemon"):
            assert checks[name]["status"] == "ok", checks[name]
        assert f"control.group {group}" in checks["database"]["detail"], checks["database"]
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0


def test_a_caller_who_can_reach_the_socket_but_is_not_allowed_is_refused(
    world: tuple[Path, str, User, User, User],
) -> None:
    """The kernel's word is checked again by the daemon: a socket opened to everyone by
    mistake still admits only the group."""
    root, group, service, _, stranger = world
    config = root / "moltsched.yaml"
    config.write_text(
        f"control:\n  group: {group}\ntasks:\n  - {{id: tick, script: tick.sh, every: 1h}}\n"
    )
    argv, env = moltsched_as(service)
    log = root / "daemon.log"
    with open(log, "wb") as err:
        daemon = popen_as(service, [*argv, "--config", str(config), "daemon"], env, err)
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
        sock = root / "state" / "control.sock"
        (root / "state").chmod(0o711)
        sock.chmod(0o666)  # the mistake
        stranger_argv, stranger_env = moltsched_as(stranger)
        for _ in range(3):  # an agent left out of the group, polling
            done = run_as(
                stranger,
                [*stranger_argv, "--config", str(config), "--json", "status"],
                stranger_env,
            )
            assert done.returncode == 3
            assert json.loads(done.stdout)["kind"] == "permission"
        db = root / "state" / "moltsched.db"
        wait_sync(
            lambda: (
                query(db, "SELECT actor FROM log WHERE action = 'denied'")
                == [(f"cli:{stranger.name}",)]
            ),
            10,
            "the denial in the action log",
        )
    finally:
        daemon.terminate()
        daemon.wait(20)
    # Refused again within the hour: counted, and the count logged as the daemon stops.
    assert query(db, "SELECT message FROM log WHERE action = 'denied' ORDER BY id")[1:] == [
        (f"control socket: cli:{stranger.name} refused 2 more time(s), not logged one by one",)
    ]


def _gid(group: str) -> int:
    import grp

    return grp.getgrnam(group).gr_gid


def test_json_errors_are_always_on_stdout(tmp_path: Path) -> None:
    """Every failure under --json: {"error", "kind"} on stdout, the exit code of DESIGN.md."""
    from tests.helpers import MOLTSCHED, cli

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.sh").write_text("exit 3\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: t, script: t.sh, every: 1h}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [{id: X}]\n")
    cases = [
        (["--json", "status", "nope"], config, 2, "unknown-task"),
        (["--json", "run", "nope"], config, 2, "unknown-task"),
        (["--json", "checkpoint", "show", "nope"], config, 2, "unknown-task"),
        (["--json", "checkpoint", "save", "t", "{not json"], config, 2, "usage"),
        (["--json", "status"], bad, 2, "config"),
        (["--json", "status"], tmp_path / "missing.yaml", 2, "config"),
        (["--json", "logs", "-n", "0"], config, 2, "usage"),
        (["--json", "output", "t", "99"], config, 2, "unknown-run"),
        (["--json", "run", "t"], config, 1, "failed"),
    ]
    for args, path, code, kind in cases:
        done = cli(*args, config=path)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        answer = json.loads(done.stdout)
        assert answer["kind"] == kind and answer["error"], (args, answer)
    # A usage error that argparse finds.
    done = subprocess.run(
        [MOLTSCHED, "--json", "status", "a", "b"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and json.loads(done.stdout)["kind"] == "usage"


@pytest.mark.parametrize("before", [None, 0o755])
def test_the_state_is_its_users_alone_without_systemd_too(
    world: tuple[Path, str, User, User, User], before: int | None
) -> None:
    """Task output, checkpoints and who sent what are in the database. systemd's
    StateDirectoryMode=0700 keeps them to the service user; started otherwise (`make run`,
    a user's own unit), the daemon made its state directory 0755 and the database 0644, and
    every user on the machine could read them. A state directory from then is closed too."""
    root, _, service, _, stranger = world
    state = root / "state"
    state.rmdir()
    if before is not None:
        state.mkdir(mode=before)
        state.chmod(before)
        os.chown(state, service.uid, service.gid)
    config = root / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: tick, script: tick.sh, every: 1h}\n")
    argv, env = moltsched_as(service)
    log = root / "daemon.log"
    with open(log, "wb") as err:
        daemon = popen_as(service, [*argv, "--config", str(config), "daemon"], env, err)
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
        db = state / "moltsched.db"
        wait_sync(lambda: query(db, "SELECT run_count FROM task")[0][0] == 1, 30, "a run")
        assert stat.S_IMODE(state.stat().st_mode) & 0o007 == 0
        for argv_ in (["cat", str(db)], ["ls", str(state)]):
            assert run_as(stranger, argv_, {}).returncode != 0, argv_
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0


def test_a_run_with_no_daemon_is_its_owners_to_start(
    world: tuple[Path, str, User, User, User],
) -> None:
    """With the daemon stopped, `sudo moltsched run TASK` as root ran the task as root: what it
    made (files, a cache) was root's, and the service user's next runs of it failed on them.
    A run in the foreground is now refused to anyone but the state directory's owner, with
    what to do instead; reads still work."""
    root, _, service, _, _ = world
    (root / "tasks" / "who.sh").write_text("id -un > who.txt\n")
    config = root / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: who, script: who.sh, cron: '0 0 1 1 *'}\n")
    config.chmod(0o644)
    argv, env = moltsched_as(service)
    made = run_as(service, [*argv, "--config", str(config), "status"], env)
    assert made.returncode == 0, made.stderr  # the service user's state, made by it
    done = subprocess.run(
        [MOLTSCHED, "--config", str(config), "run", "who"], capture_output=True, text=True
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"sudo -u {service.name}" in done.stderr and "Traceback" not in done.stderr
    assert not (root / "tasks" / "who.txt").exists()
    assert (
        subprocess.run(
            [MOLTSCHED, "--config", str(config), "status"], capture_output=True
        ).returncode
        == 0
    )
    ran = run_as(service, [*argv, "--config", str(config), "run", "who"], env)
    assert ran.returncode == 0, ran.stderr
    assert (root / "tasks" / "who.txt").read_text().strip() == service.name


@pytest.mark.parametrize("first", [("status",), ("logs",), ("checkpoint", "save", "tick", "{}")])
def test_a_database_that_root_made_first_is_the_service_users(
    world: tuple[Path, str, User, User, User], first: tuple[str, ...]
) -> None:
    """`sudo moltsched status` after installing, before the daemon's first start, made the
    database: root's, 0644. The daemon, as the service user, could then write nothing (no run
    started, and it said to run it as its own user, which it was). A database made by
    anyone is now its state directory owner's, and so are SQLite's -wal and -shm."""
    root, _, service, _, _ = world
    config = root / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: tick, script: tick.sh, every: 1h}\n")
    config.chmod(0o644)
    done = subprocess.run(
        [MOLTSCHED, "--config", str(config), *first], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    state = root / "state"
    for made in state.iterdir():
        assert (made.stat().st_uid, made.stat().st_gid) == (service.uid, service.gid), made
    argv, env = moltsched_as(service)
    ran = run_as(service, [*argv, "--config", str(config), "run", "tick"], env)
    assert ran.returncode == 0, ran.stderr
    assert query(state / "moltsched.db", "SELECT run_count FROM task") == [(1,)]


def test_a_database_root_made_before_says_whose_it_is(
    world: tuple[Path, str, User, User, User],
) -> None:
    """One made by root before the above (by an earlier version, or by hand): the service user
    was told to "run as the daemon's user", which it was. It hears whose the file is and the
    command that gives it back."""
    root, _, service, _, _ = world
    config = root / "moltsched.yaml"
    config.write_text("tasks:\n  - {id: tick, script: tick.sh, every: 1h}\n")
    config.chmod(0o644)
    db = root / "state" / "moltsched.db"
    sqlite3.connect(db).close()  # root's, as SQLite makes it
    argv, env = moltsched_as(service)
    done = run_as(service, [*argv, "--config", str(config), "--json", "run", "tick"], env)
    error = json.loads(done.stdout)
    assert done.returncode == 3 and error["kind"] == "permission", done.stdout
    assert f"it is root's, not {service.name}'s" in error["error"], error
    assert f"chown {service.name}: {db}*" in error["error"], error
    # doctor said the file was damaged ("no such table"): it is new, and not the daemon's.
    for doctor in (
        run_as(service, [*argv, "--config", str(config), "--json", "doctor"], env),
        subprocess.run(
            [MOLTSCHED, "--config", str(config), "--json", "doctor"], capture_output=True, text=True
        ),
    ):
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr
        (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "database"]
        assert check["status"] == "fail" and "root's" in check["detail"], check
        assert check["fix"] == f"chown {service.name}: {db}*", check


def test_with_the_daemon_down_the_agent_hears_that_not_permission(
    world: tuple[Path, str, User, User, User],
) -> None:
    """With no daemon, a command works on the database, which is the daemon user's alone.
    The agent (in control.group) was told "attempt to write a readonly database (no
    permission...)", kind `permission`, and so asked the owner for access it had; what was
    wrong is that the daemon was down. Now it hears that, kind `not-running`."""
    root, group, service, agent, _ = world
    config, daemon, log = group_daemon(root, group, service)  # it opens its state to the group
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0
    agent_argv, agent_env = moltsched_as(agent)
    for args in (["status"], ["logs"], ["status", "tick"], ["output", "tick"]):
        done = run_as(agent, [*agent_argv, "--config", str(config), "--json", *args], agent_env)
        error = json.loads(done.stdout)
        assert done.returncode == 3 and error["kind"] == "not-running", (args, done.stdout)
        assert "no daemon is running" in error["error"] and "systemctl start" in error["error"]


def test_while_the_daemon_starts_the_agent_hears_that_not_that_it_is_down(
    world: tuple[Path, str, User, User, User],
) -> None:
    """A daemon that starts after a crash first stops what the cut runs left, given their
    grace. The agent was told meanwhile that no daemon ran, to start it (kind
    `not-running`). It now hears that the daemon is there and not answering yet, kind
    `unavailable`: to ask again, not to have the owner start what is starting."""
    root, group, service, agent, _ = world
    (root / "tasks" / "slow.sh").write_text("trap '' TERM; sleep 600\n")
    config = root / "moltsched.yaml"
    config.write_text(
        f"control:\n  group: {group}\n"
        "tasks:\n  - {id: slow, script: slow.sh, every: 1h, grace: 10m}\n"
    )
    config.chmod(0o644)
    argv, env = moltsched_as(service)
    db = root / "state" / "moltsched.db"
    log = root / "daemon.log"
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(2):
            with open(log, "ab") as err:
                started.append(
                    popen_as(service, [*argv, "--config", str(config), "daemon"], env, err)
                )
            if len(started) == 1:  # crashed once its slow run goes
                wait_sync(lambda: running_program(db, "slow", "sleep"), 30, "slow to run")
                started[0].kill()
                started[0].wait()
        wait_sync(lambda: "cut short by a crash" in log.read_text(), 30, "the recovery")
        agent_argv, agent_env = moltsched_as(agent)
        for args in (["status"], ["pause", "slow"]):
            done = run_as(agent, [*agent_argv, "--config", str(config), "--json", *args], agent_env)
            error = json.loads(done.stdout)
            assert done.returncode == 3 and error["kind"] == "unavailable", (args, done.stdout)
            assert f"(pid {started[1].pid})" in error["error"], error
    finally:
        for pid in processes_of(db, {"slow"}):
            os.kill(pid, signal.SIGKILL)
        for proc in started:
            proc.terminate()
            proc.wait(30)


def test_the_agent_needs_no_read_access_to_the_configuration(
    world: tuple[Path, str, User, User, User],
) -> None:
    """The deploy recipe made the configuration readable by the agent's group, or none of
    the agent's commands worked: they read the file to find the daemon. So the agent could
    read every task's `env:` (API tokens, passwords). Now a file it may not read is run by
    the daemon found where such a file keeps its state by default, when that daemon says it
    runs this very file; the file can stay its owner's alone."""
    root, group, service, agent, stranger = world
    config, daemon, log = group_daemon(root, group, service)
    config.chmod(0o600)
    os.chown(config, service.uid, service.gid)
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
        argv, env = moltsched_as(agent)
        for args in (["status"], ["run", "tick"], ["logs", "-n", "2"]):
            done = run_as(agent, [*argv, "--config", str(config), "--json", *args], env)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            json.loads(done.stdout)
        # A stranger still gets no further than before.
        argv, env = moltsched_as(stranger)
        done = run_as(stranger, [*argv, "--config", str(config), "--json", "status"], env)
        assert done.returncode == 3, done.stdout
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0
    # With the daemon down, the agent hears that, and that the file is not its to read.
    argv, env = moltsched_as(agent)
    done = run_as(agent, [*argv, "--config", str(config), "--json", "status"], env)
    error = json.loads(done.stdout)
    assert done.returncode == 3 and error["kind"] == "permission", error
    assert (
        "no daemon that runs it answers" in error["error"] and "systemctl start" in error["error"]
    )


def test_the_agent_reads_and_saves_checkpoints_through_the_daemon(
    world: tuple[Path, str, User, User, User],
) -> None:
    """`checkpoint` worked on the database directly, whoever asked: the agent, in
    `control.group`, could not write it ("attempt to write a readonly database ... run as the
    daemon's user"). With the daemon up it answers `checkpoint` as every other command, for
    whoever may use its socket; a task's own save in its run still goes straight to the file."""
    root, group, service, agent, stranger = world
    config, daemon, log = group_daemon(root, group, service)
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
        argv, env = moltsched_as(agent)
        for args, out in (
            (["checkpoint", "save", "tick", '{"page": 3}'], {"page": 3}),
            (["checkpoint", "show", "tick"], {"page": 3}),
            (["checkpoint", "clear", "tick"], None),
            (["checkpoint", "show", "tick"], None),
        ):
            done = run_as(agent, [*argv, "--config", str(config), "--json", *args], env)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            assert json.loads(done.stdout) == out, (args, done.stdout)
        saved = subprocess.run(
            [*argv, "--config", str(config), "checkpoint", "save", "tick", "-"],
            input='{"from": "stdin"}',
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            user=agent.uid,
            group=agent.gid,
            extra_groups=agent.groups(),
            cwd="/",
        )
        assert saved.returncode == 0 and saved.stdout == "", saved.stdout + saved.stderr
        shown = run_as(agent, [*argv, "--config", str(config), "checkpoint", "show", "tick"], env)
        assert shown.stdout == '{\n  "from": "stdin"\n}\n', shown.stdout
        entries = query(
            root / "state" / "moltsched.db",
            "SELECT message, actor FROM log WHERE action = 'command'",
        )
        assert ("checkpoint save:tick", f"cli:{agent.name}") in entries, entries
        argv, env = moltsched_as(stranger)
        done = run_as(stranger, [*argv, "--config", str(config), "checkpoint", "show", "tick"], env)
        assert done.returncode == 3, done.stdout + done.stderr
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0


@pytest.fixture
def system_places() -> Iterator[tuple[Path, Path]]:
    """/etc/moltsched and /var/lib/moltsched, as an installation has them: made for the test
    and removed after; skipped where either exists (a real installation)."""
    etc, var = Path("/etc/moltsched"), Path("/var/lib/moltsched")
    if etc.exists() or var.exists() or os.geteuid() != 0:
        pytest.skip("needs root, and no moltsched installed on this machine")
    try:
        yield etc, var
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)


def test_the_agent_finds_the_daemon_when_the_configurations_folder_is_closed_to_it(
    world: tuple[Path, str, User, User, User], system_places: tuple[Path, Path]
) -> None:
    """An owner who keeps /etc/moltsched to the service user (0700: the tasks' `env:` may hold
    tokens) left the agent with "no configuration found" (the folder could not be searched,
    so the file was taken for missing), or with `--config` "cannot use ...: Permission
    denied". Such a file is now one it may not read, and its daemon is asked where such a file
    keeps its state (/var/lib/moltsched)."""
    root, group, service, agent, stranger = world
    etc, var = system_places
    (etc / "tasks").mkdir(parents=True)
    (etc / "tasks" / "tick.sh").write_text("echo tick\n")
    (etc / "moltsched.yaml").write_text(  # as deploy/moltsched.example.yaml has it
        f"state_dir: {var}\ncontrol: {{group: {group}}}\n"
        "tasks:\n  - {id: tick, script: tick.sh, every: 1h}\n"
    )
    var.mkdir(mode=0o700)
    for path in (etc, etc / "tasks", etc / "moltsched.yaml", var):
        os.chown(path, service.uid, service.gid)
    etc.chmod(0o700)
    argv, env = moltsched_as(service)
    log = root / "daemon.log"
    with open(log, "wb") as err:
        daemon = popen_as(service, [*argv, "daemon"], env, err)  # found in /etc by itself
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 30, "the daemon")
        argv, env = moltsched_as(agent)
        for config in ([], ["--config", str(etc / "moltsched.yaml")]):
            done = run_as(agent, [*argv, *config, "--json", "status"], env)
            assert done.returncode == 0, (config, done.stdout, done.stderr)
            assert json.loads(done.stdout)["task_count"] == 1
        # Anyone else hears that they may not, not that no daemon runs.
        argv_, env_ = moltsched_as(stranger)
        done = run_as(stranger, [*argv_, "--json", "status"], env_)
        error = json.loads(done.stdout)
        assert done.returncode == 3 and error["kind"] == "permission", done.stdout
        assert "control.group" in error["error"] and "start the daemon" not in error["error"]
    finally:
        daemon.terminate()
        assert daemon.wait(20) == 0
    done = run_as(agent, [*argv, "--json", "status"], env)
    error = json.loads(done.stdout)
    assert done.returncode == 3 and error["kind"] == "permission", done.stdout
    assert "in a folder not yours to search" in error["error"], error


def test_what_a_killed_test_run_made_is_removed_by_the_next() -> None:
    """A test run killed mid-test cannot remove its users; the next run removes them, and
    leaves alone those of a run still going (here: this one's)."""
    need_root()
    ended = subprocess.Popen(["true"])
    ended.wait()
    name = f"mt-u{ended.pid:x}-0a0b0c"
    argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
    subprocess.run([*argv, name], check=True)
    folder = FOLDERS / f"moltsched-users-{ended.pid:x}-left"
    folder.mkdir()
    try:
        with unix_user() as ours, users_folder() as our_folder:
            sweep_leftovers.cache_clear()
            sweep_leftovers()
            assert name not in {u.pw_name for u in pwd.getpwall()}
            assert name not in {g.gr_name for g in grp.getgrall()}
            assert not folder.exists()
            assert pwd.getpwnam(ours.name).pw_uid == ours.uid
            assert our_folder.is_dir()
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

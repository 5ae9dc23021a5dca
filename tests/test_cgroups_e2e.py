"""A cgroup per run where the daemon is given a delegated one (systemd `Delegate=yes` marks
it `user.delegate`): helpers that clear their environment and leave the process tree while
other runs are going, which nothing else can tell apart, go with their run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import MOLTSCHED, alive, query, wait_sync


def cgroup2_root() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if " - cgroup2 " in line:
            return Path(line.split()[4])
    return None


@pytest.fixture
def delegated(tmp_path: Path) -> Iterator[Path]:
    """A cgroup marked as systemd marks a delegated one; removed afterwards."""
    root = cgroup2_root()
    if root is None or (not (root / "cgroup.kill").exists() and not os.access(root, os.W_OK)):
        pytest.skip("no writable cgroup v2 hierarchy here")
    base = root / f"moltsched-test-{os.getpid()}-{tmp_path.name}"
    try:
        base.mkdir()
        os.setxattr(base, "user.delegate", b"1")
    except OSError as exc:
        pytest.skip(f"cannot make a delegated cgroup here: {exc}")
    if not (base / "cgroup.kill").exists():
        base.rmdir()
        pytest.skip("the kernel has no cgroup.kill (Linux 5.14+)")
    yield base
    for child in sorted(base.iterdir(), reverse=True):
        if child.is_dir():
            child.rmdir()
    base.rmdir()


def test_each_run_has_a_cgroup_and_nothing_leaves_it(tmp_path: Path, delegated: Path) -> None:
    (tmp_path / "tasks").mkdir()
    for name in ("a", "b"):
        # A helper that clears its environment and leaves the session, while the other
        # task runs too: no tag, no group, no single run to claim it.
        (tmp_path / "tasks" / f"{name}.sh").write_text(
            f"env -i setsid /bin/sleep 600 & echo $! > {tmp_path}/{name}.pid\nsleep 1\n"
        )
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n  - {id: a, script: a.sh, every: 1h}\n  - {id: b, script: b.sh, every: 1h}\n"
    )
    db = tmp_path / "state" / "moltsched.db"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as err:
        daemon = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                'echo $$ > "$0/cgroup.procs" && exec "$@"',
                str(delegated),
                MOLTSCHED,
                "--config",
                str(config),
                "daemon",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_sync(lambda: "daemon running" in log.read_text(), 20, "the daemon")
        supervisor = (delegated / "supervisor" / "cgroup.procs").read_text().split()
        assert str(daemon.pid) in supervisor
        wait_sync(
            lambda: query(db, "SELECT COUNT(*) FROM run WHERE outcome = 'success'") == [(2,)],
            20,
            "both runs",
        )
        for name in ("a", "b"):
            helper = int((tmp_path / f"{name}.pid").read_text())
            assert not alive(helper), name
        messages = [m for (m,) in query(db, "SELECT message FROM log WHERE action = 'completed'")]
        assert all("left behind and stopped:" in m for m in messages), messages
        assert sorted(p.name for p in delegated.iterdir() if p.is_dir()) == ["supervisor"]
        assert "each run gets a cgroup of its own" in log.read_text()
    finally:
        daemon.terminate()
        assert daemon.wait(30) == 0
    assert "Traceback" not in log.read_text()

"""Real Unix users and groups for permission tests: made with useradd/groupadd, removed after.

Their names (and the folders made for them) carry the pid of the test run that made them, in
hex: a run that is killed cannot remove what it made, so the next run removes what a run that
is gone left behind (`sweep_leftovers`), and leaves alone what a run still going uses.

Running moltsched as another user needs an interpreter that user may execute. The venv's
may live under a folder only root can enter (pyenv under /root); then the system's Python of
the same version runs the checkout with the venv's packages on PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import MOLTSCHED, REPO

SYSTEM_PYTHON = "/usr/bin/python3"
FOLDERS = Path(tempfile.gettempdir())
_MADE = re.compile(r"mt-[ug]([0-9a-f]+)-[0-9a-f]+")
_FOLDER = re.compile(r"moltsched-users-([0-9a-f]+)-")


def need_root() -> None:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("making Unix users needs root and useradd")
    sweep_leftovers()


def _name(kind: str) -> str:
    return f"mt-{kind}{os.getpid():x}-{secrets.token_hex(3)}"


def _gone(maker: re.Match[str] | None) -> bool:
    """Whether the name was made by a test run that is no longer running."""
    if maker is None:
        return False
    try:
        os.kill(int(maker[1], 16), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@functools.cache
def sweep_leftovers() -> None:
    """Remove the users, groups and folders of test runs that were killed before they could."""
    for user in pwd.getpwall():
        if _gone(_MADE.fullmatch(user.pw_name)):
            subprocess.run(["userdel", user.pw_name], check=False, capture_output=True)
    for group in grp.getgrall():
        if _gone(_MADE.fullmatch(group.gr_name)):
            subprocess.run(["groupdel", group.gr_name], check=False, capture_output=True)
    for folder in FOLDERS.iterdir():
        if _gone(_FOLDER.match(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def users_folder() -> Iterator[Path]:
    """A new folder under /tmp (mode 0755) for files the test's users own; removed after."""
    root = Path(tempfile.mkdtemp(prefix=f"moltsched-users-{os.getpid():x}-", dir=FOLDERS))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def groups(self) -> list[int]:
        return os.getgrouplist(self.name, self.gid)


@contextlib.contextmanager
def unix_group() -> Iterator[str]:
    need_root()
    name = _name("g")
    subprocess.run(["groupadd", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], check=False)


@contextlib.contextmanager
def unix_user(groups: tuple[str, ...] = ()) -> Iterator[User]:
    need_root()
    name = _name("u")
    argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    subprocess.run([*argv, name], check=True)
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False)
        with contextlib.suppress(KeyError):
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], check=False)


def moltsched_as(user: User) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and environment that run `moltsched` as `user`; skips if none can."""
    if _runs(user, [MOLTSCHED, "--version"], {}):
        return [MOLTSCHED], {}
    site = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), site])}
    same = f"{sys.version_info.major}.{sys.version_info.minor}"
    if Path(SYSTEM_PYTHON).exists() and _runs(
        user,
        [SYSTEM_PYTHON, "-c", f"import sys; assert '%d.%d' % sys.version_info[:2] == '{same}'"],
        {},
    ):
        argv = [SYSTEM_PYTHON, "-m", "bot"]
        if _runs(user, [*argv, "--version"], env):
            return argv, env
    pytest.skip(f"no Python {same} that another user may run, with the project importable")


def _runs(user: User, argv: list[str], env: dict[str, str]) -> bool:
    try:
        done = run_as(user, argv, env, timeout=30)
    except OSError:
        return False
    return done.returncode == 0


def run_as(
    user: User, argv: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base | env,
        user=user.uid,
        group=user.gid,
        extra_groups=user.groups(),
        cwd="/",
    )


def popen_as(
    user: User, argv: list[str], env: dict[str, str], stderr: int | object
) -> subprocess.Popen[bytes]:
    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    return subprocess.Popen(
        argv,
        env=base | env,
        user=user.uid,
        group=user.gid,
        extra_groups=user.groups(),
        stderr=stderr,  # type: ignore[arg-type]
        cwd="/",
    )

"""A loaded configuration is kept while the file's identity stays the same (config.cache)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config import cache
from config.loader import ConfigError, load_config
from tests.helpers import cli


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    return home / "moltsched"


def write(root: Path, every: str = "5m") -> Path:
    (root / "tasks").mkdir(exist_ok=True)
    (root / "tasks" / "a.sh").write_text("exit 0\n")
    path = root / "moltsched.yaml"
    path.write_text(f"state_dir: state\ntasks:\n  - id: a\n    script: a.sh\n    every: {every}\n")
    return path


def test_an_unchanged_file_is_not_validated_again(tmp_path: Path, cache_home: Path) -> None:
    path = write(tmp_path)
    first = load_config(path)
    assert len(list(cache_home.iterdir())) == 1
    assert oct(cache_home.stat().st_mode & 0o777) == "0o700"
    (tmp_path / "tasks" / "a.sh").unlink()  # validation would now refuse it
    assert load_config(path) == first
    with pytest.raises(ConfigError, match="no such file"):
        load_config(path, cached=False)  # what validate and doctor do


def test_a_changed_file_is_read_again(tmp_path: Path, cache_home: Path) -> None:
    path = write(tmp_path)
    assert load_config(path).tasks[0].trigger.describe() == "every 5m"
    write(tmp_path, "7m")
    assert load_config(path).tasks[0].trigger.describe() == "every 7m"
    (tmp_path / "tasks" / "a.sh").unlink()
    path.write_text(path.read_text() + "\n")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(path)


def test_a_damaged_or_foreign_entry_is_ignored(tmp_path: Path, cache_home: Path) -> None:
    path = write(tmp_path)
    load_config(path)
    (entry,) = cache_home.iterdir()
    entry.write_bytes(b"\x80\x05not a pickle")
    assert load_config(path).tasks[0].id == "a"  # validated again, and kept again
    (tmp_path / "tasks" / "a.sh").unlink()
    os.chmod(cache_home, 0o770)  # a folder others could write to is not trusted
    with pytest.raises(ConfigError, match="no such file"):
        load_config(path)


def test_an_entry_that_is_no_file_is_passed_over_not_waited_on(
    tmp_path: Path, cache_home: Path
) -> None:
    """A FIFO where the entry belongs (a task runs as the daemon's user, and may make one):
    opened to be read, it waited for a writer, and every command and the daemon's start
    with it. A device there was read for ever."""
    path = write(tmp_path)
    load_config(path)
    (entry,) = cache_home.iterdir()
    for make in (os.mkfifo, lambda p: p.symlink_to("/dev/zero")):
        entry.unlink()
        make(entry)
        done = cli("--json", "status", config=path, timeout=20)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["task_count"] == 1


def test_a_cache_that_cannot_be_written_is_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    path = write(tmp_path)
    assert load_config(path).tasks[0].id == "a"
    assert cache.read(path, cache.identity(path)) is None


def test_equal_parts_of_tasks_are_one_object_before_and_after_the_cache(
    tmp_path: Path, cache_home: Path
) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.sh").write_text("exit 0\n")
    tasks = "".join(
        f"  - {{id: t{i}, script: a.sh, cron: '0 3 * * *', env: {{K: v}}}}\n" for i in range(3)
    )
    path = tmp_path / "moltsched.yaml"
    path.write_text(f"state_dir: state\ntasks:\n{tasks}  - {{id: odd, script: a.sh, every: 5m}}\n")
    for config in (load_config(path), load_config(path)):  # validated, then from the cache
        same, odd = config.tasks[:3], config.tasks[3]
        for part in ("trigger", "argv", "env", "script"):
            assert len({id(getattr(spec, part)) for spec in same}) == 1, part
        assert odd.trigger is not same[0].trigger and odd.env is not same[0].env
        assert dict(odd.env) == {} and dict(same[0].env) == {"K": "v"}


def test_a_change_to_the_rules_a_file_was_checked_by_checks_it_again(
    tmp_path: Path, cache_home: Path
) -> None:
    """An updated checkout keeps its version number; before, a file that passed the old
    rules of `config/schema.py` or `config/fields.py` was kept as valid under the new ones."""
    path = write(tmp_path)
    load_config(path)
    (tmp_path / "tasks" / "a.sh").unlink()  # validation would now refuse it
    for name in ("schema.py", "fields.py", "times.py"):
        rules = Path(cache.__file__).with_name(name)
        st = rules.stat()
        os.utime(rules, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # as if edited
        try:
            with pytest.raises(ConfigError, match="no such file"):
                load_config(path)
        finally:
            os.utime(rules, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_entry_of_another_file_under_the_same_name_is_not_taken(
    tmp_path: Path, cache_home: Path
) -> None:
    """Entries are named by a short checksum of the file's path, which two files may share:
    each file takes only its own entry, whatever is under its name."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = write(tmp_path / "one"), write(tmp_path / "two", "7m")
    load_config(two)
    (two_entry,) = cache_home.iterdir()
    two_entry.rename(cache_home / "kept")
    load_config(one)
    (one_entry,) = cache_home.glob("config-*")
    (cache_home / "kept").replace(one_entry)  # `two`'s entry, where `one`'s belongs
    assert cache.last(one) is None
    assert cache.read(one, cache.identity(one)) is None
    assert load_config(one).tasks[0].trigger.describe() == "every 5m"
    assert cache.last(one) is not None


def test_entries_named_the_old_way_are_removed(tmp_path: Path, cache_home: Path) -> None:
    """0.2 named entries by 24 hex digits of a SHA-256; they are never read again."""
    cache_home.mkdir(parents=True, mode=0o700)
    old = cache_home / f"config-{'0a' * 12}.pickle"
    old.write_bytes(b"megabytes of tasks")
    other = cache_home / "config-notes.txt"
    other.write_text("not ours to remove")
    load_config(write(tmp_path))
    assert not old.exists() and other.exists()
    assert len(list(cache_home.glob("config-*.pickle"))) == 1

"""The configuration loader: defaults, every problem at once with its place, seed aliases."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from config.loader import ConfigError, load_config
from config.locate import MAX_FILE_BYTES, state_dir_hint
from scheduler_core.model import CatchUp
from scheduler_core.triggers import Cron, Every, parse_duration
from tests.helpers import MOLTSCHED, cli


def write(tmp_path: Path, text: str, name: str = "moltsched.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / "a.sh").write_text("echo a\n")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tasks:\n  - id: a\n    script: a.sh\n    every: 15m\n")
    config = load_config(path)
    assert config.settings.state_dir == tmp_path / "state"
    assert config.settings.tasks_dir == tmp_path / "tasks"
    assert config.settings.max_concurrent == 2
    assert config.signal is None
    (task,) = config.tasks
    assert task.name == "a"
    assert task.argv == ("bash", str(tmp_path / "tasks" / "a.sh"))
    assert task.trigger == Every(900)
    assert (task.priority, task.enabled, task.timeout, task.grace) == (5, True, 300, 10)
    assert (task.catch_up, task.interruptible, task.alert) == (CatchUp.ONCE, True, True)
    assert config.alerts.after_failures == 1 and config.alerts.repeat_every == 6 * 3600


def test_every_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
state_dir: var/st
tasks_dir: tasks
timezone: Europe/Berlin
max_concurrent: 4
tasks:
  - id: c
    name: Calendar
    command: [python3, -c, "print(1)"]
    cron: "*/15 * * * *"
    priority: 1
    enabled: false
    timeout: 2h
    grace: 90s
    catch_up: skip
    interruptible: false
    alert: false
    env: {KEY: value}
signal:
  account: "+4915100000000"
  admins: ["+4917600000000"]
alerts: {after_failures: 3, repeat_every: 1d, recovery: false}
""",
    )
    config = load_config(path)
    assert config.settings.state_dir == tmp_path / "var" / "st"
    assert config.zone == ZoneInfo("Europe/Berlin")
    (t,) = config.tasks
    assert t.argv == ("python3", "-c", "print(1)")
    assert t.trigger == Cron("*/15 * * * *", ZoneInfo("Europe/Berlin"))
    assert (t.priority, t.enabled, t.timeout, t.grace) == (1, False, 7200, 90)
    assert (t.catch_up, t.interruptible, t.alert, dict(t.env)) == (
        CatchUp.SKIP,
        False,
        False,
        {"KEY": "value"},
    )
    assert config.signal is not None
    assert config.signal.alert_to == ("+4917600000000",)  # defaults to the admins
    assert config.signal.service == "127.0.0.1:8080"
    assert config.alerts.after_failures == 3 and config.alerts.repeat_every == 86400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        (45, 45),
        ("45", 45),
        ("1.5m", 90),
        (" 10 s ", 10),
        # As people write them, in the file as in a chat's `run:x in 20 minutes`.
        ("15 min", 900),
        ("1 hour 30 minutes", 5400),
        ("2 Days", 172800),
        ("1w", 604800),
        ("2 weeks", 1209600),
        ("45 secs", 45),
        ("500ms", 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "abc", "10x", "-5", "5 m x", True, [1], "1mo", "5 minutesx", "1 fortnight"]
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_every_problem_at_once_with_its_place(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
max_concurrent: 0
timezone: Mars/Olympus
colour: blue
tasks:
  - id: ok
    script: a.sh
    every: 1m
  - id: Bad Id
    script: a.sh
    every: soon
  - id: two
    script: a.sh
    command: [echo]
    every: 1m
    cron: "* * * * *"
  - id: cronbad
    script: a.sh
    cron: "61 * * * *"
    priority: 11
    catch_up: sometimes
    surprise: 1
  - id: ok
    script: missing.sh
    every: 1m
""",
    )
    found = problems(path)
    text = "\n".join(found)
    for expected in [
        "max_concurrent:",
        "timezone: 'Mars/Olympus' is not a time zone",
        "colour: unknown key",
        "tasks[1].id: 'Bad Id' is not a task id",
        "tasks[1].every: 'soon' is not a duration",
        "tasks[2]: give exactly one of script or command; give exactly one of every or cron",
        "tasks[3].cron: '61 * * * *' is not a cron expression",
        "tasks[3].priority:",
        "tasks[3].catch_up:",
        "tasks[3].surprise: unknown key",
        "tasks[4].id: duplicate id 'ok' (also tasks[0])",
        "tasks[4].script: no such file",
    ]:
        assert expected in text, f"{expected!r} missing from:\n{text}"
    assert len(found) == 12


def test_a_script_that_is_there_but_not_a_file_is_not_called_missing(tmp_path: Path) -> None:
    """A folder or a named pipe where a script should be was "no such file", which sends
    the user looking for a file that is plainly there."""
    path = write(
        tmp_path,
        "tasks:\n  - {id: d, script: sub, every: 1h}\n  - {id: p, script: pipe.sh, every: 1h}\n"
        "  - {id: l, script: link.sh, every: 1h}\n",
    )
    tasks = tmp_path / "tasks"
    (tasks / "sub").mkdir()
    os.mkfifo(tasks / "pipe.sh")
    (tasks / "link.sh").symlink_to("/gone/away.sh")
    found = problems(path)
    assert found == [
        f"tasks[0].script: {str(tasks / 'sub')!r} is a folder, not a script",
        f"tasks[1].script: {str(tasks / 'pipe.sh')!r} is not a regular file",
        f"tasks[2].script: {str(tasks / 'link.sh')!r} is a link to '/gone/away.sh', which "
        "does not exist",
    ]


def test_seed_tasks_json_loads_unchanged(tmp_path: Path) -> None:
    seed = [
        {
            "task_id": "check-email",
            "name": "Email",
            "script_path": "a.sh",
            "interval_minutes": 15,
            "enabled": True,
            "priority": 2,
        },
        {
            "task_id": "scrape",
            "name": "Scrape",
            "script_path": "a.sh",
            "interval_minutes": 60,
            "enabled": False,
            "priority": 7,
        },
    ]
    path = write(tmp_path, json.dumps({"tasks": seed}), "tasks.json")
    config = load_config(path)
    assert [(t.id, t.name, t.trigger, t.enabled, t.priority) for t in config.tasks] == [
        ("check-email", "Email", Every(900), True, 2),
        ("scrape", "Scrape", Every(3600), False, 7),
    ]
    bare = write(tmp_path, json.dumps(seed), "bare.json")
    assert len(load_config(bare).tasks) == 2


def test_seed_alias_and_our_key_together_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "tasks:\n  - {id: a, task_id: a, script: a.sh, every: 1m}\n")
    assert problems(path) == ["tasks[0]: both 'task_id' and 'id' are given; keep one"]


def test_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "tasks:\n  - id: a\n   script: [\n")
    (problem,) = problems(path)
    assert problem.startswith("line 3")
    bad_json = write(tmp_path, '{"tasks": [}', "c.json")
    (problem,) = problems(bad_json)
    assert problem.startswith("line 1, column 12")


def test_a_key_given_twice_is_a_problem_not_the_last_one_silently(tmp_path: Path) -> None:
    """YAML lets a mapping name a key twice and keeps the last: `timeout: 10m` added below a
    forgotten `timeout: 5m` counted, or not, and nothing said which. Each is a problem at its
    line, with the others; a merge (`<<: *defaults`) that a task overrides is not one."""
    path = write(
        tmp_path,
        "max_concurrent: 2\n"
        "tasks:\n"
        "  - id: a\n"
        "    script: a.sh\n"
        "    timeout: 5m\n"
        "    every: 1h\n"
        "    timeout: 10m\n"
        "    priority: 0\n"
        "  - {id: b, script: a.sh, every: 1h, env: {K: x, K: y}}\n"
        "max_concurrent: 3\n",
    )
    assert sorted(problems(path)) == [
        "line 10, column 1: 'max_concurrent' is given twice (first at line 1); say it once",
        "line 7, column 5: 'timeout' is given twice (first at line 5); say it once",
        "line 9, column 50: 'K' is given twice (first at column 44); say it once",
        "tasks[0].priority: must be at least 1, not 0",
    ]
    merged = write(
        tmp_path,
        "tasks:\n"
        "  - &first {id: a, script: a.sh, every: 1h, timeout: 5m}\n"
        "  - {<<: *first, id: b, timeout: 10m}\n",
    )
    config = load_config(merged, cached=False)
    assert [t.timeout for t in config.tasks] == [300, 600]
    as_json = write(
        tmp_path,
        '{"tasks": [{"task_id": "a", "script_path": "a.sh", "interval_minutes": 5, '
        '"priority": 3, "priority": 1}], "max_concurrent": 1, "max_concurrent": 2}',
        "tasks.json",
    )
    assert sorted(problems(as_json)) == [
        "'max_concurrent' is given twice in one object; say it once",
        "'priority' is given twice in one object (in the one with id 'a'); say it once",
    ]


def test_missing_file_and_wrong_top_level(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == ["the file does not exist"]
    assert problems(write(tmp_path, "- just\n- a list of strings\n")) != []
    assert problems(write(tmp_path, "42\n")) == ["the top level must be a mapping of settings"]


def test_cron_uses_the_configured_zone(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timezone: Asia/Tokyo\ntasks:\n  - {id: a, script: a.sh, cron: '0 9 * * *'}\n",
    )
    (task,) = load_config(path).tasks
    nxt = task.trigger.next_after(datetime(2026, 11, 26, 0, 0, tzinfo=UTC))
    assert nxt == datetime(2026, 11, 27, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo


def test_validate_command(tmp_path: Path) -> None:
    good = write(tmp_path, "tasks:\n  - {id: a, script: a.sh, every: 1m}\n")
    result = cli("validate", config=good)
    assert result.returncode == 0 and "valid, 1 task(s)" in result.stdout
    bad = write(tmp_path, "tasks:\n  - {id: a, script: a.sh, every: never, nope: 1}\n", "b.yaml")
    result = cli("validate", config=bad)
    assert result.returncode == 2
    assert "tasks[0].every:" in result.stderr and "tasks[0].nope: unknown key" in result.stderr
    result = cli("--json", "validate", config=bad)
    data = json.loads(result.stdout)
    assert data["valid"] is False and len(data["problems"]) == 2
    # The file as an absolute path, valid or not (before: as given, when not valid).
    for path, valid in ((bad, False), (good, True)):
        done = subprocess.run(
            [MOLTSCHED, "--config", path.name, "--json", "validate"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert json.loads(done.stdout)["path"] == str(path) and done.returncode == 2 * (not valid)


def test_daemon_refuses_an_invalid_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "tasks:\n  - {id: a, script: a.sh, every: never}\n")
    result = cli("daemon", config=bad, timeout=30)
    assert result.returncode == 2
    assert "tasks[0].every" in result.stderr
    assert not (tmp_path / "state").exists()


def test_validate_catches_a_state_dir_too_long_for_the_control_socket(tmp_path: Path) -> None:
    deep = "state/" + "/".join(["a-rather-long-folder-name"] * 5)
    bad = write(tmp_path, f"state_dir: {deep}\ntasks:\n  - {{id: a, script: a.sh, every: 1m}}\n")
    result = cli("validate", config=bad)
    assert result.returncode == 2
    assert "state_dir: its control socket" in result.stderr and "at most 107" in result.stderr
    daemon = cli("daemon", config=bad, timeout=30)
    assert daemon.returncode == 2 and "Traceback" not in daemon.stderr


def test_numbers_too_big_for_a_float_are_problems_not_crashes(tmp_path: Path) -> None:
    huge = "1" + "0" * 400
    path = write(
        tmp_path,
        f"retention: {{log_days: {huge}}}\ntasks:\n  - {{id: a, command: [echo], every: {huge}}}\n",
    )
    found = problems(path)
    assert [p.split(":")[0] for p in found] == ["retention.log_days", "tasks[0].every"], found


def test_durations_too_long_for_a_date_are_problems_not_crashes(tmp_path: Path) -> None:
    """A float, but past what a date can hold from now: before, the file was valid and the
    daemon died at the task's first run (`every`) or logged a traceback at each failure
    (`retry_delay`)."""
    path = write(
        tmp_path,
        """
alerts: {repeat_every: 99999999999d, fallback_after: inf}
tasks:
  - {id: a, script: a.sh, every: 99999999999d}
  - {id: b, script: a.sh, every: inf, timeout: 1e300, grace: 999999999d}
  - {id: c, script: a.sh, every: 1m, retries: 1, retry_delay: 99999999999d, max_age: 1e20}
""",
    )
    found = problems(path)
    places = [p.split(":")[0] for p in found]
    assert places == [
        "alerts.repeat_every",
        "alerts.fallback_after",
        "tasks[0].every",
        "tasks[1].every",
        "tasks[1].timeout",
        "tasks[1].grace",
        "tasks[2].retry_delay",
        "tasks[2].max_age",
    ], found
    assert all("too long (at most 100 years)" in p for p in found), found


def test_retention_past_what_the_database_can_count_is_a_problem(tmp_path: Path) -> None:
    """Before: valid, and every run's pruning ended in a traceback (SQLite's integers)."""
    path = write(
        tmp_path,
        "retention: {runs_per_task: 100000000000000000000000, log_days: 1e300}\n"
        "tasks:\n  - {id: a, command: [echo], every: 1m}\n",
    )
    assert problems(path) == [
        "retention.runs_per_task: must be at most 1e+09, not 1e+23",
        "retention.log_days: must be at most 36525, not 1e+300",
    ]


def test_what_no_program_can_be_given_is_a_problem_at_its_place(tmp_path: Path) -> None:
    """A NUL in an argument or a variable, a variable's name with `=` or none: before,
    valid, and every run of the task failed inside the scheduler."""
    path = write(
        tmp_path,
        """
alerts: {fallback_command: [notify, "a\\0b"]}
tasks:
  - {id: a, command: [echo, "a\\0b"], every: 1m}
  - {id: b, command: [echo], every: 1m, env: {"A=B": x, OK: y, "C=D": z}}
  - {id: c, command: [echo], every: 1m, env: {"": x}}
  - {id: d, command: [echo], every: 1m, env: {A: "x\\0y"}}
""",
    )
    assert problems(path) == [
        "alerts.fallback_command: 'a\\x00b': a NUL byte cannot be passed to a program",
        "tasks[0].command: 'a\\x00b': a NUL byte cannot be passed to a program",
        "tasks[1].env: 'A=B': a variable's name is not empty and has no = or NUL",
        "tasks[1].env: 'C=D': a variable's name is not empty and has no = or NUL",
        "tasks[2].env: '': a variable's name is not empty and has no = or NUL",
        "tasks[3].env: 'A': a NUL byte cannot be passed to a program",
    ]


def test_signal_numbers_are_read_as_people_write_them_or_refused(tmp_path: Path) -> None:
    """Before, admins were compared as written: an owner listed as "+49 176 1234 5678" was a
    stranger to the bot (no answer at all), and "017612345678" could never match anyone."""
    good = write(
        tmp_path,
        """
signal:
  account: "+49 151 2345-6789"
  admins: ["+49 (176) 1234 5678", "3F9C2A7E-1B4D-4C8A-8E2F-6D5B9A0C7E14"]
  alert_to: ["+49.176.1234.5678"]
""",
    )
    signal = load_config(good).signal
    assert signal is not None and signal.account == "+4915123456789"
    assert signal.admins == ("+4917612345678", "3f9c2a7e-1b4d-4c8a-8e2f-6d5b9a0c7e14")
    assert signal.alert_to == ("+4917612345678",)
    bad = write(
        tmp_path,
        """
signal:
  account: "015123456789"
  admins: ["4917612345678", "+49 176 x", "bob"]
  alert_to: ["+1", "0049 176 1234 5678"]
""",
    )
    found = problems(bad)
    # Every bad entry, each at its place in the list (before: only the first).
    assert [p.split(":")[0] for p in found] == [
        "signal.account",
        "signal.admins[0]",
        "signal.admins[1]",
        "signal.admins[2]",
        "signal.alert_to[0]",
        "signal.alert_to[1]",
    ], found
    assert "'015123456789' is not a Signal number in international form" in found[0]
    assert "(write +" not in found[0]  # a national number names no country
    assert "'4917612345678'" in found[1] and "'bob'" in found[3], found
    assert found[1].endswith("(write +4917612345678)"), found  # lost its +
    assert found[5].endswith("(write +4917612345678)"), found  # 00 as dialled abroad


def test_the_signal_service_may_be_written_as_a_url(tmp_path: Path) -> None:
    """signalbot puts its own scheme before `service`: written as its README shows it
    (`http://localhost:8080`), the bot asked `https://http://localhost:8080/...` for ever.
    The scheme written says whether TLS is required (`tls`)."""
    for written, tls in (
        ("http://localhost:8080", False),
        ("HTTPS://localhost:8080/", True),
        ("wss://localhost:8080", True),
        ("localhost:8080", None),
    ):
        path = write(
            tmp_path,
            f"signal: {{service: '{written}', account: '+4915123456789', admins: ['+491761']}}\n",
        )
        found = problems(path)  # the admin is too short: the service is not a problem
        assert [p.split(":")[0] for p in found] == ["signal.admins[0]"], found
        path.write_text(path.read_text().replace("+491761", "+4917612345678"))
        signal = load_config(path).signal
        assert signal is not None and signal.address == "localhost:8080", written
        assert signal.tls is tls, written
        scheme = "https" if tls else "http"
        assert signal.url("/v1/health") == f"{scheme}://localhost:8080/v1/health", written
    for fine in ("http://[::1]:8080", "user:secret@signal.example:443/api", "signal-api"):
        path = write(
            tmp_path,
            f"signal: {{service: '{fine}', account: '+4915123456789', "
            "admins: ['+4917612345678']}\n",
        )
        assert load_config(path).signal is not None, fine
    # An address the connection could never use was taken, and the daemon said "does not
    # answer" for ever: an unclosed IPv6 bracket, a space, no host, a query, no port number.
    for wrong in (
        "127.0.0.1:99999",
        "http://",
        "ftp://x:1",
        "http://[::1",
        "signal api:8080",
        ":8080",
        "localhost:8080?x=1",
        "localhost:8080#top",
        "localhost:",
        "localhost:8080:9",
    ):
        path = write(
            tmp_path,
            f"signal: {{service: '{wrong}', account: '+4915123456789', "
            "admins: ['+4917612345678']}\n",
        )
        assert [p.split(":")[0] for p in problems(path)] == ["signal.service"], wrong


def test_a_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """As Windows editors save it (the seed's tasks.json, say): before, a JSON file with one
    was "Unexpected UTF-8 BOM"; YAML took it already."""
    bom = "\ufeff"
    state = tmp_path / "elsewhere"
    text = '{"state_dir": "elsewhere", "tasks": [{"id": "a", "script": "a.sh", "every": "1h"}]}'
    json_path = write(tmp_path, bom + text, "moltsched.json")
    assert [t.id for t in load_config(json_path).tasks] == ["a"]
    assert state_dir_hint(json_path) == state
    yaml_path = write(
        tmp_path, bom + "state_dir: elsewhere\ntasks: [{id: a, script: a.sh, every: 1h}]\n"
    )
    assert [t.id for t in load_config(yaml_path).tasks] == ["a"]
    assert state_dir_hint(yaml_path) == state


def test_retries_max_age_and_the_fallback_are_checked_at_their_places(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
alerts:
  fallback_command: curl
  fallback_after: later
tasks:
  - {id: a, script: a.sh, every: 1m, retries: -1, retry_delay: soon, max_age: 0}
  - {id: b, script: a.sh, every: 1m, retries: 2.5, retry_delay: 0.5, max_age: forever}
  - {id: c, script: a.sh, every: 1m, retries: 3, retry_delay: 1m, max_age: 26h}
""",
    )
    found = problems(path)
    text = "\n".join(found)
    for expected in [
        "alerts.fallback_command:",
        "alerts.fallback_after: 'later' is not a duration",
        "tasks[0].retries: must be at least 0, not -1",
        "tasks[0].retry_delay: 'soon' is not a duration",
        "tasks[0].max_age: max_age must be at least 1s",
        "tasks[1].retries: must be a whole number",
        "tasks[1].retry_delay: retry_delay must be at least 1s",
        "tasks[1].max_age: 'forever' is not a duration",
    ]:
        assert expected in text, f"{expected!r} missing from:\n{text}"
    assert len(found) == 8
    good = write(
        tmp_path,
        "alerts: {fallback_command: [mail, me], fallback_after: 5m}\n"
        "tasks:\n  - {id: c, script: a.sh, every: 1m, retries: 3, retry_delay: 1m, max_age: 26h}\n",
    )
    config = load_config(good)
    (task,) = config.tasks
    assert (task.retries, task.retry_delay, task.max_age) == (3, 60.0, 26 * 3600.0)
    assert config.alerts.fallback_command == ("mail", "me")
    assert config.alerts.fallback_after == 300.0


def _in_a_gigabyte() -> None:
    """What a small server has (a Raspberry Pi's 1 GB): reading without end fails in it."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_a_file_far_too_big_to_be_a_configuration_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    """`--config` given a log file, a disk image or /dev/zero by mistake: before, all of it
    was read and parsed (1.7 GB of memory for a 400 MB file, the daemon's own at a reload),
    and /dev/zero ended in a MemoryError traceback."""
    big = tmp_path / "huge.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    (problem,) = problems(big)
    assert problem.startswith(f"it is over {MAX_FILE_BYTES >> 20} MiB"), problem
    assert state_dir_hint(big) is None  # the quick look reads no more than the loader
    for path in (big, Path("/dev/zero")):
        for command in ("validate", "status"):
            result = subprocess.run(
                [MOLTSCHED, "--config", str(path), command],
                capture_output=True,
                text=True,
                timeout=60,
                preexec_fn=_in_a_gigabyte,
            )
            assert result.returncode == 2, (path, command, result.stderr)
            assert f"over {MAX_FILE_BYTES >> 20} MiB" in result.stderr
            assert "Traceback" not in result.stderr


def test_the_variables_moltsched_sets_for_a_run_are_not_a_tasks_to_set(tmp_path: Path) -> None:
    """`env: {MOLTSCHED_DB: ...}` replaced the database the run's checkpoints go to, and the
    tag by which the daemon knows a run's processes; `MOLTSCHED_TASK_ID` was overwritten
    without a word. Each is now a problem at its place."""
    path = write(
        tmp_path,
        "tasks:\n  - {id: a, script: a.sh, every: 1h, env: {MOLTSCHED_DB: /tmp/x.db, "
        "MOLTSCHED_TASK_ID: b, MOLTSCHED_LOG_LEVEL: DEBUG}}\n",
    )
    found = problems(path)
    assert len(found) == 1 and found[0].startswith("tasks[0].env: "), found
    assert "MOLTSCHED_DB" in found[0] and "MOLTSCHED_TASK_ID" in found[0]
    assert "MOLTSCHED_LOG_LEVEL" not in found[0]  # one moltsched does not set: the task's


def test_without_timezone_a_tz_naming_a_zone_is_the_host_zone(tmp_path: Path) -> None:
    """TZ=EST5EDT (a zone the zone database names, as `date` reads it) was not taken: the
    tasks ran by the zone of /etc/localtime, here UTC. A TZ that names no zone still falls
    back to the system's."""
    config = write(tmp_path, "tasks:\n  - {id: a, script: a.sh, cron: '0 18 * * *'}\n")

    def offset(tz: str) -> str:
        """The offset of "18:00" as moltsched reads it under `tz` (a one-shot's time)."""
        done = subprocess.run(
            [MOLTSCHED, "--config", str(config), "--json", "run", "a", "--at", "18:00"],
            capture_output=True,
            text=True,
            env=os.environ | {"TZ": tz},
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert cli("cancel", "a", config=config).returncode == 0
        scheduled = str(json.loads(done.stdout)["scheduled"])
        assert scheduled[11:19] == "18:00:00", scheduled
        return scheduled[-6:]

    assert offset("EST5EDT") in ("-05:00", "-04:00")
    assert offset(":Asia/Tokyo") == "+09:00"
    system = datetime.now().astimezone().strftime("%z")  # this process's own zone
    assert offset("Nowhere/Land").replace(":", "") in (system, "+0000")


def test_a_command_named_like_a_shared_environment_keeps_its_own_argv(tmp_path: Path) -> None:
    """Equal argvs, environments and triggers are one object across tasks; a command `env`
    with no arguments must still be that command, not another task's (empty) environment."""
    path = write(
        tmp_path,
        """
tasks:
  - {id: a, script: a.sh, every: 1h}
  - {id: env, command: [env], every: 1h}
  - {id: printenv, command: [printenv], every: 1h, env: {A: "1"}}
""",
    )
    for cached in (False, True, True):  # validated, stored in the cache, read from it
        a, env, printenv = load_config(path, cached=cached).tasks
        assert (a.argv[0], a.env) == ("bash", {})
        assert (env.argv, env.env) == (("env",), {})
        assert (printenv.argv, printenv.env) == (("printenv",), {"A": "1"})


def test_a_script_with_arguments_a_home_path_or_a_command_as_text_gets_a_hint(
    tmp_path: Path,
) -> None:
    """The everyday slips: arguments in `script`, `~` (no shell expands it here), and a
    command written as one text."""
    path = write(
        tmp_path,
        """
tasks:
  - {id: a, script: "a.sh --full", every: 1h}
  - {id: b, script: "~/a.sh", every: 1h}
  - {id: c, command: "a.sh --full 'two words'", every: 1h}
""",
    )
    assert problems(path) == [
        f"tasks[0].script: no such file {str(tmp_path / 'tasks' / 'a.sh --full')!r} (a script "
        'takes no arguments; to pass them, write command: ["bash", "a.sh", "--full"])',
        f"tasks[1].script: no such file {str(tmp_path / 'tasks' / '~/a.sh')!r} (~ is not "
        "your home folder here; write the whole path)",
        "tasks[2].command: must be a list, not \"a.sh --full 'two words'\"; write it as a "
        'list: ["a.sh", "--full", "two words"]',
    ]


def test_a_script_named_from_another_folder_says_what_to_write(tmp_path: Path) -> None:
    """Scripts are found from tasks_dir: `tasks/a.sh` (as from the configuration's folder, or
    as a seed's `script_path` may be written) was a bare "no such file .../tasks/tasks/a.sh"."""
    path = write(
        tmp_path,
        "tasks:\n  - {id: a, script: tasks/a.sh, every: 1h}\n"
        "  - {id: b, script: scripts/b.sh, every: 1h}\n",
    )
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "b.sh").write_text("true\n")
    tasks = tmp_path / "tasks"
    assert problems(path) == [
        f"tasks[0].script: no such file {str(tasks / 'tasks' / 'a.sh')!r} (scripts are found "
        f"from tasks_dir, {tasks}: write 'a.sh')",
        f"tasks[1].script: no such file {str(tasks / 'scripts' / 'b.sh')!r} (scripts are "
        f"found from tasks_dir, {tasks}: write '../scripts/b.sh')",
    ]


def test_a_file_that_is_not_utf8_text_or_not_a_file_says_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"tasks: []\nstate_dir: st\xe4te\n")
    assert problems(tmp_path / "latin.yaml") == [
        "it is not UTF-8 text (byte 0xe4 at line 2, column 14): save it as UTF-8"
    ]
    (tmp_path / "wide.yaml").write_text("tasks: []\n", encoding="utf-16")
    assert problems(tmp_path / "wide.yaml") == ["it is UTF-16 text: save it as UTF-8"]
    (tmp_path / "folder.yaml").mkdir()
    assert problems(tmp_path / "folder.yaml") == ["it is a folder, not a file"]


def test_yes_no_on_and_off_are_words_where_words_are_asked_for(tmp_path: Path) -> None:
    """YAML 1.1 reads `off`, `on`, `yes` and `no` as true and false: a task called `off`
    was "must be text, not False", and `env: {DEBUG: on}` a problem. Only `true` and
    `false` are booleans; a setting that is one still takes yes, no, on and off."""
    (tmp_path / "tasks").mkdir()
    path = tmp_path / "moltsched.yaml"
    path.write_text(
        "tasks:\n"
        "  - {id: off, name: No, command: [echo, yes], every: 1h, enabled: no, env: {DEBUG: on}}\n"
        "  - {id: on, command: [echo], every: 1h, enabled: Yes, alert: off, interruptible: NO}\n"
        "  - {id: c, command: [echo], every: 1h, enabled: true, alert: False}\n"
    )
    off, on, c = load_config(path).tasks
    assert (off.id, off.name, off.argv, off.enabled, off.env) == (
        "off",
        "No",
        ("echo", "yes"),
        False,
        {"DEBUG": "on"},
    )
    assert (on.id, on.enabled, on.alert, on.interruptible) == ("on", True, False, False)
    assert (c.enabled, c.alert) == (True, False)


def test_a_number_where_text_is_asked_for_is_the_text_as_written(tmp_path: Path) -> None:
    """`command: [sleep, 5]`, `id: 2024` and `env: {PORT: 8080}` were "must be text, not 5":
    YAML had made numbers of them. A plain scalar is the text written (`010` stays `010`,
    not YAML 1.1's octal 8); the settings that are numbers read it as one."""
    (tmp_path / "tasks").mkdir()
    path = tmp_path / "moltsched.yaml"
    path.write_text(
        "max_concurrent: 3\n"
        "tasks:\n"
        "  - {id: 2024, name: 1.50, command: [sleep, 5, 010, 0x1f, 1_000, 2026-12-24],"
        " every: 90, priority: 2, timeout: 1.5, env: {PORT: 8080, RATIO: 0.5}}\n"
        "  - {id: b, command: [echo], every: 15m, retries: 3, interval_minutes: 30}\n"
    )
    assert problems(path) == ["tasks[1]: both 'interval_minutes' and 'every' are given; keep one"]
    path.write_text(path.read_text().replace("every: 15m, ", ""))
    config = load_config(path)
    first, second = config.tasks
    assert (first.id, first.name) == ("2024", "1.50")
    assert first.argv == ("sleep", "5", "010", "0x1f", "1_000", "2026-12-24")
    assert first.env == {"PORT": "8080", "RATIO": "0.5"}
    assert (first.trigger, first.priority, first.timeout) == (Every(90), 2, 1.5)
    assert (second.trigger, second.retries, config.settings.max_concurrent) == (Every(1800), 3, 3)


def test_crons_nicknames_load_and_reboot_says_what_to_do_instead(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tasks:\n  - {id: a, script: a.sh, cron: '@daily'}\n"
        "  - {id: b, script: a.sh, cron: '@reboot'}\n",
    )
    assert problems(path) == [
        "tasks[1].cron: '@reboot' is not a schedule here: moltsched runs no task at its own "
        "start; give a cron expression or every:",
    ]
    path.write_text(path.read_text().replace("@reboot", "@hourly"))
    a, b = load_config(path).tasks
    assert isinstance(a.trigger, Cron) and isinstance(b.trigger, Cron)
    assert (a.trigger.expression, b.trigger.expression) == ("@daily", "@hourly")


def test_a_cron_with_a_wrong_count_of_fields_says_how_many_cron_has(tmp_path: Path) -> None:
    """Six fields are cron with seconds first (as Quartz and Spring write it); a Quartz
    expression's `?` and year, or a field left out, were cronsim's bare "Wrong number of
    fields" and "Bad day-of-week"."""
    path = write(
        tmp_path,
        "tasks:\n  - {id: a, script: a.sh, cron: '30 0 12 * * *'}\n"
        "  - {id: b, script: a.sh, cron: '0 0 12 ? * MON'}\n"
        "  - {id: c, script: a.sh, cron: '0 0 12 * * * 2027'}\n"
        "  - {id: d, script: a.sh, cron: '0 12 * *'}\n",
    )
    five = "cron has five (minute hour day month weekday), or six with seconds first"
    assert problems(path) == [
        "tasks[1].cron: '0 0 12 ? * MON' is not a cron expression: "
        "'?' is Quartz's 'any day'; write * for it",
        "tasks[2].cron: '0 0 12 * * * 2027' is not a cron expression: cron has no year: leave "
        "it out (six fields are read with seconds first)",
        f"tasks[3].cron: '0 12 * *' is not a cron expression: 4 fields, where {five}",
    ]
    path.write_text("tasks:\n  - {id: a, script: a.sh, cron: '30 0 12 * * *'}\n")
    (a,) = load_config(path).tasks
    assert isinstance(a.trigger, Cron)
    after = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
    assert a.trigger.next_after(after).astimezone(a.trigger.zone).time() == time(12, 0, 30)


def test_a_cron_that_never_runs_or_carries_a_zone_says_so(tmp_path: Path) -> None:
    """cronsim's words were "Bad day-of-month" for a day no month named has, and "Bad
    second" for a Kubernetes-style `CRON_TZ=` before the fields."""
    path = write(
        tmp_path,
        "tasks:\n  - {id: a, script: a.sh, cron: '0 0 30 2 *'}\n"
        "  - {id: b, script: a.sh, cron: '0 9 31 4,6 *'}\n"
        "  - {id: c, script: a.sh, cron: 'CRON_TZ=Europe/Berlin 0 9 * * *'}\n"
        "  - {id: d, script: a.sh, cron: 'TZ=UTC 0 9 * * *'}\n"
        "  - {id: e, script: a.sh, cron: '0 9 32 * *'}\n",
    )
    zone = "a time zone is not part of the expression: set timezone: (for every task)"
    assert problems(path) == [
        "tasks[0].cron: '0 0 30 2 *' is not a cron expression: none of the months it names "
        "has day 30, so it would never run",
        "tasks[1].cron: '0 9 31 4,6 *' is not a cron expression: none of the months it names "
        "has day 31, so it would never run",
        f"tasks[2].cron: 'CRON_TZ=Europe/Berlin 0 9 * * *' is not a cron expression: {zone}",
        f"tasks[3].cron: 'TZ=UTC 0 9 * * *' is not a cron expression: {zone}",
        "tasks[4].cron: '0 9 32 * *' is not a cron expression: Bad day-of-month",
    ]


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        (
            "a.json",
            '{"tasks": [{"id": "a"},\n]}',
            "line 1, column 23: Illegal trailing comma before end of array"  # 3.13 says it
            if sys.version_info >= (3, 13)
            else "line 2, column 1: Expecting value (a comma before it: JSON takes none after "
            "the last item)",
        ),
        (
            "b.json",
            '{"tasks": [] // none\n}',
            "line 1, column 14: Expecting ',' delimiter (JSON has no comments; YAML has, in a "
            ".yaml file)",
        ),
        (
            "c.json",
            "{'tasks': []}",
            "line 1, column 2: Expecting property name enclosed in double quotes (JSON quotes "
            "with \", not ')",
        ),
        (
            "e.yaml",
            "tasks:\n",
            "tasks: is empty: list the tasks under it, or write tasks: [] for none",
        ),
        (
            "f.yaml",
            "tasks:\n  id: a\n  script: a.sh\n  every: 1h\n",
            "tasks: is one task, not a list of them: begin each task with '- ' (a dash)",
        ),
        (
            "d.yaml",
            "tasks:\n\t- {id: a}\n",
            "line 2, column 1: found character that cannot start any token (a tab: YAML indents "
            "with spaces only)",
        ),
        (
            "g.yaml",
            "tasks:\n  - id: a\n    name: Backup: daily\n    every: 1h\n",
            "line 3, column 17: mapping values are not allowed in this context (a value with ': ' "
            'in it needs quotes around it, like name: "Backup: daily")',
        ),
        (
            "h.yaml",
            "tasks:\n  - id: a\n    script: a.sh\n\n     every: 1h\n",
            "line 5, column 11: mapping values are not allowed in this context (line 5 is "
            "indented 5 spaces, line 3 4: the keys of one item line up)",
        ),
        (
            "k.yaml",
            "tasks:\n  - id: a\n    command: [echo]\n     every: 1h\n",
            "line 4, column 6: did not find expected key (line 4 is indented 5 spaces, line 3 "
            "4: the keys of one item line up)",
        ),
        (
            "i.yaml",
            "tasks:\n  - id: a\n    command: [echo, hi\n    every: 1h\n",
            "line 4, column 10: did not find expected ',' or ']' (the [ on line 3 is not closed)",
        ),
        (
            "j.yaml",
            "tasks:\n  - {id: a, command: [echo], every: 1h\n",
            "line 3, column 1: did not find expected ',' or '}' (the { on line 2 is not closed)",
        ),
    ],
)
def test_the_everyday_slips_of_a_hand_written_file_are_named(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    """A trailing comma, a comment or single quotes in JSON, a tab in YAML: the parsers name
    only the symptom ("Expecting value"), at a place past the cause."""
    (tmp_path / name).write_text(text)
    assert problems(tmp_path / name) == [problem]


def test_true_and_false_where_text_is_asked_for_say_to_quote_them(tmp_path: Path) -> None:
    """`command: [true]` runs the `true` program, but YAML and JSON read `true` as a
    boolean: "must be text, not True" did not say what to write."""
    path = write(tmp_path, "tasks:\n  - {id: a, command: [true], every: 1h, name: false}\n")
    assert problems(path) == [
        'tasks[0].name: must be text, not false (for the word, write "false" in quotes)',
        'tasks[0].command: must be text, not true (for the word, write "true" in quotes)',
    ]


def test_a_folder_named_as_the_configuration_leaves_no_descriptor_open(tmp_path: Path) -> None:
    (tmp_path / "folder.yaml").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        assert problems(tmp_path / "folder.yaml") == ["it is a folder, not a file"]
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_task_name_is_one_line_a_phone_can_show(tmp_path: Path) -> None:
    """A name stands in every alert and `status TASK`: a 5,000-character one, or one with a
    line break or a terminal escape in it, was taken as it was."""
    path = write(
        tmp_path,
        "tasks:\n"
        f"  - {{id: a, script: a.sh, every: 1h, name: {'N' * 101}}}\n"
        '  - {id: b, script: a.sh, every: 1h, name: "two\\nlines"}\n'
        '  - {id: c, script: a.sh, every: 1h, name: "\\e[31mred"}\n'
        '  - {id: d, script: a.sh, every: 1h, name: "Mail 📧 — Inbox"}\n',
    )
    assert problems(path) == [
        "tasks[0].name: at most 100 characters (this one has 101)",
        "tasks[1].name: 'two\\nlines' has a control character; a name is one line of text",
        "tasks[2].name: '\\x1b[31mred' has a control character; a name is one line of text",
    ]


def test_an_environment_value_that_is_not_text_says_what_to_write(tmp_path: Path) -> None:
    """`DEBUG: true` was "names and values must be text (quote numbers)": there was no number,
    and YAML's numbers are taken as written. What each one is, and what to write instead."""
    path = write(
        tmp_path,
        """
tasks:
  - id: a
    command: [echo]
    every: 1m
    env: {PORT: 8080, DEBUG: true, EMPTY: null, LIST: [a, b], MAP: {k: v}, RATIO: 0.5}
""",
    )
    assert problems(path) == [
        "tasks[0].env: 'DEBUG': must be text, not true (for the word, write \"true\" in quotes)",
        "tasks[0].env: 'EMPTY': must be text, not null (for an empty one, write \"\")",
        "tasks[0].env: 'LIST': must be text, not ['a', 'b']",
        "tasks[0].env: 'MAP': must be text, not {'k': 'v'}",
    ]
    json_path = tmp_path / "moltsched.json"
    json_path.write_text(
        '{"tasks": [{"id": "a", "command": ["echo"], "every": "1m", "env": {"PORT": 8080}}]}'
    )
    assert problems(json_path) == [
        "tasks[0].env: 'PORT': must be text, not the number 8080 (write \"8080\" in quotes)"
    ]


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("europe/berlin", "is not a time zone (did you mean Europe/Berlin?)"),
        ("Berlin", "is not a time zone (did you mean Europe/Berlin?)"),
        ("new york", "is not a time zone (did you mean America/New_York?)"),
        (
            "UTC+2",
            "is an offset, which does not follow summer time: name the place (like Europe/Berlin), "
            "or write Etc/GMT-2 for UTC+2 all year",
        ),
        ("+05:30", "is an offset, which does not follow summer time: name the place"),
        ("GMT-3", "or write Etc/GMT+3 for UTC-3 all year"),
        ("CEST", "is an abbreviation, which names no one place: name the place"),
        ("local", "is not a time zone: leave timezone out for the host's zone"),
        ("Mars/Olympus", "is not a time zone (like Europe/Berlin or UTC)"),
    ],
)
def test_a_time_zone_that_is_not_one_says_what_was_meant(
    tmp_path: Path, written: str, said: str
) -> None:
    path = write(tmp_path, f'timezone: "{written}"\ntasks: []\n')
    (found,) = problems(path)
    assert found.startswith(f"timezone: '{written}' ") and said in found, found


def test_an_interval_given_as_cron_or_a_schedule_as_every_says_which_key_takes_it(
    tmp_path: Path,
) -> None:
    """`every: daily`, `every: "*/5 * * * *"` and Go's `cron: "@every 5m"` were "not a
    duration" and "2 fields, where cron has five"."""
    path = write(
        tmp_path,
        "tasks:\n"
        "  - {id: a, script: a.sh, every: '*/5 * * * *'}\n"
        "  - {id: b, script: a.sh, every: daily}\n"
        "  - {id: c, script: a.sh, every: '@weekly'}\n"
        "  - {id: d, script: a.sh, every: monthly}\n"
        "  - {id: e, script: a.sh, cron: '@every 5m'}\n"
        "  - {id: f, script: a.sh, cron: 'every 2 hours'}\n"
        "  - {id: g, script: a.sh, cron: '0 9 * * 1-5 2026'}\n"
        "  - {id: h, script: a.sh, every: soon}\n",
    )
    assert problems(path) == [
        "tasks[0].every: '*/5 * * * *' is a cron expression: write cron: \"*/5 * * * *\"",
        "tasks[1].every: 'daily' is not a duration: write every: 1d, or cron: \"@daily\" for "
        "each midnight",
        "tasks[2].every: '@weekly' is not a duration: write every: 1w, or cron: \"@weekly\" "
        "for the start of each Sunday",
        "tasks[3].every: 'monthly' is not a duration: write cron: \"@monthly\"",
        "tasks[4].cron: '@every 5m' is an interval: write every: 5m",
        "tasks[5].cron: 'every 2 hours' is an interval: write every: 2 hours",
        "tasks[6].cron: '0 9 * * 1-5 2026' is not a cron expression: cron has no year: leave it "
        "out (six fields are read with seconds first)",
        "tasks[7].every: 'soon' is not a duration (use 90s, 15m, 2h, 1d or seconds)",
    ]


def test_a_folder_written_with_a_tilde_says_to_write_the_whole_path(tmp_path: Path) -> None:
    """No shell reads the file: `state_dir: ~/.moltsched` was a folder named `~` beside it,
    and the daemon kept its state there."""
    path = write(tmp_path, "state_dir: ~/.moltsched\ntasks_dir: ~user/tasks\ntasks: []\n")
    home = "~ is not your home folder here (no shell reads the file); write the whole path"
    assert problems(path) == [
        f"state_dir: '~/.moltsched': {home}",
        f"tasks_dir: '~user/tasks': {home}",
    ]
    assert not (tmp_path / "~").exists()


def test_no_timeout_asked_for_says_why_every_run_has_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tasks:\n  - {id: a, script: a.sh, every: 1h, timeout: none}\n"
        "  - {id: b, script: a.sh, every: 1h, timeout: 0}\n"
        "  - {id: c, script: a.sh, every: 1h, timeout: 30d}\n",
    )
    why = "every run has one, so that none can hang for ever: write a long one, like 24h"
    assert problems(path) == [
        f"tasks[0].timeout: 'none' is not a duration: {why}",
        f"tasks[1].timeout: timeout must be more than 0: {why}",
    ]


def test_a_number_that_is_a_word_says_which_numbers_are_taken(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "max_concurrent: unlimited\ntasks:\n  - {id: a, script: a.sh, every: 1h, priority: high}\n",
    )
    assert problems(path) == [
        "max_concurrent: must be a whole number from 1 to 1000, not 'unlimited'",
        "tasks[0].priority: must be a whole number from 1 to 10, not 'high'",
    ]

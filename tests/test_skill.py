"""deploy/moltbot/SKILL.md: every command in it works, and answers as the file says."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from support.daemon import DaemonProcess
from tests.helpers import REPO, cli, query, wait_sync

SKILL = REPO / "deploy" / "moltbot" / "SKILL.md"


def commands() -> list[list[str]]:
    text = SKILL.read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0])[1:] for line in block.splitlines() if line]


def test_header() -> None:
    import yaml

    head = SKILL.read_text().split("---\n")[1]
    assert head.startswith("name: moltsched\ndescription: ")
    meta = yaml.safe_load(head)
    assert meta["metadata"]["openclaw"]["requires"]["bins"] == ["moltsched"]  # OpenClaw gating
    text = SKILL.read_text()
    for code in ("`0`", "`1`", "`2`", "`3`"):
        assert f"- {code}:" in text  # what the agent says for each exit code
    assert "control: {group:" in text  # how to give the agent access


def test_every_command_in_the_skill(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "scrape.sh").write_text("echo scraped 12 pages\n")
    (tmp_path / "tasks" / "email.sh").write_text("echo 'imap timeout' >&2; exit 1\n")
    config = tmp_path / "moltsched.yaml"
    config.write_text(
        "tasks:\n"
        "  - {id: scrape-all, name: Scraper, script: scrape.sh, every: 1h}\n"
        "  - {id: check-email, name: Email, script: email.sh, every: 1h}\n"
    )
    found = commands()
    assert len(found) == 16
    daemon = DaemonProcess(config).start()
    try:
        # Both are new, so they run at the start; `output` below reads check-email's run.
        db = tmp_path / "state" / "moltsched.db"
        wait_sync(
            lambda: query(db, "SELECT run_count FROM task WHERE id = 'check-email'") == [(1,)],
            20,
            "check-email's first run",
        )
        assert cli("checkpoint", "save", "scrape-all", '{"page": 7}', config=config).returncode == 0
        for argv in found:
            result = cli(*argv, config=config)
            assert result.returncode in (0, 1), (argv, result.stderr)
            data = json.loads(result.stdout)
            if argv[1:2] == ["status"] and len(argv) == 2:
                assert data["running"] is True and data["task_count"] == 2
            if argv[1:2] == ["run"] and ("--in" in argv or "--at" in argv):
                assert data["task"] == "check-email" and data["scheduled"]
            elif argv[1:2] == ["run"]:
                assert data["outcome"] == "success" and result.returncode == 0
            if argv[1:2] == ["cancel"]:
                assert len(data["cancelled"]) == 3  # the three one-shots above
            if argv[1:2] == ["stop"]:
                assert data == {"task": "scrape-all", "stopped": False}
            if argv[1:2] == ["output"]:
                assert data["task_id"] == "check-email" and "imap timeout" in data["stderr"]
            if argv[1:2] == ["checkpoint"]:  # show, then clear
                assert data == ({"page": 7} if argv[2] == "show" else None), argv
        # What the file says about exit code 2.
        unknown = cli("--json", "run", "scrape", config=config)
        assert unknown.returncode == 2 and json.loads(unknown.stdout)["nearest"] == ["scrape-all"]
    finally:
        assert daemon.stop() == 0

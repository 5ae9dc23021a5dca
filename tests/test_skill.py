"""deploy/moltbot/SKILL.md: every command in it works, and answers as the file says."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tests.helpers import REPO, cli
from tests.test_e2e import Daemon

SKILL = REPO / "deploy" / "moltbot" / "SKILL.md"


def commands() -> list[list[str]]:
    text = SKILL.read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0])[1:] for line in block.splitlines() if line]


def test_header() -> None:
    head = SKILL.read_text().split("---\n")[1]
    assert head.startswith("name: moltsched\ndescription: ")


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
    assert len(found) == 8
    daemon = Daemon(config).start()
    try:
        for argv in found:
            result = cli(*argv, config=config)
            assert result.returncode in (0, 1), (argv, result.stderr)
            data = json.loads(result.stdout)
            if argv[1:2] == ["status"] and len(argv) == 2:
                assert data["running"] is True and data["task_count"] == 2
            if argv[1:2] == ["run"]:
                assert data["outcome"] == "success" and result.returncode == 0
        # What the file says about exit code 2.
        unknown = cli("--json", "run", "scrape", config=config)
        assert unknown.returncode == 2 and json.loads(unknown.stdout)["nearest"] == ["scrape-all"]
    finally:
        assert daemon.stop() == 0

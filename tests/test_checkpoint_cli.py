"""`moltsched checkpoint` from a shell, and from a task script run by the daemon."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cli, query

CONFIG = """
tasks:
  - id: counter
    script: counter.sh
    every: 1h
"""

# The bash form of the seed's example: read the checkpoint, work, save progress.
COUNTER = """
last=$(moltsched checkpoint show "$MOLTSCHED_TASK_ID" --json | python3 -c '
import json, sys
value = json.load(sys.stdin)
print(value["n"] if value else 0)')
next=$((last + 1))
moltsched checkpoint save "$MOLTSCHED_TASK_ID" "{\\"n\\": $next}"
echo "n=$next"
"""


def setup(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "counter.sh").write_text(COUNTER)
    path = tmp_path / "moltsched.yaml"
    path.write_text(CONFIG)
    return path


def test_checkpoint_commands(tmp_path: Path) -> None:
    config = setup(tmp_path)
    assert cli("run", "counter", config=config).stdout.endswith("n=1\n")
    result = cli("run", "counter", config=config)
    assert result.returncode == 0 and result.stdout.endswith("n=2\n"), result.stderr
    assert cli("--json", "checkpoint", "show", "counter", config=config).stdout == '{"n": 2}\n'
    assert cli("checkpoint", "save", "counter", '{"n": 40}', config=config).returncode == 0
    assert cli("run", "counter", config=config).stdout.endswith("n=41\n")
    status = json.loads(cli("--json", "status", config=config).stdout)
    assert status["tasks"][0]["checkpoint"] == {"n": 41}

    bad = cli("checkpoint", "save", "counter", "{not json", config=config)
    assert bad.returncode == 2 and "not JSON" in bad.stderr
    assert cli("checkpoint", "show", "counter", config=config).stdout == '{\n  "n": 41\n}\n'
    unknown = cli("checkpoint", "show", "countr", config=config)
    assert unknown.returncode == 2 and "did you mean counter" in unknown.stderr

    assert cli("checkpoint", "clear", "counter", config=config).returncode == 0
    assert cli("checkpoint", "show", "counter", config=config).stdout == "no checkpoint\n"
    db = tmp_path / "state" / "moltsched.db"
    assert query(db, "SELECT checkpoint FROM task WHERE id = 'counter'") == [(None,)]

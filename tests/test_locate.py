"""The CLI's quick look for the state directory agrees with the real loader, or declines."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import load_config
from config.locate import state_dir_hint


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

"""`make demo`: type a line, get the bot's answer, end with Ctrl-D."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_demo_prompt_answers_like_the_bot() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "support.demo"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert "The bot is up" in proc.stdout.readline()
            proc.stdin.write("help\n")
            proc.stdin.flush()
            seen = ""
            while "Commands:" not in seen:
                line = proc.stdout.readline()
                assert line, f"the demo ended early: {seen!r}"
                seen += line
            assert "🤖 to you:" in seen
            proc.stdin.close()  # Ctrl-D
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

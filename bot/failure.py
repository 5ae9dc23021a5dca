"""How the CLI fails: one line on stderr, an exit code, and under `--json` a JSON object
with `error` and `kind` on stdout (DESIGN.md section 4). Standard library only: the path
where the daemon answers must start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.loader import AppConfig

EXIT_USAGE = 2
EXIT_STATE = 3  # the scheduler's state cannot be reached


class Failure(Exception):
    """A command that cannot be carried out: one line on stderr, exit `code`, and under
    `--json` `{"error", "kind", ...extra}` on stdout (see `fail`)."""

    def __init__(
        self, message: str, kind: str, code: int = EXIT_USAGE, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.extra = extra or {}


def fail(
    message: str, kind: str, code: int, as_json: bool, extra: dict[str, Any] | None = None
) -> int:
    """Report a failure in one line on stderr, and as JSON on stdout under `--json`."""
    if as_json:
        print(json.dumps({"error": message, "kind": kind, **(extra or {})}))
    print(f"moltsched: {message}", file=sys.stderr)
    return code


def load(config_path: Path) -> AppConfig:
    from config.loader import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        code = EXIT_STATE if exc.kind == "permission" else EXIT_USAGE
        raise Failure(str(exc), exc.kind, code, {"problems": exc.problems}) from None

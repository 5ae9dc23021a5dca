"""Find a configuration's state directory without loading the whole file.

`moltsched status --json` must answer at once even with 10,000 tasks configured, and parsing
that much YAML takes half a second. The CLI only needs the state directory (where the daemon's
control socket is), so this reads just the top-level `state_dir:` line of a block-style YAML
file (or parses JSON, which is fast). Anything unusual returns None and the caller loads the
file properly. Imports only the standard library.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

DEFAULT_CONFIG = Path("config/moltsched.yaml")
SYSTEM_CONFIG = Path("/etc/moltsched/moltsched.yaml")
# No configuration comes near this (10,000 tasks take about 0.6 MiB); a file past it was named
# by mistake (a log, a disk image, /dev/zero), and reading it whole could take the memory of
# a small server, the daemon's at a reload.
MAX_FILE_BYTES = 16 * 1024 * 1024
# A configuration handed over a named pipe (`sops exec-file`) is written at once; a pipe that
# gives nothing for this long has no writer to wait for.
PIPE_WAIT_S = 5.0


class ConfigNotFound(Exception):
    """No configuration file in any of the places looked; the message names each."""

    def __init__(self, places: list[Path]) -> None:
        self.places = places
        listing = ", ".join(str(p) for p in places)
        super().__init__(
            f"no configuration file found; looked for {listing}. "
            "Name one with --config PATH or MOLTSCHED_CONFIG=PATH"
        )


class FileTooBig(Exception):
    """A file past MAX_FILE_BYTES, named by mistake; the message says so."""

    def __init__(self) -> None:
        super().__init__(
            f"it is over {MAX_FILE_BYTES >> 20} MiB, far more than any configuration "
            "(10,000 tasks take about 0.6 MiB): is it the right file?"
        )


# What a pipe gave (`--config <(sops -d moltsched.yaml)`), or why it gave nothing: it can be
# read only once, and a command reads its file twice (`state_dir_hint`, then whole).
_PIPED: dict[Path, str | OSError] = {}


def read_text(path: Path) -> str:
    """The file's text as UTF-8 (a byte order mark is no error), read only up to
    MAX_FILE_BYTES: FileTooBig past it, whatever the file is (a pipe, a device); OSError and
    UnicodeDecodeError as reading gives them."""
    piped = _PIPED.get(path)
    if isinstance(piped, OSError):
        raise OSError(*piped.args)
    if piped is not None:
        return piped
    # Not blocking: opened to be read, a named pipe waits for a writer that may never come.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        f = open(fd, "rb")  # noqa: SIM115 - closed by the `with` below
    except OSError:  # a folder: open() refuses it and leaves the descriptor to us
        os.close(fd)
        raise
    with f:
        st = os.fstat(fd)
        if st.st_size > MAX_FILE_BYTES:
            raise FileTooBig()
        if stat.S_ISFIFO(st.st_mode):
            try:
                data = _from_pipe(fd)
            except OSError as exc:
                _PIPED[path] = exc  # waited for once
                raise
        else:
            os.set_blocking(fd, True)
            data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise FileTooBig()
    text = data.decode("utf-8-sig")
    if stat.S_ISFIFO(st.st_mode):
        _PIPED[path] = text
    return text


def _from_pipe(fd: int) -> bytes:
    """What a pipe gives up to its end, or past MAX_FILE_BYTES; OSError when nothing comes
    for PIPE_WAIT_S (no writer ever opened it, or one stopped without closing it)."""
    import select

    chunks: list[bytes] = []
    got = 0
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while got <= MAX_FILE_BYTES:
        if not poller.poll(PIPE_WAIT_S * 1000):
            raise OSError(f"a pipe no one wrote to in {PIPE_WAIT_S:g} s")
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# MULTILINE: matched from where a line begins inside the whole text (`state_dir_hint`).
_TOP_KEY = re.compile(r"^(?:state_dir|\"state_dir\"|'state_dir')[ \t]*:(.*)$", re.MULTILINE)
_BREAKS = re.compile("\r\n?|[\x85\u2028\u2029]")  # YAML's (PyYAML's) line breaks but "\n"
_PLAIN = re.compile(r"^[^\s\"'\[\]{}&*!|>%@`#,][^#]*?$")


def config_places() -> list[Path]:
    """Where a configuration is looked for when none is named (DESIGN.md section 3). A
    working folder that was removed under the shell has no `config/` to look in."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    try:
        here = [DEFAULT_CONFIG.absolute()]
    except FileNotFoundError:
        here = []
    return [*here, Path(xdg, "moltsched", "moltsched.yaml"), SYSTEM_CONFIG]


def find_config_path(arg: str | os.PathLike[str] | None = None, *, existing: bool = True) -> Path:
    """`--config PATH`, else `$MOLTSCHED_CONFIG`, else the first of `config_places()` that
    exists, else the first in a folder we may not search (the owner's /etc/moltsched, kept
    0700: the file may be there, and its daemon can answer without our reading it). With
    none, ConfigNotFound naming every place; with `existing=False` (to write a new file),
    `./config/moltsched.yaml`."""
    if arg:
        return Path(arg)
    env = os.environ.get("MOLTSCHED_CONFIG")
    if env:
        return Path(env)
    places = config_places()
    closed: list[Path] = []
    for place in places:
        try:
            if place.is_file():
                return place
        except OSError:  # a folder on the way we may not search: look further
            closed.append(place)
    if not existing:
        return DEFAULT_CONFIG
    if closed:
        return closed[0]
    raise ConfigNotFound(places)


def unreadable(path: Path) -> bool:
    """Whether the file may be there and is not ours to read (it, or a folder on the way)."""
    try:
        return path.exists() and not os.access(path, os.R_OK)
    except PermissionError:
        return True


def state_dir_for(config_path: Path) -> Path:
    """Where a new configuration keeps its state (what `import-seed` writes): absolute, so
    the file can be moved, and /var/lib/moltsched (the unit's StateDirectory) for one
    written under /etc."""
    folder = config_path.resolve().parent
    if folder.is_relative_to("/etc"):
        return Path("/var/lib/moltsched")
    return folder / "state"


def state_dir_hint(path: Path) -> Path | None:
    """The state directory the file names, or None if it cannot be told cheaply."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError, FileTooBig):
        return None
    base = path.resolve().parent
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if isinstance(data, list):
            return base / "state"
        value = data.get("state_dir", "state") if isinstance(data, dict) else None
        return base / value if isinstance(value, str) else None
    # Found by searching the text rather than by a loop over its lines: 10,000 tasks are
    # 30,000 lines, and every command looks here first. Lines end where YAML ends them.
    if "\r" in text or not text.isascii():  # (a regular expression costs 5 ms on 10,000)
        text = _BREAKS.sub("\n", text)
    if text.startswith(("{", "[")) or "\n{" in text or "\n[" in text:
        return None  # flow style: leave it to the real parser
    found = []
    at = text.find("state_dir")
    while at >= 0:
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        match = _TOP_KEY.match(text, start, end)
        if match is not None:
            found.append(match.group(1))
        at = text.find("state_dir", end)
    if not found:
        return base / "state"
    value = _scalar(found[0]) if len(found) == 1 else None
    return None if value is None else base / value


def _scalar(raw: str) -> str | None:
    value = raw.strip()
    if value.startswith(("'", '"')):
        quote = value[0]
        end = value.find(quote, 1)
        if end < 0 or "\\" in value[:end]:
            return None
        rest = value[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            return None
        return value[1:end] or None
    value = re.sub(r"\s+#.*$", "", value).strip()
    if not value or not _PLAIN.match(value):
        return None
    return value

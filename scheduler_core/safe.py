"""Untrusted text made harmless before it reaches a person.

Task output, task names from old databases and chat text can carry terminal escape
sequences (colours, cursor moves, OSC 8 links, window titles), other control characters and
bidi overrides that make text read differently from what it is. `safe_text` removes the
sequences and the bidi controls, and shows any other control character as U+FFFD, keeping
newlines and tabs. JSON output is never passed through it: it stays exact.

`storable` is the other side: text as SQLite can hold it.
"""

from __future__ import annotations

import re

# ESC [ ... final byte (CSI), ESC ] ... BEL or ESC \ (OSC), ESC P/X/^/_ ... ESC \ (DCS, SOS,
# PM, APC), the 8-bit CSI and OSC, and any other two-byte escape.
_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
# Bidi embeddings, overrides, isolates and marks.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# What is left of C0 (but tab and newline), DEL and C1.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """`text` with escape sequences and bidi controls removed and other control characters
    shown as U+FFFD; a carriage return ends a line."""
    if text.isprintable():
        return text  # the common case, at C speed
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SEQUENCES.sub("", text)
    text = _BIDI.sub("", text)
    return _CONTROLS.sub("\ufffd", text)


def storable(text: str) -> str:
    """`text` as UTF-8 can hold it, which is all SQLite takes: a lone surrogate (a byte of a
    command line that is not UTF-8, which Python decodes as one; a `\\udcff` escape in a JSON
    request) is written as its escape."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text

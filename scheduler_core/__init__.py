"""The scheduling engine: task model, triggers, SQLite store, subprocess runner and loop.

It imports nothing from `bot`, `commands` or `config`; they build on it.
"""

__version__ = "0.2.0"

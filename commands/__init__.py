"""The command language shared by chat and CLI: parse -> Command -> execute -> Reply.

`grammar` (pure parsing and the one command table), `command` (the Command types), `execute`
(Command -> Reply), `reply` (text and JSON), `chat` (an admin's message -> replies). Nothing is
imported here, so the command line can read the table without loading the engine.
"""

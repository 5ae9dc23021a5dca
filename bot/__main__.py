"""`python -m bot` is `moltsched`."""

import sys

from bot.cli import main

sys.exit(main())

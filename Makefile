# The two set-up commands of the README (`make run`, `make test`) work from nothing but Python 3.11+:
# the virtual environment and every dependency are made here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/moltsched.yaml
STAMP := $(VENV)/.installed
# An editable install leaves the project's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE
# is set (it is on these machines) every start would compile them again: about 30 ms and a
# higher peak of memory per process. compileall rewrites only what changed since.
COMPILE := $(BIN)/python -m compileall -q bot commands config scheduler_core support bench

.PHONY: run demo test lint pytest bench load soak clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@$(COMPILE)
	$(BIN)/moltsched --config $(CONFIG) daemon

# The bot without a Signal account: the emulator, the daemon on the demo tasks, and a prompt
# where what you type arrives as a message from the admin's phone.
demo: $(STAMP)
	@$(COMPILE)
	$(BIN)/python -m support.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: $(STAMP)
	@$(COMPILE)
	$(BIN)/python -m pytest -q

test: lint pytest

# APScheduler, the rival the benchmarks measure side by side, is installed for them alone.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	@$(COMPILE)
	$(BIN)/python -m bench

# 10,000 tasks due at once, with 100 parallel `status --json` and 300 chat commands during the
# burst; figures against the same calls on the idle daemon. Not part of `make test` (which runs
# the same scenario as tests/test_load.py, for correctness).
load: $(STAMP)
	@$(COMPILE)
	$(BIN)/python -m bench.load

# The daemon under steady load for SOAK_SECONDS (default 600): RSS, fds and run counts at the
# start and the end, and no missed or doubled run. Not part of `make test`.
soak: $(STAMP)
	@$(COMPILE)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache

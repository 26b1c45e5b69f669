# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench stress clean install postgres-binaries

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mcp-taskqueue serve --transport http --host 127.0.0.1 --port 8765

lint: $(STAMP)
	$(BIN)/ruff check mcp_taskqueue tests benchmarks examples
	$(BIN)/ruff format --check mcp_taskqueue tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests start their own PostgreSQL server (tests/postgres.py) from the machine's binaries;
# a machine without them gets them from the system package manager.
postgres-binaries:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
		apt-get -o DPkg::Lock::Timeout=900 install -y postgresql || \
		(apt-get -o DPkg::Lock::Timeout=900 update && apt-get -o DPkg::Lock::Timeout=900 install -y postgresql)

test: $(STAMP) lint typecheck postgres-binaries
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

# Long multi-process runs (docs/reliability.md): 4 servers drain 2000 tasks, SIGKILL recovery, torn batches.
stress: $(STAMP)
	$(BIN)/python -m benchmarks.stress --tasks 2000 --servers 4 --kills 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

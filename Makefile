# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench stress clean install

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

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

# Long multi-process runs (docs/reliability.md): 4 servers drain 2000 tasks, SIGKILL recovery, torn batches.
stress: $(STAMP)
	$(BIN)/python -m benchmarks.stress --tasks 2000 --servers 4 --kills 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench stress clean install browsers lighthouse board-baselines

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

test: $(STAMP) lint typecheck browsers lighthouse
	$(BIN)/python -m pytest -q

# The board's browser tests (tests/browser) use Debian's browsers, never downloaded ones, and Lighthouse from npm.
browsers:
	@command -v chromium >/dev/null && command -v firefox-esr >/dev/null || apt-get -o DPkg::Lock::Timeout=900 install -y chromium firefox-esr

lighthouse: .cache/lighthouse/node_modules/.bin/lighthouse
.cache/lighthouse/node_modules/.bin/lighthouse:
	mkdir -p .cache/lighthouse && cd .cache/lighthouse && npm install --no-audit --no-fund --silent lighthouse@12

# Rewrite tests/browser/baselines/*.png on purpose (after a deliberate visual change); review the diff.
board-baselines: $(STAMP) browsers
	BOARD_BASELINES=update $(BIN)/python -m pytest -q tests/browser/test_quality.py -k baselines

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

# Long multi-process runs (docs/reliability.md): 4 servers drain 2000 tasks, SIGKILL recovery, torn batches.
stress: $(STAMP)
	$(BIN)/python -m benchmarks.stress --tasks 2000 --servers 4 --kills 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

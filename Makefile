# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make run HOST=0.0.0.0 PORT=9000 DB=/path/tasks.db  (DB empty: $$TASKQUEUE_DB, else the default store)
HOST ?= 127.0.0.1
PORT ?= 8765
DB ?=
# Node 22 for the MCP conformance suite (and the TypeScript SDK), from the npm registry into a
# gitignored cache inside the checkout; idempotent. The binary lands at $(NODE22).
NODE22_DIR := .cache/node22
NODE22 := $(NODE22_DIR)/node_modules/node/bin/node
CONFORMANCE_VERSION := 0.1.16
CONFORMANCE_DIR := .cache/conformance
CONFORMANCE := $(CONFORMANCE_DIR)/node_modules/@modelcontextprotocol/conformance/dist/index.js

.PHONY: run test lint typecheck bench stress clean install wheel node22 conformance doc-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)
	@echo "mcp-taskqueue is installed in $(VENV); put it on PATH with:  . $(VENV)/bin/activate"

run: $(STAMP)
	$(BIN)/mcp-taskqueue serve --transport http --host '$(HOST)' --port '$(PORT)' $(if $(DB),--db '$(DB)')

# sdist and wheel into dist/ (the wheel carries prompts/ and schemas/; see setup.py)
wheel: $(STAMP)
	$(BIN)/python -m build --outdir dist

$(NODE22):
	npm install --no-audit --no-fund --silent --prefix $(NODE22_DIR) node@22
	$(NODE22) --version

node22: $(NODE22)

$(CONFORMANCE): $(NODE22)
	PATH="$(abspath $(dir $(NODE22))):$$PATH" npm install --no-audit --no-fund --silent \
		--prefix $(CONFORMANCE_DIR) @modelcontextprotocol/conformance@$(CONFORMANCE_VERSION)

# The official MCP conformance suite (server scenarios); tests/test_conformance.py runs it.
conformance: $(CONFORMANCE)

lint: $(STAMP)
	$(BIN)/ruff check mcp_taskqueue tests benchmarks examples setup.py
	$(BIN)/ruff format --check mcp_taskqueue tests benchmarks examples setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

# Command-line tools the docs' examples use (tests/test_docs.py runs them).
doc-tools:
	@command -v jq >/dev/null || apt-get -o DPkg::Lock::Timeout=900 install -y -q jq

test: $(STAMP) lint typecheck $(CONFORMANCE) doc-tools
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

# Long multi-process runs (docs/reliability.md): 4 servers drain 2000 tasks, SIGKILL recovery, torn batches.
stress: $(STAMP)
	$(BIN)/python -m benchmarks.stress --tasks 2000 --servers 4 --kills 10

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

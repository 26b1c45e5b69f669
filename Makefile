# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make run HOST=0.0.0.0 PORT=9000 DB=/path/tasks.db  (DB empty: $$TASKQUEUE_DB, else the default store)
HOST ?= 127.0.0.1
PORT ?= 8765
DB ?=

.PHONY: run test lint typecheck bench stress clean install node22 chromium sdk-generate test-ts wheel conformance doc-tools \
	browsers lighthouse board-baselines postgres-binaries

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)
	@echo "mcp-taskqueue is installed in $(VENV); put it on PATH with:  . $(VENV)/bin/activate"

run: $(STAMP)
	$(BIN)/mcp-taskqueue serve --transport http --log-format text --host '$(HOST)' --port '$(PORT)' $(if $(DB),--db '$(DB)')

# sdist and wheel into dist/ (the wheel carries prompts/ and schemas/; see setup.py)
wheel: $(STAMP)
	$(BIN)/python -m build --outdir dist

lint: $(STAMP)
	$(BIN)/ruff check mcp_taskqueue tests benchmarks examples sdk/typescript/scripts setup.py
	$(BIN)/ruff format --check mcp_taskqueue tests benchmarks examples sdk/typescript/scripts setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests start their own PostgreSQL server (tests/postgres.py) from the machine's binaries;
# a machine without them gets them from the system package manager.
postgres-binaries:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
		apt-get -o DPkg::Lock::Timeout=900 install -y postgresql || \
		(apt-get -o DPkg::Lock::Timeout=900 update && apt-get -o DPkg::Lock::Timeout=900 install -y postgresql)

test: $(STAMP) lint typecheck test-ts browsers lighthouse conformance doc-tools postgres-binaries
	$(BIN)/python -m pytest -q

# --- Node 22 (from npm, into .cache/node22) and Chromium (Debian) for the TypeScript SDK's tests ---
NODE22 := .cache/node22/node_modules/.bin
SDK := sdk/typescript
NPM := PATH="$(abspath $(NODE22)):$$PATH" npm
APT := apt-get -o DPkg::Lock::Timeout=900

$(NODE22)/node:
	npm install --prefix .cache/node22 --no-audit --no-fund node@22

node22: $(NODE22)/node

# The official MCP conformance suite (server scenarios), run by tests/test_conformance.py.
CONFORMANCE_VERSION := 0.1.16
CONFORMANCE := .cache/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js

$(CONFORMANCE): $(NODE22)/node
	$(NPM) install --no-audit --no-fund --silent --prefix .cache/conformance \
		@modelcontextprotocol/conformance@$(CONFORMANCE_VERSION)

conformance: $(CONFORMANCE)

# Command-line tools the docs' examples use (tests/test_docs.py runs them).
doc-tools:
	@command -v jq >/dev/null || $(APT) install -y -q jq

chromium:
	command -v chromium >/dev/null || $(APT) install -y chromium || ($(APT) update && $(APT) install -y chromium)

# src/generated.ts from the live server's tools/list (tests/test_typescript_sdk.py fails when it is stale)
sdk-generate: $(STAMP)
	$(BIN)/python $(SDK)/scripts/generate.py

$(SDK)/node_modules/.installed: $(NODE22)/node $(SDK)/package-lock.json
	cd $(SDK) && $(NPM) ci --no-audit --no-fund
	touch $@

# Build (ESM, CJS, browser bundle), type-check, lint (eslint + prettier), then the SDK's tests
# against the real Python server (HTTP, stdio, Chromium).
test-ts: $(STAMP) $(SDK)/node_modules/.installed chromium
	cd $(SDK) && $(NPM) run build && $(NPM) run typecheck && $(NPM) run lint && $(NPM) test

# --- the board's browser tests (tests/browser): Debian's browsers, never downloaded ones; Lighthouse from npm ---
browsers:
	command -v chromium >/dev/null && command -v firefox-esr >/dev/null || $(APT) install -y chromium firefox-esr || ($(APT) update && $(APT) install -y chromium firefox-esr)

LIGHTHOUSE := .cache/lighthouse/node_modules/.bin/lighthouse
$(LIGHTHOUSE): $(NODE22)/node
	$(NPM) install --prefix .cache/lighthouse --no-audit --no-fund --silent lighthouse@12

lighthouse: $(LIGHTHOUSE)

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(SDK)/node_modules $(SDK)/dist

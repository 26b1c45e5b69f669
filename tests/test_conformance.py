"""The official MCP conformance suite against our HTTP server, plus the SSE resumability it checks.

`make test` installs Node 22 and @modelcontextprotocol/conformance into .cache/ first (Makefile
targets node22 and conformance). Every server scenario of the active and pending suites runs;
tests/conformance/expected-failures.yml lists the only scenarios allowed to fail (they need the
suite's own fixture tools), each with its reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.servers import http_server

ROOT = Path(__file__).resolve().parents[1]
NODE22 = ROOT / ".cache" / "node22" / "node_modules" / ".bin" / "node"  # Makefile: $(NODE22)/node
SUITE = ROOT / ".cache" / "conformance" / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
EXPECTED = ROOT / "tests" / "conformance" / "expected-failures.yml"
ENTRY = re.compile(r"^  - (?P<scenario>[a-z0-9-]+)\s+# fixture: (?P<fixture>\S+?);\s*(?P<why>\S.*)$")


def expected_failures() -> dict[str, str]:
    """scenario -> fixture, from the checked-in file (every entry must name its fixture and why)."""
    entries: dict[str, str] = {}
    for line in EXPECTED.read_text(encoding="utf-8").splitlines():
        if line.startswith("  - "):
            match = ENTRY.match(line)
            assert match, f"an entry needs '# fixture: <name>; <reason>': {line!r}"
            entries[match["scenario"]] = match["fixture"]
    return entries


def needs_suite() -> None:
    if not (NODE22.exists() and SUITE.exists()):
        if os.environ.get("CI"):
            pytest.fail("the conformance suite is not installed: make test runs `make conformance` first")
        pytest.skip("conformance suite not installed (make conformance)")


def test_expected_failures_name_real_fixtures_only() -> None:
    """Each listed scenario is in this suite version and its fixture (a test_* tool or prompt, a
    test:// resource) is in the suite's source: the list holds fixture needs and nothing else."""
    needs_suite()
    source = SUITE.read_text(encoding="utf-8")
    entries = expected_failures()
    assert "logging-set-level" not in entries and "tools-list" not in entries
    for scenario, fixture in entries.items():
        assert f"`{scenario}`" in source, f"{scenario} is not a scenario of this suite version"
        assert fixture in source, f"{fixture} does not appear in the suite"
        assert fixture.startswith(("test_", "test://", "json_schema_2020_12_tool")), fixture


@pytest.mark.slow
def test_conformance_suite_active_and_pending(db_path: Path, tmp_path: Path) -> None:
    needs_suite()
    with http_server(db_path) as base:
        result = subprocess.run(
            [str(NODE22), str(SUITE), "server", "--url", base + "/mcp", "--suite", "all"]
            + ["--expected-failures", str(EXPECTED), "--output-dir", str(tmp_path / "results")],
            capture_output=True,
            text=True,
            timeout=600,
        )
    summary = result.stdout[result.stdout.find("=== SUMMARY ===") :]
    assert result.returncode == 0, summary + result.stderr[-2000:]

    # Read the results ourselves too: which scenarios ran, which failed or warned.
    outcomes: dict[str, set[str]] = {}
    for checks in (tmp_path / "results").glob("*/checks.json"):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        outcomes[scenario] = {check["status"] for check in json.loads(checks.read_text())}
    bad = {name for name, statuses in outcomes.items() if statuses & {"FAILURE", "WARNING"}}
    assert bad == set(expected_failures()), summary
    passing = set(outcomes) - bad
    assert {"server-initialize", "logging-set-level", "tools-list", "prompts-list", "ping"} <= passing
    assert {"completion-complete", "resources-list", "tools-call-error", "dns-rebinding-protection"} <= passing
    assert len(outcomes) >= 30


def sse_events(text: str) -> list[dict[str, str]]:
    """Parse an SSE body into events (field -> value; data lines joined)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event[name] = event[name] + "\n" + value if name in event else value
        if event:
            events.append(event)
    return events


def test_sse_priming_event_retry_and_replay(db_path: Path) -> None:
    """A 2025-11-25 client's POST stream opens with a priming event (id, empty data) and a retry:
    hint, and reconnecting with Last-Event-ID replays what came after it."""
    version = "2025-11-25"
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with http_server(db_path) as base, httpx.Client(base_url=base, timeout=30) as http:
        init = http.post(
            "/mcp",
            headers=headers,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            },
        )
        assert init.status_code == 200
        session = {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": version}
        http.post(
            "/mcp", headers={**headers, **session}, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
        )

        call = http.post(
            "/mcp",
            headers={**headers, **session},
            json={
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "queue_stats", "arguments": {}},
            },
        )
        assert call.headers["content-type"].startswith("text/event-stream")
        events = sse_events(call.text)
        priming = events[0]
        assert priming.get("id") and priming.get("data", "") == "" and priming.get("retry") == "1000", events
        reply = json.loads(events[-1]["data"])
        assert reply["id"] == 2 and "result" in reply

        # The resumed stream stays open for live events: read until the replayed reply, then hang up.
        replayed: list[dict[str, object]] = []
        resume = {"Accept": "text/event-stream", **session, "Last-Event-ID": priming["id"]}
        with http.stream("GET", "/mcp", headers=resume) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data:") and line[5:].strip():
                    replayed.append(json.loads(line[5:]))
                    if replayed[-1].get("id") == 2:
                        break
        assert "result" in replayed[-1] and replayed[-1]["id"] == 2, replayed

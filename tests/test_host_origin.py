"""The HTTP server keeps its DNS-rebinding defence on every bind address (issue 9, item 9)."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from mcp_taskqueue.config import load
from mcp_taskqueue.server.transports import transport_security
from tests.servers import http_server_process

INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
)
ALL_INTERFACES = ("--host", "0.0.0.0", "--no-auth", "--log-format", "text")


def request(base: str, path: str = "/mcp", host: str | None = None, origin: str | None = None) -> int:
    """POST an initialize to /mcp (or GET another path) over loopback with these Host/Origin headers."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    method = "POST" if path == "/mcp" else "GET"
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or url.netloc)
    if origin:
        conn.putheader("Origin", origin)
    if method == "POST":
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Accept", "application/json, text/event-stream")
        conn.putheader("Content-Length", str(len(INIT)))
    conn.endheaders(INIT.encode() if method == "POST" else None)
    status = conn.getresponse().status
    conn.close()
    return status


def test_all_interfaces_bind_still_refuses_foreign_host_and_origin(tmp_path: Path) -> None:
    """The issue's example: with --host 0.0.0.0, Host/Origin evil.example used to get 200."""
    with http_server_process(tmp_path / "q.db", "http", *ALL_INTERFACES) as (base, _proc):
        assert request(base, host="evil.example") == 421
        assert request(base, origin="http://evil.example") == 403
        assert request(base) == 200  # loopback Host, as any local client sends
        assert request(base, host=f"localhost:{urlparse(base).port}", origin="http://localhost") == 200


def test_the_board_is_defended_too_and_the_probes_answer_any_host(tmp_path: Path) -> None:
    """A rebinding page must not read or drive the board either; orchestrators call the probes by address."""
    with http_server_process(tmp_path / "q.db", "http", *ALL_INTERFACES) as (base, _proc):
        assert request(base, "/board/api/projects", host="evil.example") == 421
        assert request(base, "/board/api/projects", origin="http://evil.example") == 403
        assert request(base, "/board/api/projects") == 200
        assert request(base, "/healthz", host="10.0.0.7:8765") == 200
        assert request(base, "/readyz", host="10.0.0.7:8765") == 200


def test_configured_public_names_are_accepted(tmp_path: Path) -> None:
    extra = ("--allowed-hosts", "tasks.example", "--allowed-origins", "https://app.example")
    with http_server_process(tmp_path / "q.db", "http", *ALL_INTERFACES, *extra) as (base, _proc):
        assert request(base, host="tasks.example") == 200
        assert request(base, host="tasks.example:443", origin="https://app.example") == 200
        assert request(base, host="tasks.example", origin="https://tasks.example") == 200  # its own origin
        assert request(base, host="tasks.example", origin="https://evil.example") == 403
        assert request(base, host="other.example") == 421


def test_allowed_names_come_from_the_config_file_too(tmp_path: Path) -> None:
    config = tmp_path / "mcp-taskqueue.toml"
    config.write_text('[server]\nallowed_hosts = ["queue.internal"]\nallowed_origins = ["https://ops.example"]\n')
    settings, _ = load(config)
    assert settings.server.allowed_hosts == ["queue.internal"]
    with http_server_process(tmp_path / "q.db", "http", "--config", str(config), *ALL_INTERFACES) as (base, _):
        assert request(base, host="queue.internal:8765", origin="https://ops.example") == 200
        assert request(base, host="evil.example") == 421


def test_serving_on_all_interfaces_warns_naming_the_risk(tmp_path: Path) -> None:
    logs = tmp_path / "server.log"
    with http_server_process(tmp_path / "q.db", "http", *ALL_INTERFACES, "--log-file", str(logs)) as (base, _):
        assert request(base) == 200
    text = logs.read_text()
    assert "all interfaces" in text and "DNS-rebinding" in text and "--allowed-hosts" in text


@pytest.mark.parametrize(
    ("bind", "header", "allowed"),
    [
        ("10.1.2.3", "10.1.2.3:8765", True),
        ("10.1.2.3", "evil.example:8765", False),
        ("::", "[::1]:8765", True),
        ("0.0.0.0", "0.0.0.0:8765", False),
        ("127.0.0.1", "localhost:8765", True),
    ],
)
def test_settings_name_the_bound_address_and_loopback(bind: str, header: str, allowed: bool) -> None:
    hosts = transport_security(bind).allowed_hosts
    ok = header in hosts or any(h.endswith(":*") and header.startswith(h[:-1]) for h in hosts)
    assert ok is allowed

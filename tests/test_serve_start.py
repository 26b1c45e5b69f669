"""Starting the HTTP server as a user does: the banner comes after the bind and names a URL that
answers; a taken port is one line and a non-zero exit; `make run HOST= PORT= DB=` is honoured."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcp_taskqueue.server.transports import reachable_host
from tests.servers import free_port, server_env

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def started(command: list[str], cwd: Path = ROOT) -> Iterator[subprocess.Popen[str]]:
    """A process in its own group (so `make`'s child goes too), killed afterwards."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def read_banner(proc: subprocess.Popen[str], timeout: float = 60.0) -> list[str]:
    """stderr lines up to and including the Claude Desktop hint (the banner's last line)."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"server exited before its banner: {''.join(lines)}")
        lines.append(line.rstrip("\n"))
        if "Claude Desktop" in line:
            return lines
    raise AssertionError(f"no banner within {timeout}s: {lines}")


def healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        return response.status == 200


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mcp_taskqueue.cli", "serve", "--transport", "http", *args]


def test_banner_after_bind_names_a_reachable_url_and_the_store(tmp_path: Path) -> None:
    db = tmp_path / "wild.db"
    # all interfaces need a token or an explicit --no-auth (issue 13); the banner is the text log format's
    args = ("--host", "0.0.0.0", "--no-auth", "--log-format", "text", "--port", "0", "--db", str(db))
    with started(serve_command(*args)) as proc:
        banner = read_banner(proc)
        banner = banner[next(i for i, line in enumerate(banner) if "listening on" in line) :]  # after warnings
        match = re.match(r"mcp-taskqueue \S+ listening on (http://127\.0\.0\.1:(\d+))$", banner[0])
        assert match, banner[0]
        assert int(match[2]) > 0 and not any("0.0.0.0" in line for line in banner)
        assert healthy(match[1])  # the banner is printed once the server answers, not before the bind
        assert f"  store:           {db}" in banner
        hint = json.loads(banner[-1].split("(stdio, same store): ", 1)[1])
        assert hint["mcpServers"]["taskqueue"]["args"] == ["serve", "--db", str(db)]


def test_taken_port_is_one_line_and_non_zero(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            serve_command("--port", str(port), "--db", str(tmp_path / "t.db")),
            capture_output=True,
            text=True,
            timeout=120,
            env=server_env(),
        )
    assert result.returncode == 9  # the exit code of start-up errors
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: startup: cannot listen on 127.0.0.1:{port}: "), lines
    assert "in use" in lines[0] and "another mcp-taskqueue?" in lines[0] and "--port" in lines[0]


def test_unresolvable_host_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        serve_command("--host", "no-such-host.invalid", "--no-auth", "--port", "0", "--db", str(tmp_path / "h.db")),
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(),
    )
    assert result.returncode == 9 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "no-auth" not in line]  # the --no-auth warning aside
    assert len(lines) == 1 and lines[0].startswith("error: startup: cannot listen on no-such-host.invalid:0: "), lines
    assert lines[0].endswith("check --host"), lines


@pytest.mark.parametrize(
    ("host", "expected"),
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("localhost", "localhost")],
)
def test_reachable_host(host: str, expected: str) -> None:
    assert reachable_host(host) == expected


@pytest.mark.slow
def test_make_run_honours_host_port_and_db(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / ".installed").exists():
        pytest.skip("make run needs the checkout's .venv (made by make test)")
    port, db = free_port(), tmp_path / "made.db"
    with started(["make", "--no-print-directory", "run", "HOST=127.0.0.1", f"PORT={port}", f"DB={db}"]) as proc:
        banner = read_banner(proc, timeout=120)
        assert f"listening on http://127.0.0.1:{port}" in banner[0]
        assert f"  store:           {db}" in banner
        assert healthy(f"http://127.0.0.1:{port}")
    assert db.exists()

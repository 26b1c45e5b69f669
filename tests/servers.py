"""Starting real server processes for tests: stdio parameters and HTTP servers on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mcp.client.stdio import StdioServerParameters


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stdio_params(db: Path, *extra: str) -> StdioServerParameters:
    """Parameters for `mcp-taskqueue --db DB serve` as a stdio subprocess."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_taskqueue.cli", "--db", str(db), "serve", *extra],
        env=server_env(),
    )


@contextmanager
def http_server(
    db: Path, transport: str = "http", timeout: float = 30.0, port: int | None = None, extra: tuple[str, ...] = ()
) -> Iterator[str]:
    """Run `serve --transport http|sse` on a free port (or `port`), with `extra` serve options; yields the
    base URL, kills it afterwards."""
    with http_server_process(db, transport, *extra, timeout=timeout, port=port) as (base, _proc):
        yield base


@contextmanager
def http_server_process(
    db: Path,
    transport: str = "http",
    *extra: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`http_server` with extra `serve` options and environment; yields (base URL, process)."""
    port = port or free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below) not a pipe: a chatty server must never block on a full pipe
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db), "serve", "--transport", transport]
        + ["--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**server_env(), **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        wait_healthy(proc, base, timeout, output)
        yield base, proc
    finally:
        stop(proc)
        log.close()


def wait_healthy(
    proc: subprocess.Popen[bytes], base: str, timeout: float = 30.0, output: Callable[[], str] = lambda: ""
) -> None:
    """Wait until `base`/healthz answers 200; RuntimeError (with the server's `output`) if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}): {output()}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server on {base} did not become healthy: {output()}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

"""Starting servers as subprocesses for the benchmarks, and reading their peak memory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcp import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ours_args(db: Path, transport: str, port: int | None = None) -> list[str]:
    # WARNING: the benchmark reads stderr only when the server fails, so no per-request records
    args = ["-m", "mcp_taskqueue.cli", "--db", str(db), "serve", "--transport", transport, "--log-level", "WARNING"]
    return args + (["--port", str(port)] if port is not None else [])


def floor_args(transport: str, port: int | None = None) -> list[str]:
    args = ["-m", "benchmarks.floor_server", "--transport", transport]
    return args + (["--port", str(port)] if port is not None else [])


def stdio_params(args: list[str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=args, cwd=str(ROOT))


@contextmanager
def http_server(args_for_port: list[str], port: int, timeout: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server subprocess until it accepts connections; stop it (by its pid) afterwards."""
    proc = subprocess.Popen(
        [sys.executable, *args_for_port], cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"server exited with {proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server on port {port} did not start in {timeout}s") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has used so far (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


__all__ = ["ROOT", "floor_args", "free_port", "http_server", "ours_args", "peak_rss_mb", "stdio_params"]

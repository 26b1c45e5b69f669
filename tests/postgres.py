"""A real PostgreSQL server for the tests, started from the machine's own binaries.

`make test` (and plain pytest) start one server per test session, lazily, the first time a test
asks for PostgreSQL: `initdb` in a temporary folder, a free port on 127.0.0.1, the unix socket in
that folder too. When the tests run as root the cluster belongs to an unprivileged user (the
`postgres` account the Debian package creates, else `nobody`), because PostgreSQL refuses to run
as root. Each test gets a database of its own, cloned from a template that already holds the
schema, and the server is stopped when the session ends. The Makefile installs the binaries with
apt when the machine lacks them; nothing here is a mock or an external service.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

TEMPLATE = "tq_template"
SUPERUSER = "taskqueue"


def bin_dir() -> Path:
    """The folder holding initdb/pg_ctl: the newest /usr/lib/postgresql/N/bin, else the PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    raise RuntimeError(
        "PostgreSQL binaries (initdb, pg_ctl) are not installed; `make test` installs them with "
        "`apt-get install postgresql`"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    """The account to run PostgreSQL as when we are root (it refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL as")


class PostgresServer:
    """One throwaway PostgreSQL cluster: `start()`, `new_database()`, `stop()`."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="tq-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = _run_as()
        self.bin = bin_dir()
        self._names = itertools.count(1)
        self.running = False

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        os.chmod(self.root, 0o755)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            self._cmd(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                "--locale=C", "--no-sync",
            ),
            check=True, capture_output=True, cwd="/",
        )  # fmt: skip
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=400",
            "-c shared_buffers=64MB",
        ]
        if not self.durable:
            # a test server: losing it on a power cut loses nothing
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        subprocess.run(
            self._cmd(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                "-t", "60", "-o", " ".join(options), "start",
            ),
            check=True, capture_output=True, cwd="/",
        )  # fmt: skip
        self.running = True
        atexit.register(self.stop)
        self._make_template()
        return self

    def _make_template(self) -> None:
        import psycopg

        from mcp_taskqueue.store import open_store

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        open_store(self.url(TEMPLATE)).close()  # applies the schema once; clones inherit it

    def new_database(self) -> str:
        """A fresh database with the schema applied; returns its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        deadline = time.monotonic() + 30
        with psycopg.connect(self.url(), autocommit=True) as conn:
            while True:
                try:
                    conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
                    break
                except psycopg.errors.ObjectInUse:  # the template still has a closing connection
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `new_database`, ending any connection still open to it."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.running:
            self.running = False
            subprocess.run(
                self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                capture_output=True,
                cwd="/",
            )
        shutil.rmtree(self.root, ignore_errors=True)

"""A bad day for the operator (issue 11): locks held elsewhere, oversized requests, abandoned sessions,
files deleted or damaged under a running server, start-up mistakes, full disks and live restores.

Every fault here is real: other processes hold real locks, files are really deleted, the disk is a
really full tmpfs, and the server is a real `mcp-taskqueue serve` process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_taskqueue.errors import StoreUnavailable
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.mcp_calls import call, call_error
from tests.raw_http import call_tool, initialize, open_session, post, rss_bytes, tool_call_body
from tests.servers import http_server_process, server_env

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "mcp_taskqueue.cli"]

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute(sys.argv[2])
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
"""


@contextmanager
def lock_held(db: Path, seconds: float, begin: str = "BEGIN EXCLUSIVE") -> Iterator[subprocess.Popen[bytes]]:
    """Another process holds a write lock on `db` (killed on exit, which releases it)."""
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), begin, str(seconds)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def get_json(url: str, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**server_env(), **(env or {})},
    )


def assert_one_line(stderr: str, *needles: str) -> None:
    """An operator's error: one line, naming what is wrong and what to do, and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --- 1. deadlines: reads never wait behind writers; every call has one deadline ----------------


async def test_reads_answer_and_writes_fail_store_busy_within_the_deadline_while_another_process_locks(
    tmp_path: Path,
) -> None:
    """Another process holds BEGIN EXCLUSIVE far longer than the 1.5 s deadline (the issue's 30 s lock)."""
    db = tmp_path / "locked.db"
    deadline, margin = 1.5, 3.0
    with http_server_process(db, env={"TASKQUEUE_STORE_TIMEOUT": str(deadline)}) as (base, _proc):
        async with Client(base + "/mcp") as client:
            task = await call(client, "create_task", title="before the lock")
            with lock_held(db, 60):
                # Six writers at once: each fails alone within the deadline, not one after another.
                started = time.monotonic()
                results: list[tuple[float, str]] = []

                async def write(i: int) -> None:
                    text = await call_error(client, "create_task", title=f"blocked {i}")
                    results.append((time.monotonic() - started, text))

                async with anyio.create_task_group() as tg:
                    for i in range(6):
                        tg.start_soon(write, i)
                    await anyio.sleep(0.3)  # the writers are waiting now; reads must not queue behind them
                    for read in (
                        call(client, "get_task", task_id=task["id"]),
                        call(client, "list_tasks"),
                        call(client, "queue_stats"),
                        client.read_resource(f"taskqueue://tasks/{task['id']}"),
                    ):
                        t0 = time.monotonic()
                        await read
                        assert time.monotonic() - t0 < 1.0
                    t0 = time.monotonic()
                    assert get_json(base + "/healthz")[0] == 200
                    assert time.monotonic() - t0 < 0.5
                assert len(results) == 6
                for elapsed, text in results:
                    assert "store_busy:" in text and "waited 1.5 s" in text and str(db) in text, text
                    assert "nothing was changed" in text and "database is locked" not in text
                    assert deadline * 0.8 < elapsed < deadline + margin, elapsed
            # The lock is gone: nothing of the refused writes was applied, and writing works again.
            assert (await call(client, "queue_stats"))["total"] == 1
            await call(client, "create_task", title="after the lock")
            assert (await call(client, "queue_stats"))["total"] == 2


def test_one_deadline_covers_the_whole_call_not_each_retry(tmp_path: Path) -> None:
    """In process, with this process's own writer holding the write connection: one deadline, then store_busy."""
    store = Store(tmp_path / "inner.db", timeout=0.5)
    queue = TaskQueue(store)
    entered, release = threading.Event(), threading.Event()

    def slow(_tx: object) -> None:
        entered.set()
        release.wait(10)

    holder = threading.Thread(target=store.write, args=(slow,))
    holder.start()
    try:
        assert entered.wait(5)
        started = time.monotonic()
        with pytest.raises(Exception, match="behind this server's other writers") as info:
            queue.create({"title": "waits"})
        assert getattr(info.value, "code", "") == "store_busy"
        assert 0.4 < time.monotonic() - started < 2.5
        # Reads use their own connections: they answer while the writer holds the write connection.
        started = time.monotonic()
        assert queue.stats().total == 0
        assert time.monotonic() - started < 0.5
    finally:
        release.set()
        holder.join()
        store.close()


# --- 2. memory per request is bounded before work starts ----------------------------------------


def test_sixteen_concurrent_oversized_batches_leave_memory_near_idle(tmp_path: Path) -> None:
    """The issue's example: 250 000 `{"title": "t"}` items (3.4 MB, under the body cap), 16 at once."""
    with http_server_process(tmp_path / "mem.db") as (base, proc):
        session = open_session(base)
        call_tool(base, session, "create_tasks", {"tasks": [{"title": "warm up"}]})
        time.sleep(0.5)
        idle = rss_bytes(proc.pid)
        items = json.dumps({"tasks": [{"title": "t"}] * 250_000}, separators=(",", ":"))
        body = tool_call_body("create_tasks", items)
        assert 3_000_000 < len(body) < 4 * 1024 * 1024
        sessions = [open_session(base) for _ in range(16)]
        replies: list[Any] = []
        peak = [idle]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes(proc.pid))
                time.sleep(0.02)

        def send(sid: str) -> None:
            replies.append(post(base, body, sid))

        watcher = threading.Thread(target=watch)
        watcher.start()
        senders = [threading.Thread(target=send, args=(sid,)) for sid in sessions]
        for t in senders:
            t.start()
        for t in senders:
            t.join(120)
        done.set()
        watcher.join()
        after = rss_bytes(proc.pid)
        assert len(replies) == 16
        for reply in replies:
            assert reply.status == 413
            message = json.loads(reply.body)
            assert message["id"] == 2
            assert "validation_failed: tasks: at most 500 items" in message["error"]["message"]
        assert after - idle < 100 * 2**20, f"idle {idle >> 20} MB, after {after >> 20} MB"
        assert peak[0] - idle < 150 * 2**20, f"idle {idle >> 20} MB, peak {peak[0] >> 20} MB"
        # Nothing was created, and the server still works for everyone.
        stats = call_tool(base, session, "queue_stats", {})
        assert stats["structuredContent"]["total"] == 1


def test_limits_are_advertised_and_enforced_before_items_are_validated(tmp_path: Path) -> None:
    """More kinds of oversized input: a long string argument, too many values, and in-process calls."""
    with http_server_process(tmp_path / "limits.db") as (base, _proc):
        session = open_session(base)
        listing = post(base, b'{"jsonrpc":"2.0","id":3,"method":"tools/list"}', session).message()["result"]["tools"]
        schemas = {t["name"]: t["inputSchema"]["properties"] for t in listing}
        assert schemas["create_tasks"]["tasks"]["maxItems"] == 500
        assert "maxLength" in json.dumps(schemas["create_task"]["title"])
        # A 1 MB title is refused while streaming, before it becomes a string of ours.
        big_title = tool_call_body("create_task", json.dumps({"title": "x" * 1_000_000}))
        reply = post(base, big_title, session)
        assert reply.status == 413 and "title: at most 500 characters" in reply.body.decode()
        # A legal-size list whose items hold too many values in total.
        many = tool_call_body("create_task", json.dumps({"title": "t", "payload": {"v": [0] * 300_000}}))
        reply = post(base, many, session)
        assert reply.status == 413 and "more than 200000 JSON values" in reply.body.decode()
        # Small bodies are checked by the server itself, with the same wording, before any item is validated.
        result = call_tool(base, session, "claim_task", {"worker": "w", "kinds": ["k"] * 51})
        assert result["isError"] and "kinds: at most 50 items (got 51)" in result["content"][0]["text"]
        assert call_tool(base, session, "queue_stats", {})["structuredContent"]["total"] == 0


# --- 3. sessions cannot be exhausted -------------------------------------------------------------


def test_sessions_per_peer_and_idle_sessions_are_reaped(tmp_path: Path) -> None:
    """Initialize-only sessions, never closed: capped per client address, then reaped when idle."""
    extra = ("--sessions-per-peer", "5", "--session-idle-timeout", "1.5")
    with http_server_process(tmp_path / "sessions.db", "http", *extra) as (base, _proc):
        abandoned = [open_session(base) for _ in range(5)]
        refused = initialize(base)
        assert refused.status == 503
        assert "Too many open sessions from 127.0.0.1 (5)" in refused.body.decode()
        # A client that closes its session gets its room back at once.
        assert post(base, b"", abandoned[0], method="DELETE").status in (200, 204)
        reopened = open_session(base)
        assert initialize(base).status == 503
        time.sleep(4)  # past the idle timeout: every abandoned session is closed and forgotten
        assert post(base, b'{"jsonrpc":"2.0","id":9,"method":"ping"}', reopened).status == 404
        fresh = [open_session(base) for _ in range(5)]
        assert call_tool(base, fresh[0], "queue_stats", {})["structuredContent"]["total"] == 0


def test_refused_requests_without_a_session_do_not_use_up_the_peers_sessions(tmp_path: Path) -> None:
    """The SDK names a session in some 400s (a request other than initialize without a session, a body
    that is not JSON-RPC) but keeps none: those must not count against --sessions-per-peer."""
    with http_server_process(tmp_path / "refused.db", "http", "--sessions-per-peer", "3") as (base, _proc):
        for body in (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', b'{"not": "json-rpc"}') * 4:
            reply = post(base, body)
            assert reply.status == 400, (reply.status, reply.body[:200])
        sessions = [open_session(base) for _ in range(3)]  # the whole allowance is still there
        assert call_tool(base, sessions[0], "queue_stats", {})["structuredContent"]["total"] == 0
        assert initialize(base).status == 503  # and the cap still holds


def test_max_sessions_is_a_whole_server_bound_and_frees_up(tmp_path: Path) -> None:
    extra = ("--max-sessions", "8", "--session-idle-timeout", "1.5")
    with http_server_process(tmp_path / "max.db", "http", *extra) as (base, proc):
        for _ in range(8):
            open_session(base)
        assert initialize(base).status == 503
        time.sleep(4)
        open_session(base)
        assert proc.poll() is None


def test_sse_streams_are_capped_per_peer_and_free_up_when_closed(tmp_path: Path) -> None:
    """The other transport: an SSE session lives as long as its GET /sse stream."""
    with http_server_process(tmp_path / "sse.db", "http", "--sessions-per-peer", "2") as (base, _proc):
        streams = [urllib.request.urlopen(base + "/sse", timeout=10) for _ in range(2)]
        try:
            for stream in streams:
                assert stream.status == 200 and stream.readline().startswith(b"event: endpoint")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + "/sse", timeout=10)
            assert refused.value.code == 503
            assert b"Too many open sessions from 127.0.0.1" in refused.value.read()
            streams.pop().close()
            deadline = time.monotonic() + 10
            while True:  # the server notices the closed connection shortly
                try:
                    streams.append(urllib.request.urlopen(base + "/sse", timeout=10))
                    break
                except urllib.error.HTTPError as exc:
                    assert exc.code == 503 and time.monotonic() < deadline
                    time.sleep(0.2)
        finally:
            for stream in streams:
                stream.close()


# --- 4. the store notices when its file is gone or damaged ---------------------------------------


async def test_deleted_files_refuse_writes_with_store_lost_and_readyz_not_ready(tmp_path: Path) -> None:
    """The issue's example A: `rm tasks.db tasks.db-wal tasks.db-shm` under a running server."""
    db = tmp_path / "tasks.db"
    with http_server_process(db) as (base, _proc):
        assert get_json(base + "/readyz") == (
            200,
            {"status": "ready", "version": get_json(base + "/healthz")[1]["version"]},
        )
        async with Client(base + "/mcp") as client:
            task = await call(client, "create_task", title="acknowledged")
            claimed = await call(client, "claim_task", worker="w")
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            text = await call_error(client, "create_task", title="would be lost")
            assert "store_lost:" in text and str(db) in text and "deleted" in text and "Restart" in text
            lease = claimed["lease_id"]
            text = await call_error(client, "complete_task", task_id=task["id"], worker="w", lease_id=lease)
            assert "store_lost:" in text
            status, body = get_json(base + "/readyz")
            assert status == 503 and body["error"] == "store_lost" and str(db) in body["reason"]
            assert get_json(base + "/healthz")[0] == 200  # the process itself is up
            # Reads still answer from the open (unlinked) file.
            assert (await call(client, "get_task", task_id=task["id"]))["title"] == "acknowledged"


async def test_a_replaced_file_is_store_lost_too(tmp_path: Path) -> None:
    """Another kind: the path now names a different file (a CLI created a new empty queue there)."""
    db = tmp_path / "tasks.db"
    with http_server_process(db) as (base, _proc):
        async with Client(base + "/mcp") as client:
            await call(client, "create_task", title="first")
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            assert run_cli("--db", str(db), "task", "add", "new queue").returncode == 0
            text = await call_error(client, "create_task", title="into which file?")
            assert "store_lost:" in text and "replaced" in text
            assert get_json(base + "/readyz")[0] == 503


def damage(db: Path) -> None:
    """A real store with data, then garbage over its pages past the first (its header stays valid)."""
    store = Store(db)
    TaskQueue(store).create_many([{"title": f"t{i}", "description": "x" * 2000} for i in range(200)])
    store.close()
    size = db.stat().st_size
    with db.open("r+b") as fh:
        fh.seek(4096 * 2)
        fh.write(os.urandom(min(4096 * 20, size - 4096 * 2)))


def test_a_damaged_file_is_refused_at_open_and_never_written(tmp_path: Path) -> None:
    """The issue's example B: quick_check at open, one line naming the path and the next step."""
    db = tmp_path / "damaged.db"
    damage(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(StoreUnavailable) as info:
        Store(db)
    assert str(db) in str(info.value) and "damaged" in str(info.value) and "restore" in str(info.value)
    result = run_cli("--db", str(db), "serve", "--transport", "http", "--port", "0")
    assert result.returncode == 8
    assert_one_line(result.stderr, "store_unavailable", str(db), "damaged", "restore the last backup")
    result = run_cli("--db", str(db), "task", "list")
    assert result.returncode == 8 and "damaged" in result.stderr and "Traceback" not in result.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0
    # The explicit full check says the same, and a debug log level shows the traceback.
    assert run_cli("--db", str(db), "check").returncode == 8
    debug = run_cli("--db", str(db), "serve", "--log-level", "debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# --- 5. errors an operator can act on ------------------------------------------------------------


def test_port_in_use_is_one_line_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("--db", str(tmp_path / "p.db"), "serve", "--transport", "http", "--port", str(port))
    assert result.returncode == 9
    assert_one_line(result.stderr, f"127.0.0.1:{port}", "in use", "--port")


def test_port_zero_binds_a_free_port_and_the_banner_names_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "--db", str(tmp_path / "zero.db"), "serve", "--transport", "http", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=server_env(),
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()  # the banner's first line, or the JSON `listening` record
        port = int(re.search(r"listening on http://[^\s\"]+:(\d+)", first)[1])  # type: ignore[index]
        assert port > 0
        assert get_json(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert get_json(f"http://127.0.0.1:{port}/readyz")[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


@contextmanager
def small_tmpfs(where: Path, size: str = "3m") -> Iterator[Path]:
    """A small tmpfs mounted at `where` (root only; skips with the reason otherwise); unmounted afterwards."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip() or 'mount failed'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def unwritable(tmp_path: Path, fault: str) -> Iterator[tuple[Path, str]]:
    """(database path, what the error must name) for a folder or a file this process cannot write.

    Root ignores permission bits, so as root the folder is a read-only tmpfs; otherwise chmod.
    """
    if os.geteuid() == 0:
        with small_tmpfs(tmp_path / "ro") as disk:
            if fault == "read-only file":
                Store(disk / "tasks.db").close()
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            if fault == "read-only file":
                yield disk / "tasks.db", str(disk / "tasks.db")
            else:
                yield disk / "sub" / "tasks.db", str(disk / "sub")  # mkdir fails: the folder is named
        return
    folder = tmp_path / "locked"
    folder.mkdir()
    if fault == "read-only file":
        db = folder / "tasks.db"
        Store(db).close()
        db.chmod(0o444)
        yield db, str(db)
        return
    folder.chmod(0o000)
    try:
        yield folder / "tasks.db", str(folder)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("fault", ["unwritable folder", "read-only file"])
def test_permission_problems_at_start_up_are_one_line(tmp_path: Path, fault: str) -> None:
    with unwritable(tmp_path, fault) as (db, needle):
        result = run_cli("--db", str(db), "serve", "--transport", "http", "--port", "0")
    assert result.returncode == 8
    assert_one_line(result.stderr, "store_unavailable", needle)
    assert "--db" in result.stderr


async def test_a_full_disk_is_store_full_not_ready_and_recovers_by_itself(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        db = disk / "tasks.db"
        with http_server_process(db) as (base, _proc):
            async with Client(base + "/mcp") as client:
                await call(client, "create_task", title="fits")
                filler = disk / "filler"
                with filler.open("wb") as fh:  # take every free byte
                    try:
                        while True:
                            fh.write(b"\0" * 65536)
                            fh.flush()
                    except OSError:
                        pass
                text = ""
                for i in range(50):  # the WAL may have a little room left; soon it has none
                    result = await client.call_tool("create_task", {"title": f"big {i}", "description": "x" * 19000})
                    if result.is_error:
                        text = result.content[0].text  # type: ignore[union-attr]
                        break
                assert "store_full:" in text and "Free space on" in text and str(disk) in text, text
                status, body = get_json(base + "/readyz")
                assert status == 503 and body["error"] == "store_full"
                assert get_json(base + "/healthz")[0] == 200
                before = (await call(client, "queue_stats"))["total"]
                filler.unlink()  # the operator frees space; nobody restarts anything
                assert get_json(base + "/readyz")[0] == 200
                await call(client, "create_task", title="after space returned")
                assert (await call(client, "queue_stats"))["total"] == before + 1
        assert run_cli("--db", str(db), "check").returncode == 0


# --- 6. restores cannot rewind a live queue by accident ------------------------------------------


def test_restore_refuses_while_a_server_has_the_database_open_and_names_it(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    backup = tmp_path / "backup.db"
    assert run_cli("--db", str(db), "task", "add", "in the backup").returncode == 0
    assert run_cli("--db", str(db), "backup", str(backup)).returncode == 0
    assert run_cli("--db", str(db), "task", "add", "acknowledged after the backup").returncode == 0
    with http_server_process(db) as (_base, proc):
        result = run_cli("--db", str(db), "restore", str(backup), "--yes")
        assert result.returncode == 4
        assert_one_line(result.stderr, "conflict", str(db), f"pid {proc.pid}", "serve", "--force")
    listed = json.loads(run_cli("--db", str(db), "--format", "json", "task", "list").stdout)
    assert len(listed["tasks"]) == 2  # nothing was rewound
    # With nobody else on the file, the restore goes ahead.
    result = run_cli("--db", str(db), "restore", str(backup), "--yes")
    assert result.returncode == 0, result.stderr
    listed = json.loads(run_cli("--db", str(db), "--format", "json", "task", "list").stdout)
    assert [t["title"] for t in listed["tasks"]] == ["in the backup"]


def test_restore_sees_any_process_holding_the_files_and_force_overrides(tmp_path: Path) -> None:
    """Another kind of holder: a plain script with the database open (not our server)."""
    db = tmp_path / "held.db"
    backup = tmp_path / "b.db"
    assert run_cli("--db", str(db), "task", "add", "one").returncode == 0
    assert run_cli("--db", str(db), "backup", str(backup)).returncode == 0
    with lock_held(db, 60, begin="SELECT 1") as holder:
        result = run_cli("--db", str(db), "restore", str(backup), "--yes")
        assert result.returncode == 4 and f"pid {holder.pid}" in result.stderr
        forced = run_cli("--db", str(db), "restore", str(backup), "--yes", "--force")
        assert forced.returncode == 0, forced.stderr

"""Delivery that loses nothing: a server SIGKILLed mid-send delivers after restart under the same
webhook-id, events committed while no server runs go out when one starts, and a receiver that was
down for a while gets everything once it is back, in order per task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from mcp_taskqueue.notify.dispatcher import Dispatcher
from mcp_taskqueue.notify.notifiers import Notifiers
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store, open_store
from tests.receivers import Receiver, http_receiver
from tests.servers import free_port, server_env, stop, wait_healthy
from tests.service_servers import cli
from tests.test_notify import FAST, wait_until

SECRET = "delivery-test-secret-0123456789"


def start_server(db: Path | str, transport: str = "http", *extra: str, allow: bool = True) -> subprocess.Popen[bytes]:
    """`serve --transport TRANSPORT` with the dispatcher, polling fast, and no client ever connected;
    for http and sse returns once /healthz answers (stdio: once started, its stdin held open).
    `allow`: 127.0.0.1 is allowed through the environment (else only what `extra`'s --config says)."""
    port = free_port()
    env = server_env() | {"TASKQUEUE_NOTIFY_POLL": "0.1"}
    env |= {"TASKQUEUE_NOTIFY_TIMEOUT": "120", "TASKQUEUE_NOTIFY_RETRY_BASE": "0.2"}
    if allow:
        env["TASKQUEUE_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    else:
        env.pop("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", None)
    args = [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db), "serve", "--transport", transport, *extra]
    if transport != "stdio":
        args += ["--port", str(port)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if transport == "stdio":
        return proc
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}")
    except Exception:
        proc.kill()
        raise
    return proc


def complete_one(queue: TaskQueue, title: str) -> str:
    task = queue.create({"title": title})
    assert queue.claim("w", lease_seconds=600) is not None
    queue.complete(task.id, "w")
    return task.id


def test_a_server_killed_between_commit_and_send_delivers_after_restart_under_the_same_id(
    db_path: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    db = db_path
    first = threading.Event()

    def hang_first(request: object) -> tuple[int, float, dict[str, str]]:
        if not first.is_set():
            first.set()
            return 200, 60.0, {}  # the server dies while waiting for this answer
        return 200, 0.0, {}

    store = open_store(db)
    try:
        notifiers = Notifiers(store)
        queue = TaskQueue(store)
        with http_receiver(Receiver(secret=SECRET, behaviour=hang_first)) as rx:
            notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
            server = start_server(db)
            try:
                a = complete_one(queue, "a")  # committed here; the server's dispatcher sends it
                rx.wait_for(1)
            finally:
                os.kill(server.pid, signal.SIGKILL)
                server.wait()
            (pending,) = notifiers.get("hook").recent
            assert pending.status == "pending" and pending.attempts == 0  # the send never finished
            b = complete_one(queue, "b")  # committed while no server runs at all
            server = start_server(db)
            try:
                got = rx.wait_for(3)
                deadline = time.monotonic() + 30
                while notifiers.get("hook").deliveries != {"delivered": 2}:
                    assert time.monotonic() < deadline, notifiers.get("hook").deliveries
                    time.sleep(0.1)
            finally:
                server.terminate()
                server.wait(timeout=30)
    finally:
        store.close()
    ids = {r.verified["data"]["task"]["id"]: r.headers["webhook-id"] for r in got[1:]}
    assert got[0].headers["webhook-id"] == ids[a] == pending.id  # the same id before and after the crash
    assert set(ids) == {a, b}
    assert all(r.verify_error is None for r in got)


def test_a_receiver_down_for_a_while_gets_everything_once_back_in_order_per_task(
    store: Store, queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    port = free_port()
    notifiers = Notifiers(store)
    events = ["task.completed", "task.failed", "task.dead"]
    notifiers.create("hook", "webhook", f"http://127.0.0.1:{port}/hook", events, secret=SECRET)
    settings = replace(FAST, max_attempts=100, retry_base=0.1, retry_cap=0.5, circuit_failures=3, circuit_seconds=0.5)
    dispatcher = Dispatcher(store, settings)
    dispatcher.start()
    try:
        tasks = []
        for i in range(4):
            task = queue.create({"title": f"t{i}"})
            assert queue.claim("w", lease_seconds=600) is not None
            queue.fail(task.id, "w", "broken", retryable=False)  # task.failed, task.dead
            queue.retry(task.id)
            assert queue.claim("w", lease_seconds=600) is not None
            queue.complete(task.id, "w")  # task.completed
            tasks.append(task.id)
        deadline = time.monotonic() + 60
        while notifiers.get("hook").circuit_open_until is None:  # it tried, failed, and backed off
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert notifiers.get("hook").deliveries == {"pending": 12}
        with http_receiver(Receiver(secret=SECRET), port=port) as rx:
            rx.wait_for(12, timeout=60)
            while notifiers.get("hook").deliveries != {"delivered": 12}:
                assert time.monotonic() < deadline + 60
                time.sleep(0.05)
    finally:
        dispatcher.stop()
    per_task: dict[str, list[str]] = defaultdict(list)
    for r in rx.received:
        assert r.verify_error is None
        per_task[r.verified["data"]["task"]["id"]].append(r.verified["type"])
    assert {t: per_task[t] for t in tasks} == {t: ["task.failed", "task.dead", "task.completed"] for t in tasks}
    assert len({r.headers["webhook-id"] for r in rx.received}) == 12


@pytest.mark.parametrize("transport", ["sse", "stdio"])
def test_the_dispatcher_runs_for_the_servers_life_with_no_client_connected(
    db_path: Path | str, store: Store, queue: TaskQueue, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    notifiers = Notifiers(store)
    with http_receiver(Receiver(secret=SECRET)) as rx:
        notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
        server = start_server(db_path, transport)
        try:
            task_id = complete_one(queue, "sent with nobody connected")
            (got,) = rx.wait_for(1, timeout=60)
        finally:
            stop(server)
    assert got.verify_error is None and got.verified["data"]["task"]["id"] == task_id


def test_two_servers_on_one_database_send_each_notification_once_and_the_survivor_takes_over(
    db_path: Path | str, store: Store, queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    notifiers = Notifiers(store)

    def owner_pid() -> int | None:
        row = store.read(lambda tx: tx.singleton_lease("notify-dispatcher"))
        return None if row is None else int(row["owner"].split("/")[1])

    with http_receiver(Receiver(secret=SECRET)) as rx:
        notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
        servers = {p.pid: p for p in (start_server(db_path), start_server(db_path))}
        try:
            before = [complete_one(queue, f"before {i}") for i in range(6)]
            rx.wait_for(6, timeout=60)
            wait_until(lambda: notifiers.get("hook").deliveries == {"delivered": 6}, timeout=60)
            owner = owner_pid()
            assert owner in servers  # one of the two sends; the other waits
            sent_before = [r.headers["webhook-id"] for r in rx.received]
            os.kill(owner, signal.SIGKILL)
            servers.pop(owner).wait()
            after = [complete_one(queue, f"after {i}") for i in range(6)]
            wait_until(lambda: notifiers.get("hook").deliveries == {"delivered": 12}, timeout=60)
            (survivor,) = servers
            assert owner_pid() == survivor
        finally:
            for proc in servers.values():
                stop(proc)
    assert len(sent_before) == len(set(sent_before)) == 6  # one owner at a time: no duplicates
    by_task = {r.verified["data"]["task"]["id"] for r in rx.received}
    assert by_task == set(before) | set(after)
    assert all(r.verify_error is None for r in rx.received)


def test_the_config_files_allow_hosts_let_the_cli_and_the_server_reach_a_private_receiver(
    db_path: Path | str, store: Store, queue: TaskQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", raising=False)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    plain = tmp_path / "plain.toml"
    plain.write_text("[logging]\nlevel = 'WARNING'\n", encoding="utf-8")
    allowing = tmp_path / "mcp-taskqueue.toml"
    allowing.write_text('[notifications]\nallow_hosts = ["10.0.0.0/8", "127.0.0.1"]\n', encoding="utf-8")
    with http_receiver(Receiver(secret=SECRET)) as rx:
        add = [
            "notify",
            "add",
            "hook",
            "-c",
            "webhook",
            "-t",
            rx.url,
            "-e",
            "task.completed",
            "--secret-env",
            "HOOK_SECRET",
        ]
        refused = cli(db_path, "--config", str(plain), *add)
        assert refused.returncode == 2 and "loopback/private" in refused.stderr, refused.stderr
        added = cli(db_path, *add, "--config", str(allowing))
        assert added.returncode == 0, added.stderr
        tested = cli(db_path, "--format", "json", "--config", str(allowing), "notify", "test", "hook")
        assert tested.returncode == 0 and json.loads(tested.stdout)["status_code"] == 200, tested.stdout
        server = start_server(db_path, "http", "--config", str(allowing), allow=False)
        try:
            task_id = complete_one(queue, "sent because the config allows it")
            got = rx.wait_for(2, timeout=60)
        finally:
            stop(server)
    assert got[1].verify_error is None and got[1].verified["data"]["task"]["id"] == task_id

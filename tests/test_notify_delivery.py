"""Delivery that loses nothing: a server SIGKILLed mid-send delivers after restart under the same
webhook-id, events committed while no server runs go out when one starts, and a receiver that was
down for a while gets everything once it is back, in order per task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from mcp_taskqueue.notify.dispatcher import Dispatcher
from mcp_taskqueue.notify.notifiers import Notifiers
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.receivers import Receiver, http_receiver
from tests.servers import free_port, server_env
from tests.test_notify import FAST

SECRET = "delivery-test-secret-0123456789"


def start_server(db: Path) -> subprocess.Popen[bytes]:
    """`serve --transport http` with the dispatcher, polling fast; returns once /healthz answers."""
    port = free_port()
    env = server_env() | {"TASKQUEUE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "TASKQUEUE_NOTIFY_POLL": "0.1"}
    env |= {"TASKQUEUE_NOTIFY_TIMEOUT": "120", "TASKQUEUE_NOTIFY_RETRY_BASE": "0.2"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_taskqueue.cli",
            "--db",
            str(db),
            "serve",
            "--transport",
            "http",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "server exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def complete_one(queue: TaskQueue, title: str) -> str:
    task = queue.create({"title": title})
    assert queue.claim("w", lease_seconds=600) is not None
    queue.complete(task.id, "w")
    return task.id


def test_a_server_killed_between_commit_and_send_delivers_after_restart_under_the_same_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    db = tmp_path / "crash.db"
    first = threading.Event()

    def hang_first(request: object) -> tuple[int, float, dict[str, str]]:
        if not first.is_set():
            first.set()
            return 200, 60.0, {}  # the server dies while waiting for this answer
        return 200, 0.0, {}

    store = Store(db)
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

"""The dispatcher: one background sender per database file, sending the outbox at least once.

It runs in its own thread (never on the event loop) and holds the `notify-dispatcher` row of
singleton_leases, renewed while it lives, so among several servers on one file exactly one
sends; a crashed owner's lease is taken over when it expires, or at once when its process on
this host is gone. Each due delivery is sent by a worker thread outside any store transaction,
with a timeout; the outcome is recorded afterwards: delivered, or retried after exponential
backoff with jitter, or dead after the last attempt. After `circuit_failures` failures in a row
a notifier's circuit opens for `circuit_seconds`; then one delivery probes it. A later event of
the same task waits until the earlier one is delivered or dead, so each task's deliveries
arrive in order. The dispatcher also checks queue.depth thresholds every `depth_interval`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from typing import Any

from mcp_taskqueue.ids import new_id
from mcp_taskqueue.notify.events import envelope
from mcp_taskqueue.notify.notifiers import Notifiers, deliver
from mcp_taskqueue.notify.transport import AddressPolicy, Outcome
from mcp_taskqueue.store import Storage, Tx

log = logging.getLogger(__name__)
LEASE_NAME = "notify-dispatcher"


@dataclass
class DispatchSettings:
    """Tunables, each overridable by `TASKQUEUE_NOTIFY_<NAME>` (e.g. TASKQUEUE_NOTIFY_MAX_ATTEMPTS)."""

    timeout: float = 10.0  # seconds per attempt
    max_attempts: int = 8
    retry_base: float = 5.0  # first retry after ~this many seconds, doubling
    retry_cap: float = 3600.0
    circuit_failures: int = 5
    circuit_seconds: float = 60.0
    lease_seconds: float = 30.0
    poll: float = 0.5
    depth_interval: float = 5.0
    workers: int = 4
    keep_delivered_days: float = 7.0

    @classmethod
    def from_env(cls) -> DispatchSettings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"TASKQUEUE_NOTIFY_{f.name.upper()}")
            if raw:
                values[f.name] = int(raw) if f.type == "int" else float(raw)
        return cls(**values)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after `attempts` failed ones: exponential, full jitter above half."""
        delay = min(self.retry_cap, self.retry_base * 2.0 ** (attempts - 1))
        return float(delay * (0.5 + random.random() / 2))


def owner_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str) -> bool:
    """True when the owner is a process of this host that no longer exists."""
    host, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Dispatcher:
    """Sends the outbox of one store in a background thread; `start()` / `stop()`, or `with Dispatcher(store):`."""

    def __init__(
        self,
        store: Storage,
        settings: DispatchSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or DispatchSettings.from_env()
        self.clock = clock
        self.notifiers = Notifiers(store, clock)
        self.owner = owner_name()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="notify-send")
        self._inflight: dict[Future[Outcome], Any] = {}
        self._next_depth_check = 0.0
        self._next_prune = 0.0
        self.owning = False

    # --- life -------------------------------------------------------------------------------

    def __enter__(self) -> Dispatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notify-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.owning:
            try:
                self.store.write(lambda tx: tx.drop_singleton_lease(LEASE_NAME, self.owner))
            except Exception:  # the store may be closing; the lease then simply expires
                log.debug("could not drop the dispatcher lease", exc_info=True)

    def _run(self) -> None:
        lease_until = 0.0
        while not self._stop.is_set():
            try:
                now = self.clock()
                if now >= lease_until - self.settings.lease_seconds / 3:
                    self.claim_ownership()
                    lease_until = now + self.settings.lease_seconds if self.owning else 0.0
                if self.owning:
                    self.tick()
            except Exception:
                log.exception("notification dispatcher step failed; retrying")
                self.owning, lease_until = False, 0.0
            self._wait()

    def _wait(self) -> None:
        if self._inflight:
            wait(list(self._inflight), timeout=self.settings.poll)
        else:
            self._stop.wait(self.settings.poll)

    def claim_ownership(self) -> bool:
        """Take or renew the file's dispatcher lease; True while this dispatcher is the one that sends."""
        self.owning = self.store.write(self._take_lease)
        return self.owning

    def _take_lease(self, tx: Tx) -> bool:
        now = self.clock()
        row = tx.singleton_lease(LEASE_NAME)
        gone = row["owner"] if row is not None and row["owner"] != self.owner and owner_gone(row["owner"]) else None
        return tx.take_singleton_lease(LEASE_NAME, self.owner, now, now + self.settings.lease_seconds, gone)

    # --- one step ---------------------------------------------------------------------------

    def tick(self) -> int:
        """Record finished sends, start due ones; returns how many were started."""
        for future in [f for f in self._inflight if f.done()]:
            self._save(self._inflight.pop(future), future.result())
        now = self.clock()
        if now >= self._next_depth_check:
            self._next_depth_check = now + self.settings.depth_interval
            self.store.write(self._check_depth)
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self.store.write(lambda tx: tx.prune_delivered(now - self.settings.keep_delivered_days * 86400))
        busy = {r["seq"] for r in self._inflight.values()}
        busy_keys = {(r["notifier_seq"], r["order_key"]) for r in self._inflight.values()}
        probing = {r["notifier_seq"] for r in self._inflight.values()}
        due = self.store.read(lambda tx: self._due(tx, now))
        started = 0
        for row, notifier, half_open in due:
            if row["seq"] in busy or (row["notifier_seq"], row["order_key"]) in busy_keys:
                continue
            if half_open and row["notifier_seq"] in probing:
                continue  # a recovering endpoint gets one probe at a time
            probing.add(row["notifier_seq"])
            busy_keys.add((row["notifier_seq"], row["order_key"]))
            future = self._pool.submit(
                deliver, notifier, row["id"], row["payload"], AddressPolicy.from_env(), self.settings.timeout
            )
            self._inflight[future] = row
            started += 1
        return started

    def _save(self, row: Any, outcome: Outcome) -> None:
        self.store.write(lambda tx: self._record(tx, row, outcome))

    def _due(self, tx: Tx, now: float) -> list[tuple[Any, Any, bool]]:
        rows = tx.due_deliveries(now, self.settings.workers * 8)
        cache: dict[int, Any] = {}
        out = []
        for row in rows:
            if row["notifier_seq"] not in cache:
                n = tx.get_notifier_by_seq(row["notifier_seq"])
                cache[row["notifier_seq"]] = n
            n = cache[row["notifier_seq"]]
            if n is None:
                continue
            half_open = n["consecutive_failures"] >= self.settings.circuit_failures
            out.append((row, self.notifiers.sender(tx, n), half_open))
        return out

    def _record(self, tx: Tx, row: Any, outcome: Outcome) -> None:
        now = self.clock()
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_attempt_at": now,
            "last_status_code": outcome.status_code,
            "last_latency_ms": outcome.latency_ms,
            "last_error": outcome.error,
        }
        notifier = tx.get_notifier_by_seq(row["notifier_seq"])
        if notifier is None:
            return  # deleted while sending: its deliveries went with it
        if outcome.ok:
            values |= {"status": "delivered", "delivered_at": now}
            tx.update_notifier(row["notifier_seq"], {"consecutive_failures": 0, "circuit_open_until": None})
        else:
            if attempts >= self.settings.max_attempts:
                values["status"] = "dead"
                log.warning(
                    "notification %s to %s is dead after %d attempts: %s",
                    row["id"],
                    notifier["name"],
                    attempts,
                    outcome.error,
                )
            else:
                values["next_attempt_at"] = now + self.settings.backoff(attempts)
            failures = notifier["consecutive_failures"] + 1
            breaker: dict[str, Any] = {"consecutive_failures": failures}
            if failures >= self.settings.circuit_failures:
                breaker["circuit_open_until"] = now + self.settings.circuit_seconds
            tx.update_notifier(row["notifier_seq"], breaker)
        tx.record_attempt(row["seq"], values)

    def _check_depth(self, tx: Tx) -> None:
        """queue.depth: one delivery when ready tasks rise above a threshold, re-armed once at or below it."""
        now = self.clock()
        for n in tx.notifiers_for_events(["queue.depth"]):
            row = tx.get_notifier_by_seq(n["seq"])
            if row is None or row["threshold"] is None:
                continue
            projects = json.loads(row["filters"]).get("projects", [])
            ready = tx.ready_count(projects)
            above = ready > row["threshold"]
            if above == bool(row["depth_above"]):
                continue
            tx.update_notifier(row["seq"], {"depth_above": int(above)})
            if above:
                data = {"queue": {"ready": ready, "threshold": row["threshold"], "projects": projects}}
                tx.insert_delivery(
                    "msg_" + new_id(), row["seq"], "queue.depth", "queue", envelope("queue.depth", now, data), now
                )

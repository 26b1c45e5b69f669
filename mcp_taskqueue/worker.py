"""A worker loop over `TaskQueueClient`: claim, heartbeat while a handler runs, complete or fail.

    worker = Worker("resizer")

    @worker.handler("resize")
    async def resize(task: Task) -> dict[str, Any]:
        return {"ok": True}

    worker.run_sync("tasks.db")        # or a URL, or `mcp-taskqueue worker module:worker`

A handler's return value becomes the task's result; an exception fails the attempt (retried
with backoff while attempts remain; `PermanentError` fails it for good). While a handler
runs, its lease is extended every third of the lease; if the lease is lost anyway, the
handler is cancelled and its result discarded. SIGINT/SIGTERM stop the worker: running
handlers are cancelled and their tasks released, so another worker can take them at once.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from mcp_taskqueue.client import Target, TaskQueueClient, TransportFailed
from mcp_taskqueue.errors import LeaseLost, TaskQueueError
from mcp_taskqueue.models import Task

log = logging.getLogger("mcp_taskqueue.worker")

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)


class PermanentError(Exception):
    """Raise from a handler to fail the task without retrying it."""


@dataclass
class Job:
    """What a handler that takes a second argument receives: a way to report progress."""

    task: Task
    worker: str
    client: TaskQueueClient

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1) and extend the lease."""
        await self.client.heartbeat(
            self.task.id, self.worker, progress=fraction, message=message, lease_id=self.task.lease_id
        )


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0


class Worker:
    """Handlers per task kind, and the loop that feeds them claimed tasks."""

    def __init__(
        self,
        name: str | None = None,
        *,
        project: str | None = None,
        tags: list[str] | None = None,
        lease_seconds: int = 60,
        heartbeat_interval: float | None = None,
        poll_interval: float = 1.0,
        concurrency: int = 1,
    ) -> None:
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.project = project
        self.tags = tags
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval or max(lease_seconds / 3, 0.05)
        self.poll_interval = poll_interval
        self.concurrency = max(1, concurrency)
        self.handlers: dict[str, Handler] = {}
        self.stats = WorkerStats()
        self._stop: anyio.Event | None = None
        self._held: dict[str, str] = {}  # task id -> worker name holding it

    def handler(self, kind: str) -> Callable[[H], H]:
        """Register a function (sync or async) for tasks of `kind`: `fn(task)` or `fn(task, job)`."""

        def register(fn: H) -> H:
            self.handlers[kind] = fn
            return fn

        return register

    def stop(self) -> None:
        """Ask the loop to stop after the tasks in hand (call from the worker's event loop)."""
        if self._stop is not None:
            self._stop.set()

    @property
    def holding(self) -> list[str]:
        """Ids of the tasks this worker holds right now."""
        return list(self._held)

    async def run(
        self,
        target: TaskQueueClient | Target = None,
        *,
        stop_when_idle: bool = False,
        max_tasks: int | None = None,
        handle_signals: bool = True,
    ) -> WorkerStats:
        """Work until stopped (signal, `stop()`, `max_tasks` done, or — with `stop_when_idle` — nothing
        left ready, running or pending in the project)."""
        if not self.handlers:
            raise ValueError("register at least one handler with @worker.handler('kind') first")
        self._stop = anyio.Event()
        if isinstance(target, TaskQueueClient) and target.connected:
            await self._run_with(target, stop_when_idle, max_tasks, handle_signals)
        else:
            client = target if isinstance(target, TaskQueueClient) else TaskQueueClient(target)
            async with client:
                await self._run_with(client, stop_when_idle, max_tasks, handle_signals)
        return self.stats

    def run_sync(self, target: TaskQueueClient | Target = None, **kwargs: Any) -> WorkerStats:
        """`run` for code without an event loop."""

        async def main() -> WorkerStats:
            return await self.run(target, **kwargs)

        return anyio.run(main)

    async def _run_with(
        self, client: TaskQueueClient, stop_when_idle: bool, max_tasks: int | None, handle_signals: bool
    ) -> None:
        async with anyio.create_task_group() as outer:
            if handle_signals and threading.current_thread() is threading.main_thread():
                outer.start_soon(self._watch_signals, outer.cancel_scope)
            outer.start_soon(self._watch_stop, outer.cancel_scope)
            async with anyio.create_task_group() as loops:
                for index in range(self.concurrency):
                    name = self.name if self.concurrency == 1 else f"{self.name}-{index + 1}"
                    loops.start_soon(self._loop, client, name, stop_when_idle, max_tasks)
            outer.cancel_scope.cancel()

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.warning("%s: got %s, releasing held tasks and stopping", self.name, signal.Signals(signum).name)
                    scope.cancel()
                    return
        except NotImplementedError:  # pragma: no cover - platforms without signal support
            return

    async def _watch_stop(self, scope: anyio.CancelScope) -> None:
        assert self._stop is not None
        await self._stop.wait()
        scope.cancel()

    async def _loop(self, client: TaskQueueClient, name: str, stop_when_idle: bool, max_tasks: int | None) -> None:
        outage = 0
        while max_tasks is None or self.stats.completed + self.stats.failed < max_tasks:
            try:
                claim = await client.claim_task(
                    name,
                    project=self.project,
                    kinds=list(self.handlers),
                    tags=self.tags,
                    lease_seconds=self.lease_seconds,
                )
                if claim.task is None and stop_when_idle and await self._drained(client):
                    return
            except TransportFailed as exc:
                # The server is away (restarting, network): keep trying, more slowly each time.
                outage += 1
                log.warning("%s: %s; retrying", name, exc)
                await anyio.sleep(min(self.poll_interval * 2**outage, 30.0))
                continue
            outage = 0
            if claim.task is None:
                await anyio.sleep(self.poll_interval)
                continue
            await self._process(client, claim.task, name)

    async def _drained(self, client: TaskQueueClient) -> bool:
        stats = await client.queue_stats(self.project)
        counts = stats.by_status
        waiting = counts.get("pending", 0) + counts.get("ready", 0) - stats.blocked
        return counts.get("running", 0) == 0 and waiting <= 0

    async def _process(self, client: TaskQueueClient, task: Task, name: str) -> None:
        handler = self.handlers[task.kind]
        self._held[task.id] = name
        lost = False
        outcome: tuple[bool, Any] = (False, None)
        try:
            async with anyio.create_task_group() as group:

                async def keep_lease() -> None:
                    nonlocal lost
                    while True:
                        await anyio.sleep(self.heartbeat_interval)
                        try:
                            await client.heartbeat(
                                task.id, name, lease_seconds=self.lease_seconds, lease_id=task.lease_id
                            )
                        except (LeaseLost, TaskQueueError) as exc:
                            if isinstance(exc, LeaseLost) or exc.code == "invalid_transition":
                                lost = True
                                group.cancel_scope.cancel()
                                return
                            log.warning("%s: heartbeat for %s failed: %s", name, task.id, exc)

                group.start_soon(keep_lease)
                try:
                    outcome = (True, await self._invoke(handler, task, Job(task, name, client)))
                except Exception as exc:
                    outcome = (False, exc)
                group.cancel_scope.cancel()
            if lost:
                self.stats.lost += 1
                log.warning("%s: lost the lease on %s; its result is discarded", name, task.id)
                return
            await self._report(client, task, name, outcome)
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(10, shield=True):
                try:
                    await client.release_task(task.id, name, lease_id=task.lease_id)
                    self.stats.released += 1
                    log.warning("%s: released %s", name, task.id)
                except TaskQueueError as exc:
                    log.warning("%s: could not release %s: %s", name, task.id, exc)
            raise
        finally:
            self._held.pop(task.id, None)

    async def _report(self, client: TaskQueueClient, task: Task, name: str, outcome: tuple[bool, Any]) -> None:
        ok, value = outcome
        if ok:
            try:
                await client.complete_task(task.id, name, value, lease_id=task.lease_id)
                self.stats.completed += 1
                return
            except (LeaseLost, TransportFailed) as exc:
                self._unreported(name, task, exc)
                return
            except TaskQueueError as exc:
                value = exc  # e.g. a result that is not JSON: fail the attempt and say why
        error = f"{type(value).__name__}: {value}"[:9000]
        try:
            permanent = isinstance(value, PermanentError)
            await client.fail_task(task.id, name, error, retryable=not permanent, lease_id=task.lease_id)
            self.stats.failed += 1
        except (LeaseLost, TransportFailed) as exc:
            self._unreported(name, task, exc)

    def _unreported(self, name: str, task: Task, exc: TaskQueueError) -> None:
        """The outcome could not be recorded: the lease is gone, or so is the server. Either way the
        task returns to the queue when its lease expires, and another attempt runs it."""
        self.stats.lost += 1
        log.warning("%s: could not report %s (%s); it will be retried after its lease expires", name, task.id, exc)

    @staticmethod
    async def _invoke(handler: Handler, task: Task, job: Job) -> Any:
        args: tuple[Any, ...] = (task, job) if _arity(handler) >= 2 else (task,)
        if inspect.iscoroutinefunction(handler):
            return await handler(*args)
        outcome = await run_in_daemon_thread(lambda: handler(*args))
        if isinstance(outcome, Awaitable):
            return await outcome
        return outcome


async def run_in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking handler in its own daemon thread. On shutdown it is abandoned, not joined:
    a handler stuck in a long call must not keep the process alive after its task was released."""
    box: dict[str, Any] = {}
    done = anyio.Event()
    token = anyio.lowlevel.current_token()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the event loop, which re-raises it
            box["error"] = exc
        finally:
            # RuntimeError: the loop is gone because the worker stopped while we ran.
            with contextlib.suppress(RuntimeError):
                anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=target, name="mcp-taskqueue handler", daemon=True).start()
    await done.wait()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def load_worker(spec: str) -> Worker:
    """`package.module:attribute` -> the Worker it names (for `mcp-taskqueue worker`)."""
    import importlib
    import sys

    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise ValueError(f"expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    found = getattr(module, attribute or "worker", None)
    if not isinstance(found, Worker):
        raise ValueError(f"{spec!r} is not a Worker (found {type(found).__name__})")
    return found

"""Notifications end to end in one process: the queue writes outbox rows in its own transactions,
a real Dispatcher thread sends them to real receivers on 127.0.0.1, and we read what arrived."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from mcp_taskqueue.development import Development
from mcp_taskqueue.errors import Conflict, ValidationFailed
from mcp_taskqueue.notify.dispatcher import Dispatcher
from mcp_taskqueue.notify.notifiers import Notifiers
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store, open_store
from mcp_taskqueue.webhooks import WebhookVerificationError, sign, verify_webhook
from mcp_taskqueue.workflows import Workflows
from tests.receivers import FAST, Received, Receiver, http_receiver

SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")


@pytest.fixture
def notifiers(store: Store) -> Notifiers:
    return Notifiers(store)


@pytest.fixture
def dispatcher(store: Store) -> Iterator[Dispatcher]:
    d = Dispatcher(store, FAST)
    d.start()
    yield d
    d.stop()


def finish(queue: TaskQueue, title: str = "Build it", **fields: Any) -> str:
    task = queue.create(dict(title=title, **fields))
    claimed = queue.claim("w1", project=fields.get("project"))
    assert claimed is not None and claimed.id == task.id
    queue.complete(task.id, "w1", {"ok": True})
    return task.id


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_completion_writes_an_outbox_row_in_its_transaction_and_a_signed_webhook_arrives(
    store: Store, queue: TaskQueue, notifiers: Notifiers
) -> None:
    with http_receiver(Receiver(secret=SECRET)) as rx:
        n = notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
        task_id = finish(queue)
        # committed with the completion, before any dispatcher exists
        pending = notifiers.get("hook").recent
        assert [(d.event, d.status, d.key) for d in pending] == [("task.completed", "pending", task_id)]
        d = Dispatcher(store, FAST)
        d.start()
        try:
            (got,) = rx.wait_for(1)
            wait_until(lambda: notifiers.get(n.id).recent[0].status == "delivered")
        finally:
            d.stop()
    assert got.verify_error is None
    assert got.verified["type"] == "task.completed"
    assert got.verified["data"]["task"]["id"] == task_id and got.verified["data"]["task"]["worker"] == "w1"
    record = notifiers.get(n.id).recent[0]
    assert got.headers["webhook-id"] == record.id and record.id.startswith("msg_")
    assert record.attempts == 1 and record.last_status_code == 200 and record.last_latency_ms is not None
    assert notifiers.get(n.id).deliveries == {"delivered": 1}


def test_no_notifier_means_no_outbox_rows_and_unsubscribed_events_write_nothing(
    store: Store, queue: TaskQueue, notifiers: Notifiers
) -> None:
    finish(queue)
    notifiers.create("fails-only", "webhook", "http://127.0.0.1:9/x", ["task.failed"], secret=SECRET)
    finish(queue, "second")
    assert notifiers.get("fails-only").recent == []


def test_a_500_is_retried_with_the_same_id_until_it_succeeds(
    queue: TaskQueue, notifiers: Notifiers, dispatcher: Dispatcher
) -> None:
    answers = iter([500, 500])
    with http_receiver(Receiver(secret=SECRET, behaviour=lambda r: (next(answers, 200), 0.0, {}))) as rx:
        notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
        finish(queue)
        got = rx.wait_for(3)
        wait_until(lambda: notifiers.get("hook").recent[0].status == "delivered")
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert all(r.verify_error is None for r in got)
    record = notifiers.get("hook").recent[0]
    assert record.attempts == 3 and record.last_status_code == 200 and record.last_error is None


def test_after_the_last_attempt_a_delivery_is_dead_and_redeliver_sends_it_again_under_its_id(
    queue: TaskQueue, notifiers: Notifiers, dispatcher: Dispatcher
) -> None:
    healthy = {"now": False}
    behaviour = lambda r: (200 if healthy["now"] else 503, 0.0, {})  # noqa: E731
    with http_receiver(Receiver(secret=SECRET, behaviour=behaviour)) as rx:
        notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
        finish(queue)
        wait_until(lambda: notifiers.get("hook").recent[0].status == "dead")
        dead = notifiers.get("hook").recent[0]
        assert dead.attempts == FAST.max_attempts and dead.last_status_code == 503 and dead.last_error == "HTTP 503"
        assert len(rx.received) == FAST.max_attempts
        healthy["now"] = True
        assert notifiers.redeliver("hook") == 1
        wait_until(lambda: notifiers.get("hook").recent[0].status == "delivered")
        assert rx.received[-1].headers["webhook-id"] == dead.id
        assert notifiers.redeliver("hook") == 0  # nothing dead any more


def test_a_hanging_receiver_times_out_without_holding_up_other_notifiers_or_the_queue(
    store: Store, queue: TaskQueue, notifiers: Notifiers
) -> None:
    settings = replace(FAST, timeout=1.0)
    with (
        http_receiver(Receiver(behaviour=lambda r: (200, 4.0, {}))) as slow,
        http_receiver(Receiver(secret=SECRET)) as fast,
    ):
        notifiers.create("slow", "webhook", slow.url, ["task.completed"], secret=SECRET)
        notifiers.create("fast", "webhook", fast.url, ["task.completed"], secret=SECRET)
        d = Dispatcher(store, settings)
        d.start()
        try:
            finish(queue, "one")
            fast.wait_for(1, timeout=10)
            started = time.monotonic()
            finish(queue, "two")  # the queue is not waiting on the hung send
            assert time.monotonic() - started < 1.0
            fast.wait_for(2, timeout=10)
            wait_until(lambda: (notifiers.get("slow").recent[-1].last_error or "").startswith("timed out"))
        finally:
            d.stop()


def test_events_map_from_history_with_project_kind_and_tag_filters(
    store: Store, timed_queue: TaskQueue, clock: Any
) -> None:
    queue = timed_queue
    notifiers = Notifiers(store, clock)
    every = ["task.completed", "task.failed", "task.dead", "task.lease_expired", "task.blocked", "review.requested"]
    notifiers.create("all", "webhook", "http://127.0.0.1:9/all", every, secret=SECRET)
    notifiers.create("ops", "webhook", "http://127.0.0.1:9/ops", every, filters={"projects": ["ops"]}, secret=SECRET)
    notifiers.create(
        "tagged",
        "webhook",
        "http://127.0.0.1:9/t",
        ["task.completed"],
        filters={"kinds": ["build"], "tags": ["urgent"]},
        secret=SECRET,
    )

    a = queue.create(dict(title="retried", max_attempts=2))
    queue.claim("w")
    queue.fail(a.id, "w", "flaky")  # attempt 1 of 2: task.failed only
    clock.advance(3600)
    queue.claim("w", lease_seconds=5)
    clock.advance(10)
    queue.claim("other")  # the sweep: the lease expired on the last attempt -> task.lease_expired + task.dead
    b = queue.create(dict(title="base", project="ops"))
    c = queue.create(dict(title="waits", project="ops", depends_on=[b.id]))
    queue.claim("w", project="ops")
    queue.fail(b.id, "w", "broken", retryable=False)  # task.failed + task.dead for b, task.blocked for c
    d = queue.create(dict(title="tagged build", kind="build", tags=["urgent", "x"]))
    queue.claim("w", kinds=["build"])
    queue.complete(d.id, "w")
    e = queue.create(dict(title="untagged build", kind="build"))
    queue.claim("w", kinds=["build"])
    queue.complete(e.id, "w")
    r = queue.create(dict(title="reviewed", project="ops"))
    dev = Development(queue)
    dev.advance(r.id, "implementation", design_doc="docs/x.md")
    dev.advance(r.id, "test_creation")
    dev.advance(r.id, "testing", coverage=95)
    dev.advance(r.id, "review", test_report={"passed": 3, "failed": 0})

    def seen(name: str) -> list[tuple[str, str]]:
        return sorted((x.event, x.key) for x in notifiers.get(name, limit=200).recent)

    assert seen("all") == sorted(
        [
            ("task.failed", a.id),
            ("task.lease_expired", a.id),
            ("task.dead", a.id),
            ("task.failed", b.id),
            ("task.dead", b.id),
            ("task.blocked", c.id),
            ("task.completed", d.id),
            ("task.completed", e.id),
            ("review.requested", r.id),
        ]
    )
    assert seen("ops") == sorted(
        [("task.failed", b.id), ("task.dead", b.id), ("task.blocked", c.id), ("review.requested", r.id)]
    )
    assert seen("tagged") == [("task.completed", d.id)]
    # the order in which one task's events were written is the order they will be sent
    keyed = [x.event for x in reversed(notifiers.get("all", limit=200).recent) if x.key == a.id]
    assert keyed == ["task.failed", "task.lease_expired", "task.dead"]


def test_workflow_completed_and_failed_fire_once_when_nothing_is_left(store: Store, queue: TaskQueue) -> None:
    notifiers = Notifiers(store)
    notifiers.create("wf", "webhook", "http://127.0.0.1:9/wf", ["workflow.completed", "workflow.failed"], secret=SECRET)
    workflows = Workflows(queue)
    ok = workflows.create(
        {"name": "ok", "tasks": [{"ref": "a", "title": "A"}, {"ref": "b", "title": "B", "depends_on": ["a"]}]}
    )
    for _ in range(2):
        t = queue.claim("w")
        assert t is not None
        queue.complete(t.id, "w")
    bad = workflows.create(
        {"name": "bad", "project": "p2", "tasks": [{"ref": "x", "title": "X"}, {"ref": "y", "title": "Y"}]}
    )
    t1 = queue.claim("w", project="p2")
    assert t1 is not None
    queue.fail(t1.id, "w", "no", retryable=False)
    assert [x.key for x in notifiers.get("wf").recent] == [ok.id]  # y of the bad one is still unfinished
    t2 = queue.claim("w", project="p2")
    assert t2 is not None
    queue.complete(t2.id, "w")
    recent = notifiers.get("wf").recent
    assert sorted((x.event, x.key) for x in recent) == [("workflow.completed", ok.id), ("workflow.failed", bad.id)]
    # a cancelled workflow is neither: cancelling its last tasks does not read as it finishing
    gone = workflows.create(
        {"name": "gone", "project": "p3", "tasks": [{"ref": "m", "title": "M"}, {"ref": "n", "title": "N"}]}
    )
    t3 = queue.claim("w", project="p3")
    assert t3 is not None
    queue.complete(t3.id, "w", lease_id=t3.lease_id)
    workflows.cancel(gone.id)
    assert len(notifiers.get("wf").recent) == 2


def test_queue_depth_notifies_once_above_the_threshold_and_rearms_below_it(
    store: Store, queue: TaskQueue, notifiers: Notifiers
) -> None:
    with http_receiver(Receiver(secret=SECRET)) as rx:
        notifiers.create(
            "depth", "webhook", rx.url, ["queue.depth"], threshold=2, filters={"projects": ["busy"]}, secret=SECRET
        )
        d = Dispatcher(store, FAST)
        d.start()
        try:
            for i in range(3):
                queue.create(dict(title=f"t{i}", project="busy"))
            queue.create(dict(title="elsewhere", project="quiet"))
            (got,) = rx.wait_for(1)
            assert got.verified["type"] == "queue.depth"
            assert got.verified["data"]["queue"] == {"ready": 3, "threshold": 2, "projects": ["busy"]}
            queue.create(dict(title="t3", project="busy"))
            time.sleep(FAST.depth_interval * 5)
            assert len(rx.received) == 1  # still above: no repeat
            for _ in range(3):
                t = queue.claim("w", project="busy")
                assert t is not None
            time.sleep(FAST.depth_interval * 8)  # sampled: the dispatcher must see it low once to re-arm
            queue.create(dict(title="t4", project="busy"))
            queue.create(dict(title="t5", project="busy"))
            rx.wait_for(2)  # fell to 1, rose to 3 again
        finally:
            d.stop()


def test_secrets_rotate_with_two_active_signatures_and_are_never_returned(
    store: Store, queue: TaskQueue, notifiers: Notifiers
) -> None:
    old, new = "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"
    with http_receiver(Receiver(secret=[old])) as rx_old, http_receiver(Receiver(secret=[new])) as rx_new:
        notifiers.create("a", "webhook", rx_old.url, ["task.completed"], secret=old)
        notifiers.create("b", "webhook", rx_new.url, ["task.completed"], secret=old)
        with pytest.raises(Conflict):
            notifiers.create("a", "webhook", rx_old.url, ["task.completed"], secret=new)
        for name in ("a", "b"):
            info = notifiers.create(
                name,
                "webhook",
                notifiers.get(name).target.replace("…", ""),
                ["task.completed"],
                secret=new,
                replace=True,
            )
            assert info.has_secret and notifiers.get(name).previous_secret_until is not None
        d = Dispatcher(store, FAST)
        d.start()
        try:
            finish(queue)
            (got_old,) = rx_old.wait_for(1)
            (got_new,) = rx_new.wait_for(1)
        finally:
            d.stop()
    assert got_old.verify_error is None and got_new.verify_error is None  # both secrets sign while rotating
    assert len(got_old.headers["webhook-signature"].split()) == 2
    shown = (
        json.dumps([n.model_dump() for n in notifiers.list_notifiers().notifiers])
        + notifiers.get("a").model_dump_json()
    )
    assert old not in shown and new not in shown


def test_verifier_refuses_tampering_stale_timestamps_and_missing_headers() -> None:
    body = b'{"type":"task.completed"}'
    ts = int(time.time())
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(ts),
        "Webhook-Signature": sign(SECRET, "msg_1", ts, body),
    }
    assert verify_webhook(SECRET, body, headers) == {"type": "task.completed"}
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook(SECRET, body + b" ", headers)
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook("whsec_b3RoZXI=", body, headers)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_webhook(SECRET, body, headers, now=ts + 3600)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(SECRET, body, {"webhook-id": "msg_1"})


@pytest.mark.parametrize(
    ("templates", "problem"),
    [
        ({"text": "{{ task.title "}, "TemplateSyntaxError"),
        ({"text": "{{ taks.title }}"}, "UndefinedError"),
        ({"text": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}, "SecurityError"),
        ({"subject": "x"}, "do not apply to slack"),
        ({"text": "{{ 1 / 0 }}"}, "ZeroDivisionError"),
        ({"text": "{% for i in range(10**6) %}{% endfor %}"}, "OverflowError"),
        ({"text": "{{ 'a' * 1000000000 }}"}, "SecurityError: a repetition"),
        ({"text": "{{ [task] * 10**9 }}"}, "SecurityError: a repetition"),
        ({"text": "{{ 7 ** 1000000000 }}"}, "SecurityError: a power"),
    ],
)
def test_a_bad_template_is_refused_when_saved(notifiers: Notifiers, templates: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationFailed, match=problem):
        notifiers.create("s", "slack", "http://127.0.0.1:9/slack", ["task.completed"], templates=templates)
    assert notifiers.list_notifiers().notifiers == []


def test_options_and_secrets_are_checked_per_channel(notifiers: Notifiers) -> None:
    with pytest.raises(ValidationFailed, match="needs a secret"):
        notifiers.create("w", "webhook", "http://127.0.0.1:9/", ["task.completed"])
    with pytest.raises(ValidationFailed, match="needs options smtp_host, from"):
        notifiers.create("e", "email", "ops@example.com", ["task.completed"])
    with pytest.raises(ValidationFailed, match="do not apply"):
        notifiers.create("s", "slack", "http://127.0.0.1:9/", ["task.completed"], options={"password": "x"})
    with pytest.raises(ValidationFailed, match="threshold"):
        notifiers.create("q", "slack", "http://127.0.0.1:9/", ["queue.depth"])
    with pytest.raises(ValidationFailed, match="unknown"):
        notifiers.create("q", "slack", "http://127.0.0.1:9/", ["task.exploded"])


def test_the_circuit_opens_after_repeated_failures_and_a_probe_closes_it(
    store: Store, queue: TaskQueue, notifiers: Notifiers
) -> None:
    settings = replace(FAST, circuit_failures=2, circuit_seconds=2.0, max_attempts=20)
    healthy = {"now": False}
    with http_receiver(Receiver(behaviour=lambda r: (200 if healthy["now"] else 500, 0.0, {}))) as rx:
        notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
        d = Dispatcher(store, settings)
        d.start()
        try:
            for i in range(3):
                finish(queue, f"t{i}")
            wait_until(lambda: notifiers.get("hook").circuit_open_until is not None)
            count = len(rx.received)
            time.sleep(1.0)
            assert len(rx.received) == count  # open: nothing sent
            healthy["now"] = True
            wait_until(lambda: notifiers.get("hook").deliveries == {"delivered": 3})
            assert notifiers.get("hook").circuit_open_until is None
        finally:
            d.stop()


def test_one_dispatcher_owns_the_database_at_a_time(store: Store, db_path: Any) -> None:
    other_store = open_store(db_path)
    try:
        first, second = Dispatcher(store, FAST), Dispatcher(other_store, FAST)
        assert first.claim_ownership() is True
        assert second.claim_ownership() is False
        assert first.claim_ownership() is True  # renewing
        first.stop()  # releases the lease
        assert second.claim_ownership() is True
        second.stop()
    finally:
        other_store.close()


def received_events(received: list[Received]) -> list[tuple[str, str]]:
    return [(r.json()["data"]["task"]["id"], r.json()["type"]) for r in received]


def test_the_dispatchers_queries_use_the_partial_indexes(store: Store, engine: str, notifiers: Notifiers) -> None:
    from mcp_taskqueue.store.outbox import DUE_SQL

    if engine == "sqlite":
        plan = " | ".join(store.explain(DUE_SQL, (1.0, 1.0, 10)))  # type: ignore[attr-defined]
        assert "SEARCH o USING INDEX outbox_due" in plan and "USING INDEX outbox_key" in plan, plan
        assert "SCAN" not in plan, plan
        return
    # PostgreSQL: with many delivered rows and a few pending ones, the due query walks outbox_due
    n = notifiers.create("hook", "webhook", "http://127.0.0.1:9/", ["task.completed"], secret=SECRET)

    def plan(tx: Any) -> str:
        seq = tx.get_notifier(n.id)["seq"]
        for i in range(3000):
            tx.insert_delivery(f"msg_{i}", seq, "task.completed", f"k{i % 50}", "{}", 1.0)
        tx.conn.execute("UPDATE outbox SET status = 'delivered' WHERE mod(seq, 100) <> 0")
        tx.conn.execute("ANALYZE outbox")
        return " | ".join(row[0] for row in tx.conn.execute("EXPLAIN " + DUE_SQL, (1.0, 1.0, 10)))

    text = store.write(plan)
    # both sides of the anti-join read pending rows only, through a partial index (never the delivered ones)
    assert "Index Scan using outbox_due on outbox o" in text, text
    assert "Seq Scan on outbox" not in text and "Seq Scan on outbox p" not in text, text

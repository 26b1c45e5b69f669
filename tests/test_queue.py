"""Queue semantics on a real SQLite file: the state machine, claims, leases, retries and history."""

from __future__ import annotations

import pytest

from mcp_taskqueue.errors import Conflict, InvalidTransition, LeaseLost, NotFound, ValidationFailed
from mcp_taskqueue.models import MAX_BATCH, MAX_PAYLOAD_BYTES, MAX_TITLE, Status
from mcp_taskqueue.queue import BACKOFF_BASE_SECONDS, TaskQueue, parse_time
from tests.conftest import Clock


def actions(queue: TaskQueue, task_id: str) -> list[str]:
    return [e.action for e in queue.history(task_id).events]


def test_create_defaults_and_readiness(queue: TaskQueue) -> None:
    task = queue.create({"title": "Write the parser"})
    assert task.status == Status.ready
    assert task.project == "default" and task.priority.value == "medium" and task.kind == "task"
    assert task.version == 1 and task.attempts == 0 and task.max_attempts == 3
    assert len(task.id) == 16 and task.created_at.endswith("Z")
    assert queue.get(task.id) == task
    assert actions(queue, task.id) == ["created"]
    assert [p.name for p in queue.list_projects()] == ["default"]


def test_run_at_in_future_is_pending_until_due(timed_queue: TaskQueue, clock: Clock) -> None:
    when = "2027-01-15T10:00:00Z"
    clock.now = parse_time(when) - 60
    task = timed_queue.create({"title": "later", "run_at": when})
    assert task.status == Status.pending and task.run_at == "2027-01-15T10:00:00.000Z"
    assert timed_queue.claim("w") is None
    clock.advance(61)
    claimed = timed_queue.claim("w")
    assert claimed is not None and claimed.id == task.id
    assert actions(timed_queue, task.id) == ["created", "ready", "claimed"]


def test_claim_order_is_priority_then_age(queue: TaskQueue) -> None:
    low = queue.create({"title": "low", "priority": "low"})
    med1 = queue.create({"title": "m1"})
    crit = queue.create({"title": "crit", "priority": "critical"})
    med2 = queue.create({"title": "m2"})
    high = queue.create({"title": "high", "priority": "high"})
    order = []
    while (task := queue.claim("w")) is not None:
        order.append(task.id)
    assert order == [crit.id, high.id, med1.id, med2.id, low.id]


def test_claim_filters_by_project_kind_and_tag(queue: TaskQueue) -> None:
    a = queue.create({"title": "a", "project": "alpha", "kind": "build", "tags": ["py"]})
    b = queue.create({"title": "b", "project": "beta", "kind": "test", "tags": ["js"]})
    c = queue.create({"title": "c", "project": "beta", "kind": "build", "tags": ["py", "js"]})
    assert queue.claim("w", project="gamma") is None
    got = queue.claim("w", project="beta", kinds=["build"])
    assert got is not None and got.id == c.id
    got = queue.claim("w", tags=["js"])
    assert got is not None and got.id == b.id
    got = queue.claim("w", kinds=["build"], tags=["py"])
    assert got is not None and got.id == a.id
    assert queue.claim("w") is None


def test_claim_takes_lease_and_counts_attempt(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "t"})
    claimed = timed_queue.claim("w1", lease_seconds=60)
    assert claimed is not None
    assert claimed.status == Status.running and claimed.worker == "w1" and claimed.attempts == 1
    assert claimed.lease_expires_at is not None
    assert parse_time(claimed.lease_expires_at) == pytest.approx(clock.now + 60, abs=0.01)
    assert claimed.started_at is not None and claimed.version == task.version + 1
    assert timed_queue.claim("w2") is None  # nothing else is ready; the lease holds


def test_only_the_lease_holder_may_act(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    queue.claim("owner")
    before = queue.get(task.id)
    for call in (
        lambda: queue.heartbeat(task.id, "thief", progress=0.5),
        lambda: queue.complete(task.id, "thief", {"x": 1}),
        lambda: queue.fail(task.id, "thief", "nope"),
        lambda: queue.release(task.id, "thief"),
    ):
        with pytest.raises(LeaseLost, match="not leased to you"):
            call()
    assert queue.get(task.id) == before


def test_heartbeat_extends_lease_and_records_progress(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "t"})
    timed_queue.claim("w", lease_seconds=30)
    clock.advance(20)
    beat = timed_queue.heartbeat(task.id, "w", progress=0.4, message="halfway")
    assert beat.progress == 0.4
    assert beat.lease_expires_at is not None
    assert parse_time(beat.lease_expires_at) == pytest.approx(clock.now + 30, abs=0.01)
    timed_queue.heartbeat(task.id, "w")  # a pure lease extension is not history
    assert actions(timed_queue, task.id) == ["created", "claimed", "progress"]
    with pytest.raises(ValidationFailed, match="between 0 and 1"):
        timed_queue.heartbeat(task.id, "w", progress=1.5)


def test_complete_records_result_and_frees_dependents(queue: TaskQueue) -> None:
    first = queue.create({"title": "first"})
    second = queue.create({"title": "second", "depends_on": [first.id]})
    assert second.status == Status.pending and second.depends_on == [first.id]
    queue.claim("w")
    done = queue.complete(first.id, "w", {"files": ["a.py"]})
    assert done.status == Status.completed and done.result == {"files": ["a.py"]} and done.progress == 1.0
    assert done.finished_at is not None and done.lease_expires_at is None
    assert queue.get(second.id).status == Status.ready
    assert actions(queue, second.id) == ["created", "ready"]


def test_completed_is_terminal(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    queue.claim("w")
    queue.complete(task.id, "w")
    for call in (lambda: queue.cancel(task.id), lambda: queue.retry(task.id)):
        with pytest.raises(InvalidTransition, match="it is completed"):
            call()
    with pytest.raises(LeaseLost):
        queue.complete(task.id, "w")


def test_retryable_failure_backs_off_then_returns(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "flaky", "max_attempts": 3})
    timed_queue.claim("w")
    failed = timed_queue.fail(task.id, "w", "timeout talking to API")
    assert failed.status == Status.pending and failed.error == "timeout talking to API" and failed.worker is None
    assert failed.run_at is not None
    delay = parse_time(failed.run_at) - clock.now
    assert BACKOFF_BASE_SECONDS * 0.5 <= delay <= BACKOFF_BASE_SECONDS
    assert timed_queue.claim("w") is None  # still backing off
    clock.advance(delay + 0.01)
    again = timed_queue.claim("w")
    assert again is not None and again.attempts == 2
    second = timed_queue.fail(task.id, "w", "again")
    assert second.run_at is not None
    assert parse_time(second.run_at) - clock.now >= BACKOFF_BASE_SECONDS  # exponential: 2x base, halved at worst


def test_exhausted_or_non_retryable_failure_is_final(queue: TaskQueue) -> None:
    once = queue.create({"title": "once", "max_attempts": 1})
    dependent = queue.create({"title": "after", "depends_on": [once.id]})
    queue.claim("w")
    final = queue.fail(once.id, "w", "broken")
    assert final.status == Status.failed and final.finished_at is not None
    assert queue.get(dependent.id).blocked_by == [once.id]
    assert queue.stats().blocked == 1

    fatal = queue.create({"title": "fatal", "max_attempts": 5})
    queue.claim("w")
    assert queue.fail(fatal.id, "w", "bad input", retryable=False).status == Status.failed


def test_expired_lease_returns_to_ready_then_fails_when_exhausted(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "t", "max_attempts": 2})
    timed_queue.claim("w1", lease_seconds=10)
    clock.advance(11)
    second = timed_queue.claim("w2", lease_seconds=10)  # the claim path itself applies expiry
    assert second is not None and second.id == task.id and second.attempts == 2 and second.worker == "w2"
    with pytest.raises(LeaseLost, match="held by 'w2'"):
        timed_queue.complete(task.id, "w1")  # the late worker is refused
    clock.advance(11)
    assert timed_queue.claim("w3") is None
    final = timed_queue.get(task.id)
    assert final.status == Status.failed and final.error is not None and "lease expired" in final.error
    assert actions(timed_queue, task.id).count("lease_expired") == 2


def test_release_gives_back_without_using_an_attempt(timed_queue: TaskQueue, clock: Clock) -> None:
    task = timed_queue.create({"title": "t"})
    timed_queue.claim("w")
    released = timed_queue.release(task.id, "w")
    assert released.status == Status.ready and released.attempts == 0 and released.worker is None
    timed_queue.claim("w")
    delayed = timed_queue.release(task.id, "w", delay_seconds=30)
    assert delayed.status == Status.pending
    assert timed_queue.claim("w") is None
    clock.advance(31)
    assert timed_queue.claim("w") is not None


def test_cancel_and_retry(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    child = queue.create({"title": "child", "depends_on": [task.id]})
    cancelled = queue.cancel(task.id, reason="not needed")
    assert cancelled.status == Status.cancelled and cancelled.error == "not needed"
    assert queue.get(child.id).blocked_by == [task.id]
    again = queue.cancel(task.id)  # idempotent: a retried call changes nothing
    assert again.version == cancelled.version and actions(queue, task.id).count("cancel") == 1
    retried = queue.retry(task.id)
    assert retried.status == Status.ready and retried.attempts == 0 and retried.error is None
    assert queue.get(child.id).blocked_by == []
    with pytest.raises(InvalidTransition, match="it is ready"):
        queue.retry(task.id)


def test_cancel_running_task_voids_the_lease(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    queue.claim("w")
    queue.cancel(task.id)
    with pytest.raises(LeaseLost):
        queue.complete(task.id, "w")


def test_batch_with_local_refs_is_atomic(queue: TaskQueue) -> None:
    created = queue.create_many(
        [
            {"title": "deploy", "ref": "deploy", "depends_on": ["test"]},
            {"title": "build", "ref": "build"},
            {"title": "test", "ref": "test", "depends_on": ["build"]},
        ]
    )
    deploy, build, test = created
    assert [t.title for t in created] == ["deploy", "build", "test"]
    assert deploy.depends_on == [test.id] and test.depends_on == [build.id]
    assert [t.status for t in created] == [Status.pending, Status.ready, Status.pending]
    total = queue.stats().total
    with pytest.raises(NotFound, match="neither a task id nor a ref"):
        queue.create_many([{"title": "ok"}, {"title": "bad", "depends_on": ["missing"]}])
    with pytest.raises(ValidationFailed, match=r"tasks\[1\]\.title"):
        queue.create_many([{"title": "ok"}, {"title": ""}])
    assert queue.stats().total == total  # nothing of a refused batch was written


def test_batch_cycle_is_named(queue: TaskQueue) -> None:
    with pytest.raises(ValidationFailed, match="a -> b -> c -> a"):
        queue.create_many(
            [
                {"title": "A", "ref": "a", "depends_on": ["b"]},
                {"title": "B", "ref": "b", "depends_on": ["c"]},
                {"title": "C", "ref": "c", "depends_on": ["a"]},
            ]
        )
    assert queue.stats().total == 0


def test_add_dependency_refuses_cycles_and_updates_readiness(queue: TaskQueue) -> None:
    a = queue.create({"title": "a"})
    b = queue.create({"title": "b", "depends_on": [a.id]})
    c = queue.create({"title": "c", "depends_on": [b.id]})
    with pytest.raises(ValidationFailed, match=f"{a.id} -> {c.id} -> {b.id} -> {a.id}"):
        queue.add_dependency(a.id, c.id)
    with pytest.raises(ValidationFailed, match="cycle"):
        queue.add_dependency(a.id, a.id)
    d = queue.create({"title": "d"})
    assert queue.add_dependency(d.id, a.id).status == Status.pending
    removed = queue.remove_dependency(d.id, a.id)
    assert removed.status == Status.ready
    assert queue.remove_dependency(d.id, a.id).version == removed.version  # idempotent: already gone
    with pytest.raises(NotFound):
        queue.remove_dependency(d.id, "no-such-task")


def test_idempotency_key_returns_existing_task(queue: TaskQueue) -> None:
    first = queue.create({"title": "once", "idempotency_key": "job-42"})
    again = queue.create({"title": "once (retry of the call)", "idempotency_key": "job-42"})
    assert again.id == first.id and again.title == "once"
    other_project = queue.create({"title": "once", "idempotency_key": "job-42", "project": "other"})
    assert other_project.id != first.id
    assert queue.stats().total == 2


def test_update_with_expected_version(queue: TaskQueue) -> None:
    task = queue.create({"title": "t", "tags": ["a"]})
    updated = queue.update(task.id, {"title": "renamed", "priority": "high", "tags": ["b"]}, expected_version=1)
    assert updated.title == "renamed" and updated.priority.value == "high" and updated.tags == ["b"]
    assert updated.version == 2
    with pytest.raises(Conflict, match="at version 2, not 1"):
        queue.update(task.id, {"title": "stale"}, expected_version=1)
    assert queue.get(task.id).title == "renamed"
    event = queue.history(task.id).events[-1]
    assert event.action == "updated" and event.old["title"] == "t" and event.new["title"] == "renamed"
    with pytest.raises(ValidationFailed, match="status"):
        queue.update(task.id, {"status": "completed"})
    with pytest.raises(ValidationFailed, match="nothing to update"):
        queue.update(task.id, {})
    assert queue.list(tag="b").tasks[0].id == task.id and queue.list(tag="a").tasks == []


def test_list_filters_search_and_pagination(queue: TaskQueue) -> None:
    ids = [queue.create({"title": f"task {i}", "priority": "high" if i % 3 == 0 else "low"}).id for i in range(25)]
    queue.create({"title": "Refactor the lexer", "description": "tokens and spans", "project": "p2"})
    page = queue.list(limit=10)
    seen = [t.id for t in page.tasks]
    while page.next_cursor:
        page = queue.list(limit=10, cursor=page.next_cursor)
        seen.extend(t.id for t in page.tasks)
    assert len(seen) == 26 and len(set(seen)) == 26
    high = [i for n, i in enumerate(ids) if n % 3 == 0]
    assert seen[: len(high)] == high  # claim order: priority first
    assert [t.title for t in queue.list(query="lexer tokens").tasks] == ["Refactor the lexer"]
    assert queue.list(query='"unbalanced (quote').tasks == []  # free text never breaks FTS syntax
    assert len(queue.list(project="p2").tasks) == 1
    assert len(queue.list(status="ready", project="default", limit=200).tasks) == 25
    with pytest.raises(ValidationFailed, match="cursor"):
        queue.list(cursor="garbage!")
    with pytest.raises(ValidationFailed, match="limit"):
        queue.list(limit=0)


def test_notes_are_history(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    note = queue.add_note(task.id, "found the root cause", actor="alice")
    assert note.action == "note" and note.new == "found the root cause" and note.actor == "alice"
    assert queue.history(task.id).events[-1].seq == note.seq
    with pytest.raises(ValidationFailed, match="empty"):
        queue.add_note(task.id, "   ")


def test_every_change_writes_history(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    queue.update(task.id, {"description": "more"})
    queue.add_note(task.id, "n")
    queue.claim("w")
    queue.heartbeat(task.id, "w", progress=0.5)
    queue.release(task.id, "w")
    queue.claim("w")
    queue.complete(task.id, "w", "ok")
    assert actions(queue, task.id) == [
        "created",
        "updated",
        "note",
        "claimed",
        "progress",
        "release",
        "claimed",
        "complete",
    ]
    page = queue.history(task.id, limit=3)
    assert len(page.events) == 3 and page.next_cursor is not None
    rest = queue.history(task.id, cursor=page.next_cursor)
    assert [e.action for e in rest.events][0] == "claimed"


def test_unknown_ids_and_bad_input_change_nothing(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    snapshot = queue.get(task.id)
    with pytest.raises(NotFound, match="no task with id 'nope'"):
        queue.get("nope")
    with pytest.raises(ValidationFailed, match="title"):
        queue.create({"title": "x" * (MAX_TITLE + 1)})
    with pytest.raises(ValidationFailed, match="bytes"):
        queue.create({"title": "big", "payload": {"blob": "x" * MAX_PAYLOAD_BYTES}})
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["d"] = {}
        node = node["d"]  # type: ignore[assignment]
    with pytest.raises(ValidationFailed, match="nested deeper"):
        queue.create({"title": "deep", "payload": deep})
    with pytest.raises(ValidationFailed, match="limit"):
        queue.create_many([{"title": "x"}] * (MAX_BATCH + 1))
    with pytest.raises(ValidationFailed, match="ISO-8601"):
        queue.create({"title": "when", "run_at": "next tuesday"})
    with pytest.raises(ValidationFailed, match="priority"):
        queue.create({"title": "p", "priority": "urgent"})
    with pytest.raises(ValidationFailed, match="^colour: Extra inputs are not permitted"):
        queue.create({"title": "p", "colour": "red"})
    assert queue.stats().total == 1 and queue.get(task.id) == snapshot


def test_stats(timed_queue: TaskQueue, clock: Clock) -> None:
    timed_queue.create({"title": "a", "priority": "critical"})
    timed_queue.create({"title": "b"})
    timed_queue.create({"title": "c", "project": "other"})
    clock.advance(5)
    running = timed_queue.claim("w", lease_seconds=1)
    assert running is not None
    stats = timed_queue.stats()
    assert stats.total == 3 and stats.by_status["ready"] == 2 and stats.by_status["running"] == 1
    assert stats.by_priority_ready == {"critical": 0, "high": 0, "medium": 2, "low": 0}
    clock.advance(2)  # the lease ran out: stats apply it, so the task counts as ready again
    stats = timed_queue.stats()
    assert stats.by_status["ready"] == 3 and stats.by_status["running"] == 0 and stats.expired_leases == 0
    assert stats.by_priority_ready == {"critical": 1, "high": 0, "medium": 2, "low": 0}
    assert stats.oldest_ready_age_seconds == pytest.approx(7, abs=0.01)
    assert timed_queue.stats("other").total == 1


def test_projects(queue: TaskQueue) -> None:
    project = queue.create_project("web", "the website", {"coverage_threshold": 80})
    assert project.settings.coverage_threshold == 80 and project.settings.required_reviews == 3
    with pytest.raises(Conflict, match="already exists"):
        queue.create_project("web")
    updated = queue.update_project("web", settings={"required_reviews": 2})
    assert updated.settings.required_reviews == 2 and updated.settings.coverage_threshold == 80
    assert updated.description == "the website"
    with pytest.raises(ValidationFailed, match="review_score_threshold"):
        queue.update_project("web", settings={"review_score_threshold": 7})
    with pytest.raises(NotFound):
        queue.update_project("nope", description="x")
    queue.create({"title": "t", "project": "web"})
    assert queue.get_project("web").task_counts == {"ready": 1}


def test_retry_is_only_for_failed_or_cancelled(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    queue.claim("w1")
    with pytest.raises(InvalidTransition, match="only failed or cancelled"):
        queue.retry(task.id)  # retrying a running task would hand it to a second worker
    assert queue.claim("w2") is None
    assert queue.complete(task.id, "w1").status == Status.completed


def test_one_task_named_twice_in_depends_on_counts_once(queue: TaskQueue) -> None:
    a, b, c = queue.create_many(
        [
            {"title": "A", "ref": "a", "idempotency_key": "same"},
            {"title": "A again", "ref": "b", "idempotency_key": "same"},
            {"title": "C", "depends_on": ["a", "b"]},
        ]
    )
    assert a.id == b.id and c.depends_on == [a.id]
    claimed = queue.claim("w")
    assert claimed is not None and claimed.id == a.id
    queue.complete(a.id, "w")
    assert queue.get(c.id).status == Status.ready  # not left waiting forever


def test_parent_ref_may_name_a_later_item(queue: TaskQueue) -> None:
    child, parent = queue.create_many(
        [
            {"title": "subtask", "ref": "c", "parent_id": "p"},
            {"title": "feature", "ref": "p", "depends_on": ["c"]},
        ]
    )
    assert child.parent_id == parent.id and child.version == 1
    assert queue.list(parent_id=parent.id).tasks[0].id == child.id


def test_duplicate_tags_in_an_update_are_merged(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    assert queue.update(task.id, {"tags": ["a", "a", "b"]}).tags == ["a", "b"]


def test_latest_history_is_the_newest_events(queue: TaskQueue) -> None:
    task = queue.create({"title": "t"})
    for n in range(12):
        queue.add_note(task.id, f"note {n}")
    latest = queue.history(task.id, limit=5, latest=True).events
    assert [e.new for e in latest] == [f"note {n}" for n in range(7, 12)]


def test_claim_by_tag_follows_priority_and_tag_changes(queue: TaskQueue) -> None:
    low = queue.create({"title": "low", "priority": "low", "tags": ["gpu"]})
    high = queue.create({"title": "high", "priority": "high", "tags": ["gpu", "big"]})
    untagged = queue.create({"title": "plain", "priority": "critical"})
    other = queue.create({"title": "other", "tags": ["cpu"], "project": "elsewhere"})
    queue.update(low.id, {"priority": "critical"})  # now first among gpu tasks
    first = queue.claim("w", tags=["gpu"])
    assert first is not None and first.id == low.id
    queue.update(high.id, {"tags": ["cpu"]})  # no longer a gpu task
    assert queue.claim("w", tags=["gpu"]) is None
    second = queue.claim("w", tags=["gpu", "cpu"], project="default")
    assert second is not None and second.id == high.id  # 'other' is in another project
    queue.release(second.id, "w")  # back to ready: findable by its tags again
    again = queue.claim("w", tags=["cpu"], kinds=["task"])
    assert again is not None and again.id == high.id
    assert {t.id for t in queue.list(status="ready").tasks} == {untagged.id, other.id}


def test_stats_counts_stay_right_through_every_transition(queue: TaskQueue) -> None:
    ids = [queue.create({"title": f"t{i}", "priority": ["high", "low"][i % 2]}).id for i in range(6)]
    queue.claim("w")
    queue.complete(ids[0], "w")
    queue.claim("w")
    queue.fail(ids[2], "w", "boom", retryable=False)
    queue.cancel(ids[4])
    queue.update(ids[1], {"priority": "critical"})
    queue.create({"title": "x", "project": "p2"})
    stats = queue.stats()
    store_counts = queue.store.read(
        lambda tx: {row[0]: row[1] for row in tx.conn.execute("SELECT status, count(*) FROM tasks GROUP BY status")}
    )
    assert {k: v for k, v in stats.by_status.items() if v} == store_counts
    ready = queue.store.read(
        lambda tx: {
            row[0]: row[1]
            for row in tx.conn.execute("SELECT priority, count(*) FROM tasks WHERE status = 'ready' GROUP BY 1")
        }
    )
    assert {k: v for k, v in stats.by_priority_ready.items() if v} == {
        ["critical", "high", "medium", "low"][rank]: n for rank, n in ready.items()
    }
    assert queue.stats("p2").total == 1 and queue.get_project("p2").task_counts == {"ready": 1}

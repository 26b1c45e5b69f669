"""The development workflow's phase gates: each refusal names what is missing, each success is
recorded in the history, and the project's thresholds decide."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from mcp_taskqueue.development import Development
from mcp_taskqueue.errors import InvalidTransition, NotFound, ValidationFailed
from mcp_taskqueue.models import Phase
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from tests.mcp_calls import call

PASSING = {"passed": 42, "failed": 0}


@pytest.fixture
def dev(queue: TaskQueue) -> Development:
    queue.create_project("app", settings={"coverage_threshold": 90, "required_reviews": 3})
    return Development(queue)


def phases(queue: TaskQueue, task_id: str) -> list[tuple[str, Any, Any]]:
    return [(e.action, e.old, e.new) for e in queue.history(task_id).events if e.action.startswith("phase")]


def to_review(dev: Development, task_id: str) -> None:
    dev.advance(task_id, "planning")
    dev.advance(task_id, "implementation", design_doc="docs/design.md")
    dev.advance(task_id, "test_creation")
    dev.advance(task_id, "testing", coverage=93.5)
    dev.advance(task_id, "review", test_report=PASSING)


def test_every_gate_in_order_succeeds_with_its_evidence(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "feature", "project": "app"})
    start = dev.advance(task.id, Phase.planning)
    assert start.phase == "planning" and start.next_phase == "implementation"
    assert start.next_requires is not None and "design_doc" in start.next_requires
    assert dev.advance(task.id, "implementation", design_doc="docs/design.md").next_requires == "nothing"
    testing_hint = dev.advance(task.id, "test_creation").next_requires
    assert testing_hint is not None and "coverage >= 90" in testing_hint
    dev.advance(task.id, "testing", coverage=93.5)
    review = dev.advance(task.id, "review", test_report=PASSING)
    assert review.phase == "review" and review.approvals == 0 and review.required_reviews == 3
    for reviewer in ("ann", "bob", "cy"):
        state = dev.add_review(task.id, reviewer, 0.9, comment="looks good")
    assert state.approvals == 3 and state.approved_by == ["ann", "bob", "cy"]
    done = dev.advance(task.id, "done")
    assert done.phase == "done" and done.next_phase is None
    assert queue.get(task.id).phase == "done"
    recorded = phases(queue, task.id)
    assert [new["phase"] for _, _, new in recorded] == [p.value for p in Phase]
    assert recorded[1][2]["evidence"] == {"design_doc": "docs/design.md"}
    assert recorded[3][2]["evidence"] == {"coverage": 93.5}
    assert recorded[4][2]["evidence"]["test_report"]["passed"] == 42
    assert [e.action for e in queue.history(task.id).events].count("review") == 3


def test_a_task_without_a_phase_starts_in_planning(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    assert dev.status(task.id).phase is None
    state = dev.advance(task.id, "implementation", design_doc="docs/d.md")
    assert state.phase == "implementation"


def test_each_gate_refuses_without_its_evidence(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    dev.advance(task.id, "planning")
    with pytest.raises(InvalidTransition, match="implementation needs design_doc"):
        dev.advance(task.id, "implementation")
    with pytest.raises(InvalidTransition, match="implementation needs design_doc"):
        dev.advance(task.id, "implementation", design_doc="   ")
    dev.advance(task.id, "implementation", design_doc="docs/d.md")
    dev.advance(task.id, "test_creation")
    with pytest.raises(InvalidTransition, match="testing needs coverage >= 90"):
        dev.advance(task.id, "testing")
    with pytest.raises(InvalidTransition, match="coverage 89.9% is below the project's threshold of 90%"):
        dev.advance(task.id, "testing", coverage=89.9)
    dev.advance(task.id, "testing", coverage=90)
    with pytest.raises(InvalidTransition, match="review needs test_report"):
        dev.advance(task.id, "review")
    with pytest.raises(InvalidTransition, match="not passing .passed 40, failed 2"):
        dev.advance(task.id, "review", test_report={"passed": 40, "failed": 2})
    with pytest.raises(InvalidTransition, match="not passing"):
        dev.advance(task.id, "review", test_report={"passed": 0})
    with pytest.raises(InvalidTransition, match="not passing"):
        dev.advance(task.id, "review", test_report={"passed": 5, "errors": 1})
    dev.advance(task.id, "review", test_report=PASSING)
    with pytest.raises(InvalidTransition, match="needs 3 approving reviews .* this review round has 0"):
        dev.advance(task.id, "done")
    assert queue.get(task.id).phase == "review"
    assert len(phases(queue, task.id)) == 5  # refusals changed nothing


def test_reviews_count_once_per_reviewer_and_only_above_the_threshold(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    to_review(dev, task.id)
    dev.add_review(task.id, "ann", 0.95)
    assert dev.add_review(task.id, "ann", 0.99).approvals == 1  # the same reviewer again replaces the vote
    assert dev.add_review(task.id, "bob", 0.7).approvals == 1  # below 0.8
    assert dev.add_review(task.id, "cy", 0.9, approved=False).approvals == 1  # not approved
    with pytest.raises(InvalidTransition, match="this review round has 1"):
        dev.advance(task.id, "done")
    dev.add_review(task.id, "bob", 0.85)  # bob re-reviews after changes
    assert dev.add_review(task.id, "cy", 0.8).approvals == 3
    assert dev.advance(task.id, "done").phase == "done"


def test_skipping_is_refused_naming_the_missing_evidence(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    dev.advance(task.id, "planning")
    with pytest.raises(InvalidTransition) as refused:
        dev.advance(task.id, "testing", coverage=99)
    message = str(refused.value)
    assert "cannot skip from planning to testing" in message and "next is implementation" in message
    assert "implementation: design_doc" in message and "testing: coverage >= 90" in message
    with pytest.raises(InvalidTransition, match="cannot skip from planning to done"):
        dev.advance(task.id, "done")
    assert queue.get(task.id).phase == "planning"


def test_going_back_from_review_to_implementation_is_recorded_and_starts_a_new_round(
    queue: TaskQueue, dev: Development
) -> None:
    task = queue.create({"title": "t", "project": "app"})
    to_review(dev, task.id)
    dev.add_review(task.id, "ann", 0.9)
    dev.add_review(task.id, "bob", 0.4, approved=False, comment="missing error handling")
    back = dev.advance(task.id, "implementation", reason="review asked for error handling")
    assert back.phase == "implementation"
    action, old, new = phases(queue, task.id)[-1]
    assert action == "phase_back" and old == "review" and new["reason"] == "review asked for error handling"
    dev.advance(task.id, "test_creation")
    dev.advance(task.id, "testing", coverage=95)
    again = dev.advance(task.id, "review", test_report=PASSING)
    assert again.approvals == 0  # ann's approval was for the old round


def test_other_backward_moves_and_repeats_are_refused(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    dev.advance(task.id, "planning")
    dev.advance(task.id, "implementation", design_doc="d.md")
    with pytest.raises(InvalidTransition, match="already in phase implementation"):
        dev.advance(task.id, "implementation", design_doc="d.md")
    with pytest.raises(InvalidTransition, match="cannot go back from implementation to planning"):
        dev.advance(task.id, "planning")
    with pytest.raises(ValidationFailed, match="unknown phase 'deploy'"):
        dev.advance(task.id, "deploy")


def test_reviews_only_in_the_review_phase_and_not_by_the_worker(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    with pytest.raises(InvalidTransition, match="reviews are taken in the review phase"):
        dev.add_review(task.id, "ann", 0.9)
    claimed = queue.claim("builder")
    assert claimed is not None and claimed.id == task.id
    to_review(dev, task.id)
    with pytest.raises(ValidationFailed, match="a review must come from someone else"):
        dev.add_review(task.id, "builder", 1.0)
    with pytest.raises(ValidationFailed, match="score must be between 0 and 1"):
        dev.add_review(task.id, "ann", 1.5)
    with pytest.raises(NotFound):
        dev.add_review("missing", "ann", 0.9)


def to_review_by(dev: Development, task_id: str, actor: str | None) -> None:
    dev.advance(task_id, "planning", actor=actor)
    dev.advance(task_id, "implementation", design_doc="docs/design.md", actor=actor)
    dev.advance(task_id, "test_creation", actor=actor)
    dev.advance(task_id, "testing", coverage=93.5, actor=actor)
    dev.advance(task_id, "review", test_report=PASSING, actor=actor)


def review_snapshot(queue: TaskQueue, dev: Development, task_id: str) -> tuple[Any, ...]:
    """Everything a review writes: the votes, the task's version and updated_at, the history."""
    state = dev.status(task_id)
    task = queue.get(task_id)
    events = [(e.action, e.actor, e.new) for e in queue.history(task_id).events]
    return state.approvals, state.approved_by, task.version, task.updated_at, events


def test_a_worker_of_an_earlier_attempt_may_not_review(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    first = queue.claim("first-worker")
    assert first is not None and first.id == task.id
    queue.release(task.id, "first-worker")
    second = queue.claim("second-worker")
    assert second is not None and second.id == task.id
    assert queue.get(task.id).worker == "second-worker"  # the lease holder is no longer first-worker
    to_review(dev, task.id)
    dev.add_review(task.id, "ann", 0.9)
    before = review_snapshot(queue, dev, task.id)
    with pytest.raises(ValidationFailed) as refused:
        dev.add_review(task.id, "first-worker", 1.0, comment="lgtm")
    assert str(refused.value) == (
        f"'first-worker' is an author of task {task.id} (claimed it); a review must come from someone else "
        "(not anyone who claimed the task or advanced its phases)"
    )
    with pytest.raises(ValidationFailed, match=r"'second-worker' is an author .* \(claimed it\)"):
        dev.add_review(task.id, "second-worker", 1.0)
    with pytest.raises(ValidationFailed, match="is an author"):
        dev.add_review(task.id, " first-worker ", 1.0)  # padding does not make someone else
    assert review_snapshot(queue, dev, task.id) == before  # the refusals changed nothing


def test_whoever_advanced_the_phases_may_not_review(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    dev.advance(task.id, "planning", actor="lead")
    dev.advance(task.id, "implementation", design_doc="docs/design.md", actor="coder")
    dev.advance(task.id, "test_creation", actor="coder")
    dev.advance(task.id, "testing", coverage=93.5, actor="tester")
    dev.advance(task.id, "review", test_report=PASSING)  # no actor: nobody is named
    before = review_snapshot(queue, dev, task.id)
    for author in ("lead", "coder", "tester"):
        with pytest.raises(ValidationFailed) as refused:
            dev.add_review(task.id, author, 0.95)
        assert f"'{author}' is an author of task {task.id} (advanced its phases)" in str(refused.value)
    assert review_snapshot(queue, dev, task.id) == before
    state = dev.add_review(task.id, "ann", 0.9)  # an unrelated reviewer is accepted
    assert state.approvals == 1 and state.approved_by == ["ann"]
    reviews = [(e.actor, e.new) for e in queue.history(task.id).events if e.action == "review"]
    assert reviews == [("ann", {"reviewer": "ann", "score": 0.9, "approved": True, "round": 1})]


def test_a_worker_who_also_advanced_is_told_both(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    assert queue.claim("builder") is not None
    to_review_by(dev, task.id, "builder")
    with pytest.raises(ValidationFailed, match=r"\(claimed it and advanced its phases\)"):
        dev.add_review(task.id, "builder", 0.9, approved=False)
    assert dev.status(task.id).approvals == 0


def test_authors_of_other_tasks_and_senders_back_may_review(queue: TaskQueue, dev: Development) -> None:
    other = queue.create({"title": "other", "project": "app", "priority": "high"})
    task = queue.create({"title": "t", "project": "app"})
    claimed = queue.claim("busy")
    assert claimed is not None and claimed.id == other.id
    to_review_by(dev, other.id, "coder")
    to_review_by(dev, task.id, "lead")
    # Authorship is per task: busy and coder wrote `other`, not `task`.
    assert dev.add_review(task.id, "busy", 0.9).approved_by == ["busy"]
    assert dev.add_review(task.id, "coder", 0.9).approved_by == ["busy", "coder"]
    # Sending the work back for changes is reviewing, not authoring: the sender reviews the next round.
    dev.advance(task.id, "implementation", reason="needs error handling", actor="busy")
    dev.advance(task.id, "test_creation", actor="lead")
    dev.advance(task.id, "testing", coverage=95, actor="lead")
    dev.advance(task.id, "review", test_report=PASSING, actor="lead")
    assert dev.add_review(task.id, "busy", 0.9).approved_by == ["busy"]


@pytest.mark.sqlite_only("reads SQLite's query plan through its trace callback")
def test_the_author_lookup_reads_only_the_tasks_own_events(store: Store, queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    to_review_by(dev, task.id, "lead")
    for i in range(50):  # other tasks' history, which the lookup must not scan
        queue.add_note(queue.create({"title": f"filler {i}"}).id, "noise", actor="lead")
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    try:
        with pytest.raises(ValidationFailed, match="is an author"):
            dev.add_review(task.id, "lead", 0.9)
    finally:
        store._conn.set_trace_callback(None)
    lookups = [sql for sql in seen if "FROM events" in sql]
    assert len(lookups) == 1
    plan = store.explain(lookups[0])
    assert any("USING INDEX events_task (task_seq=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN events") for step in plan), plan


def test_thresholds_are_per_project(queue: TaskQueue, dev: Development) -> None:
    queue.create_project(
        "lenient", settings={"coverage_threshold": 50, "required_reviews": 1, "review_score_threshold": 0.5}
    )
    task = queue.create({"title": "t", "project": "lenient"})
    dev.advance(task.id, "implementation", design_doc="d.md")
    dev.advance(task.id, "test_creation")
    dev.advance(task.id, "testing", coverage=55)
    dev.advance(task.id, "review", test_report=PASSING)
    dev.add_review(task.id, "ann", 0.6)
    assert dev.advance(task.id, "done").phase == "done"
    queue.update_project("app", settings={"coverage_threshold": 99})
    strict = queue.create({"title": "s", "project": "app"})
    dev.advance(strict.id, "implementation", design_doc="d.md")
    dev.advance(strict.id, "test_creation")
    with pytest.raises(InvalidTransition, match="threshold of 99%"):
        dev.advance(strict.id, "testing", coverage=98)


def test_cancelled_tasks_do_not_advance(queue: TaskQueue, dev: Development) -> None:
    task = queue.create({"title": "t", "project": "app"})
    queue.cancel(task.id)
    with pytest.raises(InvalidTransition, match="retry_task it before"):
        dev.advance(task.id, "planning")


@pytest.mark.anyio
async def test_phase_tools_through_the_server(client: Client) -> None:
    await call(client, "create_project", name="app", required_reviews=1)
    task = await call(client, "create_task", title="feature", project="app")
    await call(client, "advance_phase", task_id=task["id"], to="implementation", design_doc="docs/f.md")
    refused = await client.call_tool("advance_phase", {"task_id": task["id"], "to": "review"})
    assert refused.is_error and "cannot skip from implementation to review" in refused.content[0].text  # type: ignore[union-attr]
    await call(client, "advance_phase", task_id=task["id"], to="test_creation")
    await call(client, "advance_phase", task_id=task["id"], to="testing", coverage=91)
    state = await call(client, "advance_phase", task_id=task["id"], to="review", test_report={"passed": 3, "failed": 0})
    assert state["phase"] == "review" and state["required_reviews"] == 1
    bad = await client.call_tool(
        "advance_phase", {"task_id": task["id"], "to": "review", "test_report": {"passed": "many"}}
    )
    assert bad.is_error and "test_report is not a test report (passed:" in bad.content[0].text  # type: ignore[union-attr]
    claimed = await call(client, "claim_task", worker="wendy", project="app")
    assert claimed["task"]["id"] == task["id"]
    own = await client.call_tool("add_review", {"task_id": task["id"], "reviewer": "wendy", "score": 1.0})
    assert own.is_error and "'wendy' is an author of task" in own.content[0].text  # type: ignore[union-attr]
    reviewed = await call(client, "add_review", task_id=task["id"], reviewer="rita", score=0.9, comment="ok")
    assert reviewed["approvals"] == 1 and reviewed["approved_by"] == ["rita"]
    done = await call(client, "advance_phase", task_id=task["id"], to="done")
    assert done["phase"] == "done"
    assert (await call(client, "get_task", task_id=task["id"]))["phase"] == "done"


@pytest.mark.anyio
async def test_advance_phase_over_mcp_records_who_advanced(client: Client) -> None:
    task = await call(client, "create_task", title="feature")
    tid = task["id"]
    await call(client, "advance_phase", task_id=tid, to="implementation", design_doc="docs/d.md", by="dev-1")
    await call(client, "advance_phase", task_id=tid, to="test_creation", by="dev-2")
    await call(client, "advance_phase", task_id=tid, to="testing", coverage=95, by="dev-2")
    await call(client, "advance_phase", task_id=tid, to="review", test_report={"passed": 10, "failed": 0}, by="dev-2")
    refusal = await client.call_tool("add_review", {"task_id": task["id"], "reviewer": "dev-1", "score": 1.0})
    assert refusal.is_error and "author" in refusal.content[0].text  # type: ignore[union-attr]

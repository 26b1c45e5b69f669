"""Dependencies: every cycle shape is refused and named, readiness waits for all dependencies,
dead ends mark everything below them, and a 1,000-task random DAG drains in a valid order."""

from __future__ import annotations

import random

import pytest

from mcp_taskqueue.errors import NotFound, ValidationFailed
from mcp_taskqueue.models import PRIORITY_RANK, Priority, Status
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store


def chain(queue: TaskQueue, *titles: str) -> list[str]:
    """Tasks where each depends on the one before it; returns their ids."""
    ids: list[str] = []
    for title in titles:
        ids.append(queue.create({"title": title, "depends_on": ids[-1:]}).id)
    return ids


def total(queue: TaskQueue) -> int:
    return queue.stats().total


# --- cycles ---------------------------------------------------------------------------------


def test_a_task_cannot_depend_on_itself(queue: TaskQueue) -> None:
    a = queue.create({"title": "a"})
    with pytest.raises(ValidationFailed, match=f"cycle: {a.id} -> {a.id}$"):
        queue.add_dependency(a.id, a.id)
    assert queue.get(a.id).depends_on == [] and queue.get(a.id).status == Status.ready


def test_two_task_cycle_is_refused_and_named(queue: TaskQueue) -> None:
    a, b = chain(queue, "a", "b")  # b depends on a
    with pytest.raises(ValidationFailed, match=f"cycle: {a} -> {b} -> {a}$"):
        queue.add_dependency(a, b)
    assert queue.get(a).depends_on == []


def test_cycle_through_a_long_path_is_named_in_full(queue: TaskQueue) -> None:
    a, b, c, d = chain(queue, "a", "b", "c", "d")
    with pytest.raises(ValidationFailed) as refused:
        queue.add_dependency(a, d)
    assert str(refused.value).endswith(f"{a} -> {d} -> {c} -> {b} -> {a}")
    before = queue.history(a).events
    assert [e.action for e in before] == ["created"]  # nothing was written


def test_a_diamond_is_not_a_cycle(queue: TaskQueue) -> None:
    top = queue.create({"title": "top"})
    left = queue.create({"title": "left", "depends_on": [top.id]})
    right = queue.create({"title": "right", "depends_on": [top.id]})
    bottom = queue.create({"title": "bottom", "depends_on": [left.id]})
    queue.add_dependency(bottom.id, right.id)
    assert queue.get(bottom.id).depends_on == sorted([left.id, right.id])


@pytest.mark.parametrize(
    ("edges", "named"),
    [
        ({"x": ["x"]}, "x -> x"),
        ({"x": ["y"], "y": ["x"]}, "x -> y -> x"),
        ({"x": ["y"], "y": ["z"], "z": ["x"]}, "x -> y -> z -> x"),
        ({"x": [], "y": ["x", "w"], "z": ["y"], "w": ["z"]}, "y -> w -> z -> y"),
    ],
)
def test_a_cycle_inside_one_batch_is_refused_and_nothing_is_created(
    queue: TaskQueue, edges: dict[str, list[str]], named: str
) -> None:
    specs = [{"title": ref, "ref": ref, "depends_on": deps} for ref, deps in edges.items()]
    with pytest.raises(ValidationFailed, match=f"cycle in the batch: {named}$"):
        queue.create_many(specs)
    assert total(queue) == 0


def test_an_unknown_dependency_is_refused(queue: TaskQueue) -> None:
    with pytest.raises(NotFound, match="nope"):
        queue.create_many([{"title": "a", "ref": "a"}, {"title": "b", "depends_on": ["a", "nope"]}])
    assert total(queue) == 0


# --- readiness ------------------------------------------------------------------------------


def test_a_task_is_ready_only_when_every_dependency_completed(queue: TaskQueue) -> None:
    a = queue.create({"title": "a", "priority": "high"})
    b = queue.create({"title": "b", "priority": "high"})
    after = queue.create({"title": "after", "depends_on": [a.id, b.id], "priority": "critical"})
    assert after.status == Status.pending
    claimed = queue.claim("w")
    assert claimed is not None and claimed.id == a.id
    queue.complete(a.id, "w")
    assert queue.get(after.id).status == Status.pending  # b is still open
    queue.claim("w")
    queue.complete(b.id, "w")
    assert queue.get(after.id).status == Status.ready
    nxt = queue.claim("w")
    assert nxt is not None and nxt.id == after.id


@pytest.mark.sqlite_only("counts statements with SQLite's trace callback; PostgreSQL's plans are in test_postgres.py")
def test_completing_a_task_touches_only_its_dependents(store: Store, queue: TaskQueue) -> None:
    """Readiness is a counter per dependent, not a table scan: statement count does not grow with the queue."""
    first = queue.create({"title": "first"})
    queue.create({"title": "second", "depends_on": [first.id]})
    claimed = queue.claim("w")
    assert claimed is not None

    def statements_for_complete(extra_tasks: int) -> int:
        queue.create_many([{"title": f"filler {i}", "run_at": "2100-01-01T00:00:00Z"} for i in range(extra_tasks)])
        task = queue.create({"title": "x"})
        queue.create({"title": "y", "depends_on": [task.id]})
        got = queue.claim("w", kinds=["task"])
        while got is not None and got.id != task.id:
            queue.complete(got.id, "w")
            got = queue.claim("w", kinds=["task"])
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        try:
            queue.complete(task.id, "w")
        finally:
            store._conn.set_trace_callback(None)
        return len(seen)

    small = statements_for_complete(10)
    large = statements_for_complete(400)
    assert small == large


# --- dead ends ------------------------------------------------------------------------------


def test_failure_marks_every_waiting_task_below_it(queue: TaskQueue) -> None:
    root = queue.create({"title": "root", "max_attempts": 1})
    a, b, c = chain(queue, "a", "b", "c")
    queue.add_dependency(a, root.id)
    side = queue.create({"title": "side", "depends_on": [b]})
    independent = queue.create({"title": "independent"})
    claimed = queue.claim("w")
    assert claimed is not None and claimed.id == root.id
    queue.fail(root.id, "w", "boom")
    for task_id in (a, b, c, side.id):
        assert queue.get(task_id).blocked_by == [root.id], task_id
    assert queue.get(independent.id).blocked_by == []
    assert queue.stats().blocked == 4
    assert "blocked" in [e.action for e in queue.history(c).events]

    queue.retry(root.id)
    for task_id in (a, b, c, side.id):
        assert queue.get(task_id).blocked_by == [], task_id
    assert queue.stats().blocked == 0
    assert "unblocked" in [e.action for e in queue.history(c).events]


def test_cancel_marks_dependents_and_their_dependents(queue: TaskQueue) -> None:
    a, b, c = chain(queue, "a", "b", "c")
    queue.cancel(a, reason="dropped")
    assert queue.get(b).blocked_by == [a] and queue.get(c).blocked_by == [a]
    # Cancelling the blocked middle task makes it the nearer dead end for what is below it.
    queue.cancel(b)
    assert queue.get(c).blocked_by == [b]


def test_a_retried_task_recomputes_marks_that_went_stale_while_it_was_finished(queue: TaskQueue) -> None:
    a, b, c = chain(queue, "a", "b", "c")
    queue.cancel(a)
    queue.cancel(b)  # b still says blocked by a; c is now blocked by b
    queue.retry(a)  # b is finished, so its marks are not touched here
    revived = queue.retry(b)
    assert revived.blocked_by == [] and revived.status == Status.pending
    assert queue.get(c).blocked_by == []


def test_two_dead_ends_are_both_named(queue: TaskQueue) -> None:
    x = queue.create({"title": "x"})
    y = queue.create({"title": "y"})
    mid = queue.create({"title": "mid", "depends_on": [x.id]})
    low = queue.create({"title": "low", "depends_on": [mid.id, y.id]})
    queue.cancel(x.id)
    queue.cancel(y.id)
    assert sorted(queue.get(low.id).blocked_by) == sorted([x.id, y.id])
    queue.retry(x.id)
    assert queue.get(low.id).blocked_by == [y.id]


def test_removing_the_dependency_that_carried_a_block_clears_it_below(queue: TaskQueue) -> None:
    dead = queue.create({"title": "dead"})
    mid = queue.create({"title": "mid", "depends_on": [dead.id]})
    low = queue.create({"title": "low", "depends_on": [mid.id]})
    lower = queue.create({"title": "lower", "depends_on": [low.id]})
    queue.cancel(dead.id)
    assert queue.get(lower.id).blocked_by == [dead.id]
    queue.remove_dependency(low.id, mid.id)
    assert queue.get(low.id).blocked_by == [] and queue.get(lower.id).blocked_by == []
    assert queue.get(low.id).status == Status.ready
    assert queue.get(mid.id).blocked_by == [dead.id]  # still waits on the cancelled task


def test_adding_a_dependency_on_a_blocked_task_inherits_the_block(queue: TaskQueue) -> None:
    dead = queue.create({"title": "dead"})
    mid = queue.create({"title": "mid", "depends_on": [dead.id]})
    queue.cancel(dead.id)
    newcomer = queue.create({"title": "newcomer"})
    below = queue.create({"title": "below", "depends_on": [newcomer.id]})
    queue.add_dependency(newcomer.id, mid.id)
    assert queue.get(newcomer.id).blocked_by == [dead.id]
    assert queue.get(below.id).blocked_by == [dead.id]
    assert queue.get(newcomer.id).status == Status.pending


# --- a large random graph -------------------------------------------------------------------


def test_a_random_dag_of_1000_tasks_drains_in_dependency_and_priority_order(queue: TaskQueue) -> None:
    rng = random.Random(20261129)
    priorities = list(Priority)
    deps: dict[int, list[int]] = {}
    specs: list[dict[str, object]] = []
    for index in range(1000):
        earlier = rng.sample(range(index), k=min(index, rng.choice([0, 0, 1, 1, 2, 3])))
        deps[index] = earlier
        specs.append({"title": f"t{index}", "priority": rng.choice(priorities).value, "ref": f"r{index}"})
    # Two batches (the batch limit is 500): the second refers to the first by id.
    ids: dict[int, str] = {}
    for start in (0, 500):
        batch = []
        for index in range(start, start + 500):
            refs = [f"r{d}" if d >= start else ids[d] for d in deps[index]]
            batch.append({**specs[index], "depends_on": refs})
        for offset, task in enumerate(queue.create_many(batch)):
            ids[start + offset] = task.id
    index_of = {task_id: index for index, task_id in ids.items()}
    rank = {index: PRIORITY_RANK[Priority(specs[index]["priority"])] for index in ids}

    done: set[int] = set()
    order: list[int] = []
    while True:
        task = queue.claim("drainer")
        if task is None:
            break
        index = index_of[task.id]
        assert all(d in done for d in deps[index]), f"t{index} claimed before its dependencies"
        # It must be the best ready task: nothing ready has a higher priority, or equal priority and older.
        ready_now = [i for i in ids if i not in done and i != index and all(d in done for d in deps[i])]
        best = min([index, *ready_now], key=lambda i: (rank[i], ids[i]))  # ids sort by creation
        assert best == index, f"claimed t{index} while t{best} was ready and ahead of it"
        queue.complete(task.id, "drainer")
        done.add(index)
        order.append(index)
    assert len(order) == 1000 and queue.stats().by_status["completed"] == 1000


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    """Whether `goal` is reachable from `start` following task -> its dependencies."""
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in graph[node] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return False


def test_random_dependency_edits_are_refused_exactly_when_they_close_a_cycle(queue: TaskQueue) -> None:
    rng = random.Random(7)
    ids = [task.id for task in queue.create_many([{"title": f"t{i}"} for i in range(40)])]
    graph: dict[str, set[str]] = {task_id: set() for task_id in ids}
    refused = 0
    for _ in range(300):
        task_id, depends_on = rng.choice(ids), rng.choice(ids)
        closes_cycle = reaches(graph, depends_on, task_id)
        try:
            queue.add_dependency(task_id, depends_on)
        except ValidationFailed as exc:
            assert closes_cycle, f"refused an acyclic edge {task_id} -> {depends_on}: {exc}"
            path = str(exc).split("cycle: ")[1].split(" -> ")
            assert path[0] == path[-1] == task_id and path[1] == depends_on
            assert all(b in graph[a] or (a, b) == (task_id, depends_on) for a, b in zip(path, path[1:], strict=False))
            refused += 1
            continue
        assert not closes_cycle, f"accepted {task_id} -> {depends_on}, which closes a cycle"
        graph[task_id].add(depends_on)
    assert refused > 10
    for task_id in ids:
        assert set(queue.get(task_id).depends_on) == graph[task_id]


def test_blocked_marks_match_a_model_after_random_dead_ends_and_retries(queue: TaskQueue) -> None:
    rng = random.Random(11)
    specs = []
    for index in range(150):
        deps = rng.sample(range(index), k=min(index, rng.choice([0, 1, 1, 2, 3])))
        specs.append({"title": f"t{index}", "ref": f"r{index}", "depends_on": [f"r{d}" for d in deps]})
    tasks = queue.create_many(specs)
    ids = [t.id for t in tasks]
    deps_of = {t.id: set(t.depends_on) for t in tasks}
    order = {task_id: index for index, task_id in enumerate(ids)}  # refs only point to earlier items

    def expected() -> dict[str, set[str]]:
        status = {task_id: queue.get(task_id).status for task_id in ids}
        blocked: dict[str, set[str]] = {}
        for task_id in sorted(ids, key=order.__getitem__):
            causes: set[str] = set()
            for dep in deps_of[task_id]:
                if status[dep] in (Status.failed, Status.cancelled):
                    causes.add(dep)
                elif status[dep] != Status.completed:
                    causes |= blocked[dep]
            blocked[task_id] = causes
        return {task_id: causes for task_id, causes in blocked.items() if not status[task_id].terminal}

    cancelled: list[str] = []
    for step in range(40):
        if cancelled and step % 3 == 2:
            queue.retry(cancelled.pop(rng.randrange(len(cancelled))))
        else:
            victim = rng.choice([i for i in ids if not queue.get(i).status.terminal])
            queue.cancel(victim)
            cancelled.append(victim)
        model = expected()
        for task_id, causes in model.items():  # finished tasks keep the marks they had when they ended
            assert set(queue.get(task_id).blocked_by) == causes, f"step {step}, task {order[task_id]}"
    assert queue.stats().blocked == sum(1 for causes in expected().values() if causes)


def test_claimed_and_completed_tasks_carry_their_dependency_ids(queue: TaskQueue) -> None:
    """The claim and the leased update return the dependency ids with the row (PostgreSQL folds them
    into the same statement): a task's depends_on is right in both answers, in dependency order."""
    first, second = queue.create({"title": "a"}), queue.create({"title": "b"})
    third = queue.create({"title": "c", "depends_on": [second.id, first.id]})
    for task in (first, second):
        claimed = queue.claim("w", project=task.project)
        assert claimed is not None and claimed.depends_on == []
        assert queue.complete(claimed.id, "w", lease_id=claimed.lease_id).depends_on == []
    claimed = queue.claim("w")
    assert claimed is not None and claimed.id == third.id
    assert claimed.depends_on == [first.id, second.id]
    done = queue.complete(third.id, "w", lease_id=claimed.lease_id)
    assert done.depends_on == [first.id, second.id] and queue.get(third.id).depends_on == done.depends_on

"""The live board's read model, JSON API, actions and live feed, on a real server over a real file."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from mcp_taskqueue.board import Board, Filters, charts_from_events, layout
from mcp_taskqueue.errors import InvalidTransition, LeaseLost
from mcp_taskqueue.inputs import parse_time
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from mcp_taskqueue.workflows import Workflows
from tests.board_data import DEMO_COUNTS, populate
from tests.conftest import Clock
from tests.servers import http_server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, TaskQueue, dict[str, Any]]]:
    """A populated store, and `serve --transport http` on it in another process."""
    store = Store(tmp_path / "board.db")
    queue = TaskQueue(store)
    ids = populate(queue)
    with http_server(tmp_path / "board.db") as base:
        yield base, queue, ids
    store.close()


def columns(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["key"]: c for c in view["columns"]}


def test_the_page_and_its_assets_are_served_from_the_package(served: tuple[str, TaskQueue, dict[str, Any]]) -> None:
    base, _, _ = served
    for path in ("/", "/board"):
        page = httpx.get(base + path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert (
            "/board/static/board.js?v=" in page.text and "script-src 'self'" in page.headers["content-security-policy"]
        )
    weight = len(httpx.get(base + "/").content)
    for name in ("board.js", "board.css", "icon.svg"):
        asset = httpx.get(f"{base}/board/static/{name}")
        assert asset.status_code == 200, name
        weight += len(asset.content)
    assert weight < 300_000, f"first view weighs {weight} bytes"
    assert httpx.get(base + "/board/static/../cli.py").status_code == 404
    assert httpx.get(base + "/board/static/secret.py").status_code == 404


def test_columns_show_cards_with_worker_lease_attempts_and_progress(
    served: tuple[str, TaskQueue, dict[str, Any]],
) -> None:
    base, _, ids = served
    view = httpx.get(base + "/board/api/board", params={"project": "demo"}).json()
    cols = columns(view)
    assert list(cols) == ["ready", "running", "blocked", "failed", "completed", "cancelled"]
    assert {k: c["count"] for k, c in cols.items()} == DEMO_COUNTS
    parser = next(c for c in cols["running"]["cards"] if c["id"] == ids["Refactor the parser"])
    assert parser["worker"] == "agent-ada" and parser["attempts"] == 1 and parser["progress"] == 0.4
    assert 3000 < parser["lease_seconds_left"] <= 3600
    report = next(c for c in cols["blocked"]["cards"] if c["id"] == ids["Publish the report"])
    assert report["blocked_by"] == [ids["Migrate the old database"]]
    assert [c["priority"] for c in cols["ready"]["cards"]] == sorted(
        (c["priority"] for c in cols["ready"]["cards"]), key=["critical", "high", "medium", "low"].index
    )


def test_filters_and_search_narrow_every_column(served: tuple[str, TaskQueue, dict[str, Any]]) -> None:
    base, _, ids = served

    def titles(**params: str) -> set[str]:
        view = httpx.get(base + "/board/api/board", params={"project": "demo", **params}).json()
        return {card["title"] for col in view["columns"] for card in col["cards"]}

    assert titles(q="parser") == {"Refactor the parser"}
    assert titles(kind="code") == {
        "Refactor the parser",
        "Fix the login bug",
        "Update dependencies",
        "Build the server",
        "Build the client",
    }
    assert titles(worker="agent-bob") == {"Triage new issues"}
    assert titles(tag="nightly") == {"Index the archive"}
    assert titles(kind="code", q="server") == {"Build the server"}
    only = httpx.get(base + "/board/api/board", params={"project": "demo", "columns": "failed"}).json()
    assert [c["key"] for c in only["columns"]] == ["failed"] and only["total"] == 1
    bad = httpx.get(base + "/board/api/board", params={"project": "demo", "limit": "many"})
    assert bad.status_code == 400 and "limit" in bad.json()["message"]


def test_actions_retry_cancel_release_priority_and_note(served: tuple[str, TaskQueue, dict[str, Any]]) -> None:
    base, queue, ids = served

    def act(task_id: str, action: str, **body: Any) -> httpx.Response:
        return httpx.post(f"{base}/board/api/tasks/{task_id}/{action}", json=body)

    failed = ids["Migrate the old database"]
    assert act(failed, "retry").json()["status"] == "ready"
    assert queue.get(ids["Publish the report"]).blocked_by == []  # no longer blocked by it
    refused = act(ids["Fix the login bug"], "retry")
    assert refused.status_code == 409 and "completed" in refused.json()["message"]

    parser = ids["Refactor the parser"]
    released = act(parser, "release").json()
    assert released["status"] == "ready" and released["worker"] is None
    with pytest.raises(LeaseLost):
        queue.complete(parser, "agent-ada", {"late": True})
    history = httpx.get(f"{base}/board/api/tasks/{parser}").json()["history"]
    assert history[-1]["action"] == "lease_revoked" and history[-1]["actor"] == "board"
    assert act(parser, "release").status_code == 409  # not running any more

    assert act(ids["Translate the README"], "priority", priority="critical").json()["priority"] == "critical"
    assert act(ids["Translate the README"], "priority", priority="urgent").status_code == 400
    note = act(ids["Translate the README"], "note", text="Ask the docs team first").json()
    assert note["action"] == "note"
    detail = httpx.get(f"{base}/board/api/tasks/{ids['Translate the README']}").json()
    assert [n["new"] for n in detail["notes"]] == ["Ask the docs team first"]

    cancelled = act(ids["Summarise the changelog"], "cancel").json()
    assert cancelled["status"] == "cancelled" and "board" in cancelled["error"]
    assert act(ids["Summarise the changelog"], "explode").status_code == 404
    form = httpx.post(f"{base}/board/api/tasks/{parser}/cancel", data={"x": "1"})
    assert form.status_code == 415 and queue.get(parser).status.value == "ready"  # a form post changes nothing
    assert act("nope", "retry").status_code == 404


def test_task_page_has_payload_result_notes_and_full_history(served: tuple[str, TaskQueue, dict[str, Any]]) -> None:
    base, _, ids = served
    detail = httpx.get(f"{base}/board/api/tasks/{ids['Fix the login bug']}").json()
    assert detail["task"]["result"] == {"ok": True} and detail["column"] == "completed"
    assert [e["action"] for e in detail["history"]] == ["created", "claimed", "complete"]
    failed = httpx.get(f"{base}/board/api/tasks/{ids['Migrate the old database']}").json()
    assert failed["task"]["error"] == "disk full on the replica"
    missing = httpx.get(f"{base}/board/api/tasks/does-not-exist")
    assert missing.status_code == 404 and "list_tasks" in missing.json()["message"]


def test_workflow_drawing_marks_the_critical_path(served: tuple[str, TaskQueue, dict[str, Any]]) -> None:
    base, _, ids = served
    refs = ids["workflow_refs"]
    drawing = httpx.get(f"{base}/board/api/workflows/{ids['workflow']}").json()
    path = drawing["workflow"]["critical_path"]
    assert path[-1] == refs["ship"] and refs["tests"] in path and len(path) == 3
    nodes = {n["id"]: n for n in drawing["nodes"]}
    assert {i for i, n in nodes.items() if n["critical"]} == set(path)
    assert nodes[refs["design"]]["layer"] == 0 and nodes[refs["ship"]]["layer"] == 3
    assert nodes[refs["tests"]]["x"] > nodes[refs["server"]]["x"]  # dependencies left of dependents
    critical_edges = {(e["source"], e["target"]) for e in drawing["edges"] if e["critical"]}
    assert critical_edges == set(zip(path, path[1:], strict=False))
    listed = httpx.get(f"{base}/board/api/workflows", params={"project": "demo"}).json()
    assert [w["name"] for w in listed["workflows"]] == ["Release 1.2"]
    projects = httpx.get(f"{base}/board/api/projects").json()["projects"]
    assert [p["name"] for p in projects] == ["demo", "ops"] and projects[0]["workflows"][0]["id"] == ids["workflow"]


def test_layout_of_an_empty_and_a_diamond_graph() -> None:
    assert layout([], []) == ([], [], -60, -20) or layout([], [])[0] == []

    class T:
        def __init__(self, id: str, deps: list[str]) -> None:
            self.id, self.depends_on = id, deps

    nodes, edges, width, height = layout(
        [T("a", []), T("b", ["a"]), T("c", ["a"]), T("d", ["b", "c"])], ["a", "b", "d"]
    )
    by = {n.id: n for n in nodes}
    assert [by[i].layer for i in "abcd"] == [0, 1, 1, 2]
    assert by["b"].y != by["c"].y and width > height > 0
    assert {(e.source, e.target) for e in edges if e.critical} == {("a", "b"), ("b", "d")}


def read_events(base: str, found: list[dict[str, Any]], stop: threading.Event) -> None:
    """Collect the board's server-sent events until told to stop (or the server goes away)."""
    try:
        with httpx.stream("GET", base + "/board/events", timeout=httpx.Timeout(5, read=30)) as response:
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    found.append({"event": event, "data": json.loads(line[6:]), "at": time.monotonic()})
                if stop.is_set():
                    return
    except httpx.HTTPError:
        return


def test_changes_from_another_process_are_pushed_within_a_second(
    served: tuple[str, TaskQueue, dict[str, Any]],
) -> None:
    base, queue, ids = served
    found: list[dict[str, Any]] = []
    stop = threading.Event()
    reader = threading.Thread(target=read_events, args=(base, found, stop), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        time.sleep(0.02)
    assert found and found[0]["event"] == "hello"
    started = time.monotonic()
    task = queue.create({"project": "ops", "title": "Pushed, not polled"})
    while len(found) < 2 and time.monotonic() < started + 10:
        time.sleep(0.01)
    stop.set()
    change = found[1]
    assert change["event"] == "change"
    assert "ops" in change["data"]["projects"] and task.id in change["data"]["tasks"]
    # generous on a loaded machine; the server itself polls the file every 0.15 s
    assert change["at"] - started < 2.0, f"took {change['at'] - started:.2f}s"
    assert ids  # the populated board stayed


def test_a_long_history_says_it_is_cut_and_pages_through_every_event(
    served: tuple[str, TaskQueue, dict[str, Any]],
) -> None:
    base, queue, ids = served
    task_id = ids["Fix the login bug"]  # created, claimed, complete
    for i in range(520):
        queue.add_note(task_id, f"note {i}", actor="agent-ada")
    detail = httpx.get(f"{base}/board/api/tasks/{task_id}").json()
    assert detail["older_events"] is True and len(detail["history"]) == 500
    assert detail["history"][-1]["new"] == "note 519" and detail["history"][0]["new"] == "note 20"
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(f"{base}/board/api/tasks/{task_id}/history", params=params).json()
        events += page["events"]
        if not (cursor := page["next_cursor"]):
            break
    assert len(events) == 523 and events[0]["action"] == "created" and events[-1]["new"] == "note 519"
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    short = httpx.get(f"{base}/board/api/tasks/{ids['Old experiment']}").json()
    assert short["older_events"] is False and short["history"][0]["action"] == "created"
    assert httpx.get(f"{base}/board/api/tasks/nope/history").status_code == 404
    assert httpx.get(f"{base}/board/api/tasks/{task_id}/history", params={"limit": 0}).status_code == 400


def test_ten_thousand_tasks_page_quickly(tmp_path: Path) -> None:
    queue = TaskQueue(Store(tmp_path / "big.db"))
    for start in range(0, 10_000, 500):
        queue.create_many(
            [{"project": "big", "title": f"task {i}", "kind": f"k{i % 7}"} for i in range(start, start + 500)]
        )
    board = Board(queue)
    started = time.perf_counter()
    view = board.view(Filters(project="big"))
    elapsed = time.perf_counter() - started
    ready = columns(view.model_dump(mode="json"))["ready"]
    assert ready["count"] == 10_000 and len(ready["cards"]) == 50 and ready["next_cursor"]
    assert elapsed < 1.0, f"board of 10,000 tasks took {elapsed:.3f}s"
    seen = {c.id for c in view.columns[0].cards}
    page = board.column("ready", Filters(project="big"), cursor=ready["next_cursor"])
    assert len(page.cards) == 50 and not seen & {c.id for c in page.cards}
    started = time.perf_counter()
    filtered = board.view(Filters(project="big", kind="k3", query="task"))
    assert filtered.columns[0].count == len([i for i in range(10_000) if i % 7 == 3])
    assert time.perf_counter() - started < 2.0


def test_charts_count_throughput_failures_latency_and_rebuild_depth(store: Store, clock: Clock) -> None:
    queue = TaskQueue(store, clock=clock)
    start = clock.now
    a = queue.create({"title": "a"})
    b = queue.create({"title": "b", "max_attempts": 1})
    clock.advance(130)  # next 2-minute bucket
    queue.claim("w", lease_seconds=600)
    clock.advance(10)
    queue.complete(a.id, "w")
    queue.claim("w", lease_seconds=600)
    queue.fail(b.id, "w", "broken", retryable=False)
    clock.advance(60)
    charts = Board(queue).charts(minutes=60)
    assert sum(charts.throughput) == 1
    assert charts.failure_rate[-1] == 0.5 or [r for r in charts.failure_rate if r is not None] == [0.5]
    latencies = [v for v in charts.claim_latency if v is not None]
    assert latencies == [pytest.approx(135, abs=1)]  # median of 130 s (a) and 140 s (b)
    assert charts.depth["completed"][-1] == 1 and charts.depth["failed"][-1] == 1
    # before the tasks existed the queue was empty; between creation and claim both were ready
    assert charts.depth["ready"][0] == 0
    index = int((start + 60 - (clock.now - 3600)) // 120)
    assert charts.depth["ready"][index] == 2
    assert charts_from_events([], {}, clock.now, 60).throughput == [0] * 30


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])  # its SQL is new: both engines
def test_charts_say_how_far_back_they_count_when_the_history_is_longer_than_they_read(
    store: Store, clock: Clock
) -> None:
    """Charts read the store's newest events only: older buckets must say "not counted" (null),
    not show an empty queue, even when another project made the newer events."""
    queue = TaskQueue(store, clock=clock)
    for i in range(3):
        task = queue.create({"project": "a", "title": f"a{i}"})
        queue.claim("w", project="a")
        queue.complete(task.id, "w")
    full = Board(queue).charts("a", minutes=60, max_events=20)
    assert full.counted_since is None and sum(t or 0 for t in full.throughput) == 3
    clock.advance(20 * 60)  # later, another project makes more events than the charts read
    busy = queue.create_many([{"project": "b", "title": f"b{i}"} for i in range(25)])
    assert len(busy) == 25
    clock.advance(60)
    charts = Board(queue).charts("a", minutes=60, max_events=20)
    assert charts.counted_since is not None
    counted = parse_time(charts.counted_since)
    assert clock.now - 60 - 1 <= counted <= clock.now - 60 + 1
    ends = [parse_time(end) for end in charts.buckets]
    for i, end in enumerate(ends):
        whole = end - 120 >= counted  # 2-minute buckets
        assert (charts.throughput[i] is not None) == whole, i
        assert (charts.depth["completed"][i] is not None) == (end >= counted), i
    assert charts.depth["completed"][-1] == 3  # today's counts are always right
    assert charts_from_events([], {}, clock.now, 60, counted_since=clock.now - 130).throughput[-1] == 0


def test_board_actions_refuse_what_the_queue_refuses(queue: TaskQueue) -> None:
    board = Board(queue)
    task = queue.create({"title": "t"})
    with pytest.raises(InvalidTransition):
        board.release(task.id, "op")
    assert Workflows(queue).list().workflows == []


def test_the_page_scripts_name_the_same_columns_labels_statuses_and_priorities_as_the_model() -> None:
    """board.js and app.js carry the model's columns and priorities as constants (no build step to
    generate them): this keeps them from drifting apart."""
    from mcp_taskqueue.board import COLUMNS, STATUS_COLUMN
    from mcp_taskqueue.models import Priority
    from mcp_taskqueue.server.board_routes import web_file

    def constant(script: str, name: str) -> Any:
        found = re.search(rf"const {name} = (\[.*?\]|\{{.*?\}});", script)
        assert found, f"{name} is gone"
        return json.loads(re.sub(r"(\w+):", r'"\1":', found.group(1)))

    board_js, app_js = web_file("board.js").decode(), web_file("app.js").decode()
    labels = {key: label for key, _, label in COLUMNS}
    assert constant(board_js, "COLUMNS") == [key for key, _, _ in COLUMNS]
    assert constant(board_js, "LABELS") == labels == constant(app_js, "LABELS")
    assert constant(board_js, "STATUS_COLUMN") == STATUS_COLUMN
    assert constant(board_js, "PRIORITIES") == [p.value for p in Priority]

"""The board on a server with tokens: scopes for views and actions, project-limited tokens that see
only their projects (lists, boards, search, tasks, workflows, charts and the live feed), and the
board under `serve --transport sse` alone."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest

from mcp_taskqueue.board import Board
from mcp_taskqueue.client import TaskQueueClient
from mcp_taskqueue.errors import Forbidden
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Store
from mcp_taskqueue.workflows import Workflows
from tests.board_data import populate
from tests.servers import http_server, http_server_process
from tests.service_servers import cli, make_token, serve


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def read_feed(base: str, headers: dict[str, str], found: list[dict[str, Any]], stop: threading.Event) -> None:
    """Collect `/board/events` events (sent with `headers`) until told to stop."""
    try:
        with httpx.stream("GET", base + "/board/events", headers=headers, timeout=httpx.Timeout(5, read=30)) as r:
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    found.append({"event": event, "data": json.loads(line[6:])})
                if stop.is_set():
                    return
    except httpx.HTTPError:
        return


def wait_for(found: list[dict[str, Any]], test: Any, seconds: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in found:
            if test(item):
                return item
        time.sleep(0.02)
    raise AssertionError(f"no such event within {seconds}s: {found}")


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, TaskQueue, dict[str, Any]]:
    db = tmp_path / "board.db"
    queue = TaskQueue(Store(db))
    return db, queue, populate(queue)


def test_views_need_read_actions_need_their_scope_and_the_actor_is_the_token(
    demo: tuple[Path, TaskQueue, dict[str, Any]],
) -> None:
    db, queue, ids = demo
    reader = make_token(db, "reader", "read")
    writer = make_token(db, "writer", "read,write")
    worker = make_token(db, "worker", "claim")
    failed = ids["Migrate the old database"]
    with serve(db) as server, httpx.Client(base_url=server.base, timeout=30) as http:
        # the page itself is public (it holds no data); every data route wants a token
        assert http.get("/").status_code == 200
        for path in ("/board/api/me", "/board/api/projects", "/board/api/board?project=demo", "/board/events"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["error"] == "unauthorized" and "token" in refused.json()["message"]
        assert http.get("/board/api/me", headers=bearer("tq_not-a-token")).status_code == 401
        assert http.get("/board/api/me", headers=bearer(worker)).status_code == 403  # no read scope
        me = http.get("/board/api/me", headers=bearer(reader)).json()
        assert me == {"name": "reader", "scopes": ["read"], "projects": None, "signed_in": True}
        assert http.get("/board/api/board?project=demo", headers=bearer(reader)).status_code == 200
        # a read-only token sees everything and changes nothing, with a message that says why
        for action, body in (("retry", {}), ("note", {"text": "hi"}), ("priority", {"priority": "low"})):
            no = http.post(f"/board/api/tasks/{failed}/{action}", json=body, headers=bearer(reader))
            assert no.status_code == 403, action
            assert no.json()["error"] == "forbidden" and "'write'" in no.json()["message"]
            assert "reader" in no.json()["message"]
        assert queue.get(failed).status.value == "failed" and queue.get(failed).priority.value == "critical"
        # write acts, as itself; release takes a worker's lease and needs admin
        done = http.post(f"/board/api/tasks/{failed}/retry", json={}, headers=bearer(writer))
        assert done.status_code == 200 and done.json()["status"] == "ready"
        assert queue.history(failed).events[-1].actor == "writer"
        running = ids["Refactor the parser"]
        no = http.post(f"/board/api/tasks/{running}/release", json={}, headers=bearer(writer))
        assert no.status_code == 403 and "'admin'" in no.json()["message"]
        assert queue.get(running).status.value == "running"
        # the live feed with a token: hello, then changes
        found: list[dict[str, Any]] = []
        stop = threading.Event()
        feed = threading.Thread(target=read_feed, args=(server.base, bearer(reader), found, stop), daemon=True)
        feed.start()
        wait_for(found, lambda e: e["event"] == "hello")
        made = queue.create({"project": "ops", "title": "seen by the reader"})
        wait_for(found, lambda e: made.id in e["data"].get("tasks", []))
        # revoked (by another process): the open feed ends within about a second, and stays shut
        assert cli(db, "token", "revoke", "reader").returncode == 0
        feed.join(timeout=10)
        assert not feed.is_alive(), "the feed outlived its token"
        assert http.get("/board/events", headers=bearer(reader)).status_code == 401
        stop.set()
    assert reader not in server.log.read_text() and writer not in server.log.read_text()


def test_a_project_limited_token_sees_and_touches_only_its_projects(
    demo: tuple[Path, TaskQueue, dict[str, Any]],
) -> None:
    db, queue, ids = demo
    ops_task = queue.create({"project": "ops", "title": "Rotate the zebra certificates", "kind": "chore"})
    ops_flow = Workflows(queue).create(
        {"name": "Ops flow", "project": "ops", "tasks": [{"ref": "a", "title": "Step a"}]}
    )
    opsie = make_token(db, "opsie", "read,write", "ops")
    two = make_token(db, "two", "read", "ops", "web")
    demo_task, demo_flow = ids["Migrate the old database"], ids["workflow"]
    with serve(db) as server, httpx.Client(base_url=server.base, timeout=30, headers=bearer(opsie)) as http:
        assert http.get("/board/api/me").json()["projects"] == ["ops"]
        assert [p["name"] for p in http.get("/board/api/projects").json()["projects"]] == ["ops"]
        # its project: board, search, task, workflow, charts; with no project named, its only one
        board = http.get("/board/api/board", params={"project": "ops", "q": "zebra"}).json()
        assert [c["id"] for col in board["columns"] for c in col["cards"]] == [ops_task.id]
        assert http.get("/board/api/board").json()["project"] == "ops"
        assert http.get(f"/board/api/tasks/{ops_task.id}").status_code == 200
        assert http.get(f"/board/api/tasks/{ops_task.id}/history").json()["events"][0]["action"] == "created"
        assert http.get(f"/board/api/workflows/{ops_flow.id}").status_code == 200
        assert [w["id"] for w in http.get("/board/api/workflows").json()["workflows"]] == [ops_flow.id]
        assert http.get("/board/api/charts").json()["project"] == "ops"
        assert http.post(f"/board/api/tasks/{ops_task.id}/note", json={"text": "ok"}).status_code == 200
        # anything of another project is refused, and nothing changes
        for path in (
            "/board/api/board?project=demo",
            "/board/api/column/ready?project=demo",
            "/board/api/board?project=demo&q=database",
            f"/board/api/tasks/{demo_task}",
            f"/board/api/tasks/{demo_task}/history",
            "/board/api/tasks/no-such-task",  # unknown ids are refused alike: nothing to probe
            "/board/api/tasks/no-such-task/history",
            f"/board/api/workflows/{demo_flow}",
            "/board/api/workflows/no-such-workflow",
            "/board/api/workflows?project=demo",
            "/board/api/charts?project=demo",
        ):
            refused = http.get(path)
            assert refused.status_code == 403, path
            assert "ops" in refused.json()["message"], path
        no = http.post(f"/board/api/tasks/{demo_task}/retry", json={})
        assert no.status_code == 403 and queue.get(demo_task).status.value == "failed"
        assert http.post("/board/api/tasks/no-such-task/retry", json={}).status_code == 403
        # limited to two projects: name one
        both = http.get("/board/api/board", headers=bearer(two))
        assert both.status_code == 403 and "give one" in both.json()["message"]
        assert http.get("/board/api/board?project=ops", headers=bearer(two)).status_code == 200
        # the live feed carries only its projects' changes
        found: list[dict[str, Any]] = []
        stop = threading.Event()
        threading.Thread(target=read_feed, args=(server.base, bearer(opsie), found, stop), daemon=True).start()
        wait_for(found, lambda e: e["event"] == "hello")
        hidden = queue.create({"project": "demo", "title": "not for ops"})
        queue.add_note(demo_flow_task(queue, demo_flow), "demo workflow moves", actor="agent")
        shown = queue.create({"project": "ops", "title": "for ops"})
        wait_for(found, lambda e: shown.id in e["data"].get("tasks", []))
        stop.set()
        changes = [e["data"] for e in found if e["event"] == "change"]
        assert all(hidden.id not in c["tasks"] and "demo" not in c["projects"] for c in changes), changes
        assert all(demo_flow not in c["workflows"] for c in changes), changes


def demo_flow_task(queue: TaskQueue, workflow_id: str) -> str:
    return Workflows(queue).get(workflow_id).tasks[0].id


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_visible_changes_keep_only_the_allowed_projects(queue: TaskQueue) -> None:
    a = queue.create({"project": "a", "title": "in a"})
    b = queue.create({"project": "b", "title": "in b"})
    flow = Workflows(queue).create({"name": "f", "project": "b", "tasks": [{"ref": "x", "title": "x"}]})
    change = {"tasks": [a.id, b.id, "gone"], "projects": ["*", "a", "b"], "workflows": [flow.id]}
    board = Board(queue)
    assert board.visible_changes(change, {"a"}) == {"tasks": [a.id], "projects": ["*", "a"], "workflows": []}
    assert board.visible_changes(change, {"b"}) == {"tasks": [b.id], "projects": ["*", "b"], "workflows": [flow.id]}
    many = [queue.create({"project": "a", "title": f"t{i}"}).id for i in range(0, 1200, 200)]
    assert board.visible_changes({"tasks": many * 200}, {"a"})["tasks"] == many * 200  # > 500 ids: chunked


def test_the_board_is_served_and_live_under_transport_sse_alone(
    demo: tuple[Path, TaskQueue, dict[str, Any]],
) -> None:
    db, queue, _ = demo
    with http_server(db, transport="sse") as base:
        page = httpx.get(base + "/")
        assert page.status_code == 200 and "/board/static/board.js" in page.text
        assert httpx.get(base + "/board/static/board.js").status_code == 200
        assert httpx.get(base + "/board/api/board?project=demo").json()["total"] == 16
        assert httpx.get(base + "/mcp").status_code == 404  # streamable HTTP is not served: SSE alone
        found: list[dict[str, Any]] = []
        stop = threading.Event()
        threading.Thread(target=read_feed, args=(base, {}, found, stop), daemon=True).start()
        wait_for(found, lambda e: e["event"] == "hello")
        started = time.monotonic()
        made = queue.create({"project": "demo", "title": "pushed under sse"})
        wait_for(found, lambda e: made.id in e["data"].get("tasks", []))
        stop.set()
        assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_open_board_feeds_do_not_hold_the_server_up_at_shutdown(tmp_path: Path, transport: str) -> None:
    """SIGTERM with a board page open: the feed ends and the server exits (it used to wait for the page)."""
    with http_server_process(tmp_path / "board.db", transport) as (base, proc):
        found: list[dict[str, Any]] = []
        stop = threading.Event()
        reader = threading.Thread(target=read_feed, args=(base, {}, found, stop), daemon=True)
        reader.start()
        wait_for(found, lambda e: e["event"] == "hello")
        started = time.monotonic()
        proc.terminate()
        proc.wait(timeout=8)  # stop() would SIGKILL after 10 s
        reader.join(timeout=5)
        assert not reader.is_alive(), "the feed did not end"
        assert proc.returncode in (0, -15) and time.monotonic() - started < 8  # uvicorn re-raises SIGTERM


@pytest.mark.anyio
async def test_top_over_url_sends_the_token_from_the_environment(
    demo: tuple[Path, TaskQueue, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import click

    from mcp_taskqueue.board import Filters
    from mcp_taskqueue.top import RemoteSource

    db, _, ids = demo
    reader = make_token(db, "reader", "read")
    with serve(db) as server:
        monkeypatch.delenv("TASKQUEUE_TOKEN", raising=False)
        anonymous = RemoteSource(server.base + "/mcp")
        with pytest.raises(click.ClickException, match="token"):
            await anonymous.view(Filters(project="demo"))
        await anonymous.close()
        monkeypatch.setenv("TASKQUEUE_TOKEN", reader)
        signed = RemoteSource(server.base + "/mcp")
        view = await signed.view(Filters(project="demo"))
        assert view.total == 16
        with pytest.raises(click.ClickException, match="'write'"):  # read-only: told why
            await signed.act("retry", ids["Migrate the old database"])
        await signed.close()


def test_show_board_for_a_project_limited_token_shows_its_project_and_no_other(
    demo: tuple[Path, TaskQueue, dict[str, Any]],
) -> None:
    """The MCP App's tool answers a project-limited token as the browser board does."""
    db, _, _ = demo
    opsie = make_token(db, "opsie", "read", "ops")

    async def ask() -> list[Any]:
        async with TaskQueueClient(server.base + "/mcp", token=opsie) as client:
            answers: list[Any] = [
                await client.call("show_board", {}),
                await client.call("show_board", {"project": "ops"}),
            ]
            with pytest.raises(Forbidden, match="ops"):
                await client.call("show_board", {"project": "demo"})
            return answers

    with serve(db) as server:
        implicit, named = anyio.run(ask)
    for board in (implicit, named):
        assert board["project"] == "ops" and sum(board["counts"].values()) == 1
        assert [c["title"] for c in board["cards"]] == ["Rotate the keys"]

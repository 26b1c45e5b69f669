"""A project-limited token cannot reach another project through any door: every tool, every resource
(template or fixed), both subscription mechanisms, prompts, completions, over streamable HTTP, SSE and
the CLI's --url, against a real `serve` process. Nothing it tries changes anything.

The tables below must name every tool and every resource template the server lists, so a new tool
or template cannot be added without saying how a limited token is kept out of other projects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp_types import PromptReference, ResourceTemplateReference

from tests.mcp_calls import call
from tests.service_servers import Running, cli, make_token, mcp_client, serve

pytestmark = pytest.mark.anyio

# The limited token holds every scope, admin included: only its project limit stands in the way.
ALL_SCOPES = "read,write,claim,review,admin"


def tool_attempts(ids: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(tool, arguments) aimed at project `payroll`, by a token limited to `web`."""
    other, blocked, mine, workflow = ids["other"], ids["blocked"], ids["mine"], ids["workflow"]
    lease = {"worker": "w", "lease_id": "l-1"}
    return [
        ("show_board", {"project": "payroll"}),
        ("show_board", {}),
        ("board_read", {"path": f"/board/api/tasks/{other}"}),
        ("board_read", {"path": "/board/api/board?project=payroll"}),
        ("board_act", {"path": f"/board/api/tasks/{other}/cancel"}),
        ("create_task", {"title": "x", "project": "payroll"}),
        ("create_task", {"title": "x", "depends_on": [other]}),
        ("create_task", {"title": "x", "parent_id": other}),
        ("create_tasks", {"tasks": [{"title": "x", "project": "payroll"}]}),
        ("create_tasks", {"tasks": [{"title": "x", "depends_on": [other]}]}),
        ("create_tasks", {"tasks": [{"title": "x", "ref": "a"}, {"title": "y", "depends_on": ["a", other]}]}),
        ("create_tasks", {"tasks": [{"title": "x", "parent_id": other}]}),
        ("get_task", {"task_id": other}),
        ("list_tasks", {"project": "payroll"}),
        ("list_tasks", {"workflow_id": workflow}),
        ("update_task", {"task_id": other, "title": "mine now"}),
        ("add_note", {"task_id": other, "text": "hello"}),
        ("add_dependency", {"task_id": mine, "depends_on": other}),
        ("add_dependency", {"task_id": other, "depends_on": mine}),
        ("remove_dependency", {"task_id": blocked, "depends_on": other}),
        ("cancel_task", {"task_id": other}),
        ("retry_task", {"task_id": other}),
        ("claim_task", {"project": "payroll"}),
        ("heartbeat", {"task_id": other, **lease}),
        ("complete_task", {"task_id": other, **lease}),
        ("fail_task", {"task_id": other, "error": "no", **lease}),
        ("release_task", {"task_id": other, **lease}),
        ("queue_stats", {"project": "payroll"}),
        ("create_project", {"name": "payroll"}),
        ("list_projects", {}),
        ("update_project", {"name": "payroll", "description": "taken over"}),
        ("create_workflow", {"spec": {"name": "w", "project": "payroll", "tasks": [{"ref": "a", "title": "a"}]}}),
        ("create_workflow", {"spec": {"name": "w", "tasks": [{"ref": "a", "title": "a", "depends_on": [other]}]}}),
        ("create_workflow", {"template": "bugfix", "parameters": {"bug": "b", "project": "payroll"}}),
        ("get_workflow", {"workflow_id": workflow}),
        ("list_workflows", {"project": "payroll"}),
        ("cancel_workflow", {"workflow_id": workflow}),
        ("advance_phase", {"task_id": other, "to": "planning"}),
        ("add_review", {"task_id": other, "score": 1.0}),
        # notifiers watch every project (their filters are settings, not limits): refused outright
        ("create_notifier", {"name": "spy", "channel": "webhook", "target": "https://example.com/h", "events": ["*"]}),
        ("list_notifiers", {}),
        ("delete_notifier", {"notifier": "n-1"}),
        ("test_notifier", {"notifier": "n-1"}),
    ]


def resource_attempts(ids: dict[str, str]) -> dict[str, list[str]]:
    """Resource template (or fixed URI) -> URIs of project `payroll` (or of every project)."""
    other, workflow = ids["other"], ids["workflow"]
    return {
        "taskqueue://projects/{name}": ["taskqueue://projects/payroll"],
        "taskqueue://tasks/{task_id}": [f"taskqueue://tasks/{other}", f"taskqueue://tasks/{ids['mine']}/../{other}"],
        "taskqueue://tasks/{task_id}/history": [f"taskqueue://tasks/{other}/history"],
        "taskqueue://workflows/{workflow_id}": [f"taskqueue://workflows/{workflow}"],
        "taskqueue://schemas/{name}": ["taskqueue://schemas/payroll:invoice"],
        "taskqueue://notifiers/{notifier_id}": ["taskqueue://notifiers/n-1"],
        "taskqueue://stats": ["taskqueue://stats"],
        "taskqueue://projects": ["taskqueue://projects"],
        "ui://taskqueue/board": ["ui://taskqueue/board"],
    }


async def snapshot(client: Client, ids: dict[str, str]) -> Any:
    """Everything of project payroll an admin can see, to compare before and after."""
    tasks = await call(client, "list_tasks", project="payroll")
    stats = await call(client, "queue_stats", project="payroll")
    histories = []
    for task in tasks["tasks"]:
        read = await client.read_resource(f"taskqueue://tasks/{task['id']}/history")
        histories.append(json.loads(read.contents[0].text))  # type: ignore[union-attr]
    return {
        "tasks": tasks,
        "histories": histories,
        "workflow": await call(client, "get_workflow", workflow_id=ids["workflow"]),
        "projects": await call(client, "list_projects"),
        "stats": {k: v for k, v in stats.items() if k != "oldest_ready_age_seconds"},  # the clock moves
    }


async def setup(server: Running, admin: str, web: str) -> dict[str, str]:
    async with mcp_client(server.base, admin) as client:
        other = await call(client, "create_task", title="payroll run", project="payroll")
        blocked = await call(client, "create_task", title="payslips", project="payroll", depends_on=[other["id"]])
        spec = {"name": "close month", "project": "payroll", "tasks": [{"ref": "a", "title": "close"}]}
        workflow = await call(client, "create_workflow", spec=spec)
    async with mcp_client(server.base, web) as client:
        mine = await call(client, "create_task", title="homepage")
        assert (await call(client, "get_task", task_id=mine["id"]))["project"] == "web"
    return {"other": other["id"], "blocked": blocked["id"], "mine": mine["id"], "workflow": workflow["id"]}


async def refused(action: Any) -> str:
    with pytest.raises(Exception) as caught:
        await action
    return str(caught.value)


def kept_out(text: str) -> bool:
    """Refused (forbidden) or absent (no such resource): either way nothing of the other project."""
    return "forbidden" in text or "Unknown resource" in text


async def test_a_project_limited_token_reaches_no_other_project_through_any_tool_or_resource(
    db_path: Path | str, tmp_path: Path
) -> None:
    admin = make_token(db_path, "boss", "admin")
    web = make_token(db_path, "web-agent", ALL_SCOPES, "web")
    with serve(db_path) as server:
        ids = await setup(server, admin, web)
        async with mcp_client(server.base, admin) as client:
            before = await snapshot(client, ids)
            listed_tools = {t.name for t in (await client.list_tools()).tools}
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            fixed = {r.uri for r in (await client.list_resources()).resources}
        attempts = tool_attempts(ids)
        assert {tool for tool, _ in attempts} == listed_tools, "every tool needs a row in tool_attempts"
        resources = resource_attempts(ids)
        assert set(resources) == templates | fixed, "every resource needs a row in resource_attempts"

        for transport in ("http", "sse"):
            async with mcp_client(server.base, web, transport) as client:
                for tool, args in attempts:
                    result = await client.call_tool(tool, args)
                    text = result.content[0].text  # type: ignore[union-attr]
                    if (tool, args) == ("show_board", {}):  # no project: the token's own board, nothing else
                        assert not result.is_error and text.startswith("web:"), (transport, text)
                        assert "payroll" not in json.dumps(result.structured_content) + text
                        continue
                    assert result.is_error and "forbidden" in text, (transport, tool, args, text)
                for uris in resources.values():
                    for uri in uris:
                        assert kept_out(await refused(client.read_resource(uri))), uri
                # prompts name tasks and projects too
                assert "forbidden" in await refused(client.get_prompt("review_task", {"task_id": ids["other"]}))
                assert "forbidden" in await refused(client.get_prompt("triage_queue", {"project": "payroll"}))
                # completions offer only its own project's names
                tasks = await client.complete(ResourceTemplateReference(uri="taskqueue://tasks/{task_id}"),
                                              {"name": "task_id", "value": ""})  # fmt: skip
                assert tasks.completion.values == [ids["mine"]]
                projects = await client.complete(PromptReference(name="triage_queue"), {"name": "project", "value": ""})
                assert projects.completion.values == ["web"]
                workflows = await client.complete(
                    PromptReference(name="triage_queue"), {"name": "workflow_id", "value": ""}
                )
                assert workflows.completion.values == []
                # its own project stays open on this transport
                assert (await call(client, "get_task", task_id=ids["mine"]))["project"] == "web"
                assert [t["id"] for t in (await call(client, "list_tasks"))["tasks"]] == [ids["mine"]]
                # without a project filter, listings, search and stats mean its one project
                assert (await call(client, "list_tasks", query="payroll"))["tasks"] == []
                stats = await call(client, "queue_stats")
                assert stats["project"] == "web" and stats["total"] == 1
                assert (await call(client, "list_workflows"))["workflows"] == []

        # plain HTTP routes that span every project: /metrics counts every project's tasks
        async with httpx2.AsyncClient(base_url=server.base) as http:
            metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {web}"})
            assert metrics.status_code == 403 and "payroll" not in metrics.text
            assert (await http.get("/metrics", headers={"Authorization": f"Bearer {admin}"})).status_code == 200

        # subscriptions: both mechanisms refuse another project's URIs
        async with mcp_client(server.base, web) as client:
            for uris in resources.values():
                for uri in uris:
                    assert kept_out(await refused(_listen(client, [uri]))), uri
            assert "forbidden" in await refused(
                _listen(client, [f"taskqueue://tasks/{ids['mine']}", "taskqueue://stats"])
            )
        for transport in ("http", "sse"):
            async with mcp_client(server.base, web, transport, mode="legacy") as client:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for uris in resources.values():
                        for uri in uris:
                            assert kept_out(await refused(client.subscribe_resource(uri))), (transport, uri)
                    await client.subscribe_resource(f"taskqueue://tasks/{ids['mine']}")  # its own: fine

        async with mcp_client(server.base, admin) as client:
            assert await snapshot(client, ids) == before


async def _listen(client: Client, uris: list[str]) -> None:
    async with client.listen(resource_subscriptions=uris):
        pass


async def test_a_limited_listener_hears_its_own_tasks_and_nothing_of_others(db_path: Path | str) -> None:
    admin = make_token(db_path, "boss", "admin")
    web = make_token(db_path, "web-agent", "read,write", "web")
    with serve(db_path) as server:
        ids = await setup(server, admin, web)
        mine = f"taskqueue://tasks/{ids['mine']}"
        async with (
            mcp_client(server.base, web) as listener,
            mcp_client(server.base, admin) as writer,
            listener.listen(resource_subscriptions=[mine, "taskqueue://projects/web"]) as sub,
        ):
            await call(writer, "add_note", task_id=ids["other"], text="payroll news")
            await call(writer, "create_task", title="more payroll", project="payroll")
            await call(writer, "add_note", task_id=ids["mine"], text="web news")
            seen: set[str] = set()
            with anyio.fail_after(10):
                while mine not in seen:
                    seen.add((await sub.__anext__()).uri)  # type: ignore[union-attr]
            assert seen <= {mine, "taskqueue://projects/web"}


def test_the_cli_url_with_a_limited_token_reaches_no_other_project(db_path: Path | str, tmp_path: Path) -> None:
    admin = make_token(db_path, "boss", "admin")
    web = make_token(db_path, "web-agent", ALL_SCOPES, "web")
    with serve(db_path) as server:
        ids = anyio.run(setup, server, admin, web)
        url = server.base + "/mcp"

        def run(token: str, *args: str) -> Any:
            return cli(tmp_path / "unused.db", "--url", url, "--format", "json", *args, env={"TASKQUEUE_TOKEN": token})

        before = run(admin, "task", "list", "--project", "payroll").stdout
        attempts = [
            ("task", "show", ids["other"]),
            ("task", "list", "--project", "payroll"),
            ("task", "add", "x", "--project", "payroll"),
            ("task", "add", "x", "--project", "web", "--depends-on", ids["other"]),
            ("task", "note", ids["other"], "hello"),
            ("task", "cancel", ids["other"]),
            ("task", "retry", ids["other"]),
            ("task", "claim", "--worker", "w", "--project", "payroll"),
            ("stats", "--project", "payroll"),
            ("project", "list"),
            ("project", "show", "payroll"),
            ("workflow", "show", ids["workflow"]),
            ("workflow", "list", "--project", "payroll"),
            ("workflow", "cancel", ids["workflow"]),
        ]
        for args in attempts:
            done = run(web, *args)
            assert done.returncode != 0 and "forbidden" in done.stderr, (args, done.stdout, done.stderr)
        assert run(admin, "task", "list", "--project", "payroll").stdout == before
        mine = run(web, "task", "show", ids["mine"])
        assert mine.returncode == 0 and json.loads(mine.stdout)["project"] == "web"
        added = run(web, "task", "add", "from the command line")  # no --project: the token's one project
        assert added.returncode == 0, added.stderr
        assert json.loads(run(web, "task", "show", json.loads(added.stdout)["id"]).stdout)["project"] == "web"

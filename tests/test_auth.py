"""Identity and scopes over real HTTP servers: tokens from the CLI, scopes on /mcp, SSE and the CLI's
--url, the token's name as the actor, project limits, revocation, and start-up refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mcp_taskqueue.identity import Tokens
from mcp_taskqueue.server.auth import StoreTokenVerifier
from mcp_taskqueue.store import open_store
from tests.mcp_calls import call, call_error
from tests.servers import free_port, server_env
from tests.service_servers import cli, make_token, mcp_client, serve


def test_token_create_prints_once_and_stores_only_a_hash(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    done = cli(db, "token", "create", "--name", "build-agent", "--scopes", "read,write,claim", "--project", "web")
    assert done.returncode == 0, done.stderr
    token = max((w for w in done.stdout.split() if w.startswith("tq_")), key=len)
    assert len(token) >= 40  # 256 random bits, URL-safe
    assert "not shown again" in done.stderr
    if isinstance(db, Path):  # the secret is nowhere in the SQLite file
        raw = db.read_bytes() + (db.with_suffix(".db-wal").read_bytes() if db.with_suffix(".db-wal").exists() else b"")
        assert token.encode() not in raw
    store = open_store(db)
    try:
        rows = store.read(
            lambda tx: tx.conn.execute("SELECT name, scopes, projects, token_hash FROM tokens").fetchall()
        )
        assert token not in json.dumps(
            store.read(lambda tx: [list(r) for r in tx.conn.execute("SELECT * FROM tokens")])
        )
    finally:
        store.close()
    [(name, scopes, projects, stored)] = [tuple(r) for r in rows]
    assert (name, json.loads(scopes), json.loads(projects)) == ("build-agent", ["read", "write", "claim"], ["web"])
    assert stored != token and len(stored) == 64

    listed = cli(db, "--format", "json", "token", "list")
    assert listed.returncode == 0
    [row] = json.loads(listed.stdout)
    assert row["name"] == "build-agent" and row["projects"] == "web" and token not in listed.stdout

    again = cli(db, "token", "create", "--name", "build-agent", "--scopes", "read")
    assert again.returncode == 4 and "exists" in again.stderr
    bad = cli(db, "token", "create", "--name", "x", "--scopes", "read,fly")
    assert bad.returncode == 2 and "fly" in bad.stderr

    revoked = cli(db, "--format", "json", "token", "revoke", "build-agent")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"]
    assert json.loads(cli(db, "--format", "json", "token", "list").stdout) == []
    assert cli(db, "token", "revoke", "build-agent").returncode == 3


@pytest.mark.anyio
async def test_scopes_hold_on_streamable_http_and_sse_and_change_nothing(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    reader = make_token(db, "reader", "read")
    writer = make_token(db, "writer", "read,write")
    admin = make_token(db, "boss", "admin")
    with serve(db) as server:
        # no token: 401 with the SDK's WWW-Authenticate, on both transports
        async with httpx2.AsyncClient() as http:
            response = await http.post(server.base + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert (await http.get(server.base + "/sse", timeout=5)).status_code == 401
            bad = await http.post(
                server.base + "/mcp", json={}, headers={"Authorization": "Bearer tq_not-a-real-token"}
            )
            assert bad.status_code == 401

        for transport in ("http", "sse"):
            async with mcp_client(server.base, reader, transport) as client:
                assert (await call(client, "list_tasks"))["tasks"] == []
                text = await call_error(client, "create_task", title="sneaky")
                assert "forbidden" in text and "'write'" in text and "reader" in text
                assert "forbidden" in await call_error(client, "claim_task", worker="reader")
                assert "forbidden" in await call_error(client, "create_project", name="p")
            async with mcp_client(server.base, writer, transport) as client:
                assert "forbidden" in await call_error(client, "update_project", name="default")
                assert "forbidden" in await call_error(client, "claim_task", worker="w")
        async with mcp_client(server.base, admin) as client:
            # nothing above changed anything
            assert (await call(client, "list_tasks"))["tasks"] == []
            assert (await call(client, "list_projects"))["projects"] == []


@pytest.mark.anyio
async def test_the_token_name_is_the_actor_worker_and_reviewer(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    agent = make_token(db, "build-agent", "read,write,claim")
    thief = make_token(db, "thief", "read,write,claim,review")
    with serve(db) as server:
        async with mcp_client(server.base, agent) as client:
            created = await call(client, "create_task", title="build it")
            claimed = await call(client, "claim_task", worker="anything-i-like")
            task = claimed["task"]
            assert task["id"] == created["id"]
            assert task["worker"] == "build-agent/anything-i-like"
        async with mcp_client(server.base, thief) as client:
            # typing the holder's name does not make you the holder
            for name in ("build-agent/anything-i-like", "build-agent"):
                # even with the stolen lease_id
                text = await call_error(
                    client, "complete_task", task_id=task["id"], worker=name, lease_id=task["lease_id"]
                )
                assert "lease_lost" in text or "not leased to you" in text
            history = await client.read_resource(f"taskqueue://tasks/{task['id']}/history")
        events = json.loads(history.contents[0].text)["events"]  # type: ignore[union-attr]
        actors = {e["action"]: e.get("actor") for e in events}
        assert actors["created"] == "build-agent"
        assert actors["claimed"] == "build-agent/anything-i-like"
        async with mcp_client(server.base, agent) as client:
            done = await call(
                client, "complete_task", task_id=task["id"], worker="anything-i-like", lease_id=task["lease_id"]
            )
            assert done["status"] == "completed"


@pytest.mark.anyio
async def test_project_limited_token_stays_in_its_project(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    web = make_token(db, "web-agent", "read,write,claim", "web")
    admin = make_token(db, "boss", "admin")
    with serve(db) as server:
        async with mcp_client(server.base, admin) as client:
            other = await call(client, "create_task", title="secret", project="payroll")
        async with mcp_client(server.base, web) as client:
            mine = await call(client, "create_task", title="homepage")  # no project: its only project
            assert (await call(client, "get_task", task_id=mine["id"]))["project"] == "web"
            assert "forbidden" in await call_error(client, "create_task", title="x", project="payroll")
            assert "forbidden" in await call_error(client, "get_task", task_id=other["id"])
            assert "forbidden" in await call_error(client, "cancel_task", task_id=other["id"])
            assert "forbidden" in await call_error(client, "list_tasks", project="payroll")
            assert "forbidden" in await call_error(client, "list_projects")
            listed = await call(client, "list_tasks")  # no project: its own
            assert [t["id"] for t in listed["tasks"]] == [mine["id"]]
            claimed = await call(client, "claim_task", worker="w")
            assert claimed["task"]["id"] == mine["id"]
            with pytest.raises(Exception, match="forbidden"):
                await client.read_resource(f"taskqueue://tasks/{other['id']}")
            with pytest.raises(Exception, match="forbidden"):
                await client.read_resource("taskqueue://stats")
        async with mcp_client(server.base, admin) as client:
            still = await call(client, "get_task", task_id=other["id"])
            assert still["status"] == "ready" and still["version"] == 1


@pytest.mark.anyio
async def test_cli_url_carries_the_token_and_its_scopes(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    reader = make_token(db, "reader", "read")
    writer = make_token(db, "writer", "read,write")
    with serve(db) as server:
        url = server.base + "/mcp"
        refused = cli(tmp_path / "other.db", "--url", url, "task", "add", "x", env={"TASKQUEUE_TOKEN": reader})
        assert refused.returncode == 8 and "forbidden" in refused.stderr
        anonymous = cli(tmp_path / "other.db", "--url", url, "task", "list", env={"TASKQUEUE_TOKEN": ""})
        assert anonymous.returncode != 0
        made = cli(
            tmp_path / "other.db", "--url", url, "--format", "json", "task", "add", "ok",
            env={"TASKQUEUE_TOKEN": writer},
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        listed = cli(
            tmp_path / "other.db", "--url", url, "--format", "json", "task", "list", env={"TASKQUEUE_TOKEN": reader}
        )
        assert [t["title"] for t in json.loads(listed.stdout)["tasks"]] == ["ok"]


@pytest.mark.anyio
async def test_cli_url_with_a_refused_token_says_why_in_one_line(db_path: Path | str, tmp_path: Path) -> None:
    """A revoked, unknown or missing token gets a one-line `forbidden` naming the 401 and the cause
    (not a traceback), and the token itself is not echoed."""
    revoked = make_token(db_path, "gone", "read")
    make_token(db_path, "kept", "read")  # an active token: the server requires auth
    assert cli(db_path, "token", "revoke", "gone").returncode == 0
    with serve(db_path) as server:
        url = server.base + "/mcp"
        for token, cause in (
            (revoked, "revoked"),
            ("tq_" + "x" * 40, "revoked"),
            ("", "TASKQUEUE_TOKEN"),
        ):
            done = cli(tmp_path / "other.db", "--url", url, "task", "list", env={"TASKQUEUE_TOKEN": token})
            assert done.returncode == 8, done.stderr
            assert "Traceback" not in done.stderr, done.stderr[-500:]
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "forbidden" in lines[0] and "401" in lines[0] and cause in lines[0], lines
            assert not token or token[3:] not in done.stderr


@pytest.mark.anyio
async def test_a_refused_call_is_logged_with_who_was_refused(db_path: Path | str, tmp_path: Path) -> None:
    """Scope, project and rate-limit refusals carry the caller's identity in the log (not only successes)."""
    config = tmp_path / "limits.toml"
    config.write_text("[rate_limits]\nwrite = { rate = 0.001, burst = 1 }\n", encoding="utf-8")
    reader = make_token(db_path, "reader", "read")
    limited = make_token(db_path, "web-agent", "read,write", "web")
    with serve(db_path, "--config", str(config), "--log-format", "json") as server:
        async with mcp_client(server.base, reader) as client:
            assert "forbidden" in await call_error(client, "create_task", title="x")
        async with mcp_client(server.base, limited) as client:
            assert "forbidden" in await call_error(client, "list_tasks", project="payroll")
            await call(client, "create_task", title="one", project="web")
            assert "rate_limited" in await call_error(client, "create_task", title="two", project="web")
        await anyio.sleep(0.5)  # the log lines are written after the replies
        outcomes = {
            (r.get("tool"), r.get("outcome"), r.get("identity"))
            for r in server.log_records()
            if r.get("event") == "tool_call"
        }
    assert ("create_task", "forbidden", "reader") in outcomes, outcomes
    assert ("list_tasks", "forbidden", "web-agent") in outcomes, outcomes
    assert ("create_task", "rate_limited", "web-agent") in outcomes, outcomes


@pytest.mark.anyio
async def test_revoked_token_is_refused_at_once_and_metrics_need_read(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    worker = make_token(db, "worker", "claim")
    reader = make_token(db, "reader", "read")
    web_reader = make_token(db, "web-reader", "read", "web")
    with serve(db) as server:
        async with httpx2.AsyncClient(base_url=server.base) as http:
            assert (await http.get("/metrics")).status_code == 401
            forbidden = await http.get("/metrics", headers={"Authorization": f"Bearer {worker}"})
            assert forbidden.status_code == 403 and "read" in forbidden.json()["error_description"]
            ok = await http.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
            assert ok.status_code == 200 and "taskqueue_tasks" in ok.text
            assert (await http.get("/healthz")).status_code == 200  # probes never need a token
            # the board's JSON routes ask the same identity: 401 without a token, 403 without the scope
            assert (await http.get("/board/api/board")).status_code == 401
            as_reader = {"Authorization": f"Bearer {reader}"}
            assert (await http.get("/board/api/board", headers=as_reader)).status_code == 200
            assert (
                await http.get("/board/api/board", headers={"Authorization": f"Bearer {worker}"})
            ).status_code == 403
            # a project-limited token sees its project's board only (tests/test_board_auth.py has the rest)
            limited = await http.get("/board/api/board?project=ops", headers={"Authorization": f"Bearer {web_reader}"})
            assert limited.status_code == 403 and "web" in limited.json()["message"]
        async with mcp_client(server.base, reader) as client:
            await call(client, "list_tasks")
        assert cli(db, "token", "revoke", "reader").returncode == 0
        revoked_at = time.monotonic()
        async with httpx2.AsyncClient(base_url=server.base) as http:
            while (await http.get("/metrics", headers={"Authorization": f"Bearer {reader}"})).status_code != 401:
                # another process revoked it: refused within the verifier's cache time (docs/deployment.md)
                assert time.monotonic() - revoked_at < StoreTokenVerifier.CACHE_SECONDS + 2, "revoked token still works"
                await anyio.sleep(0.1)
    # nothing secret in the server's log
    assert reader not in server.log.read_text() and worker not in server.log.read_text()


def test_public_address_without_auth_refuses_to_start_unless_no_auth(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    port = free_port()
    base = [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db), "serve", "--transport", "http"]
    refused = subprocess.run(
        [*base, "--host", "0.0.0.0", "--port", str(port), "--auth", "none"],
        capture_output=True, text=True, env=server_env(), timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "--no-auth" in refused.stderr
    no_tokens = subprocess.run(
        [*base, "--host", "0.0.0.0", "--port", str(port)], capture_output=True, text=True, env=server_env(), timeout=60
    )
    assert no_tokens.returncode == 2 and "token create" in no_tokens.stderr
    with serve(db, "--no-auth", "--log-format", "json", host="0.0.0.0") as server:
        records = server.log_records()
        assert any(r["event"] == "auth_disabled" and r["level"] == "WARNING" for r in records)


@pytest.mark.anyio
async def test_stdio_stays_unauthenticated_even_with_tokens(db_path: Path | str) -> None:
    from mcp import Client

    from tests.servers import stdio_params

    make_token(db_path, "someone", "read")
    async with Client(stdio_params(db_path)) as client:  # type: ignore[arg-type]
        created = await call(client, "create_task", title="local work")
        assert created["status"] == "ready"
        assert created["id"] in [t["id"] for t in (await call(client, "list_tasks"))["tasks"]]


@pytest.mark.anyio
async def test_distinct_reviewers_cannot_be_faked_by_typing_names(db_path: Path | str, tmp_path: Path) -> None:
    db = db_path
    author = make_token(db, "author", "read,write,review")
    alice = make_token(db, "alice", "read,review")
    bob = make_token(db, "bob", "read,review")
    report = {"passed": 10, "failed": 0}
    with serve(db) as server:
        async with mcp_client(server.base, author) as client:
            task = await call(client, "create_task", title="feature", project="app")
            steps = [
                {"to": "planning"},
                {"to": "implementation", "design_doc": "docs/design.md"},
                {"to": "test_creation"},
                {"to": "testing", "coverage": 95.0},
                {"to": "review", "test_report": report, "by": "someone-else"},
            ]
            for step in steps:
                await call(client, "advance_phase", task_id=task["id"], **step)
        async with mcp_client(server.base, alice) as client:
            for name in ("alice", "carol", "dave"):  # one token, three typed names: one reviewer
                state = await call(client, "add_review", task_id=task["id"], reviewer=name, score=0.9)
            assert state["approvals"] == 1 and state["approved_by"] == ["alice"]
        async with mcp_client(server.base, author) as client:
            # the author advanced the phases (as "author", whatever `by` said), so cannot review
            text = await call_error(client, "add_review", task_id=task["id"], reviewer="x", score=1.0)
            assert "author" in text, text
        async with mcp_client(server.base, bob) as client:
            state = await call(client, "add_review", task_id=task["id"], reviewer="alice", score=0.95)
            assert state["approvals"] == 2 and sorted(state["approved_by"]) == ["alice", "bob"]


@pytest.mark.anyio
async def test_a_revoke_in_the_serving_process_is_refused_on_the_next_request(db_path: Path | str) -> None:
    """The verifier remembers valid tokens for a second; a revoke made by this process voids that at once."""
    store = open_store(db_path)
    try:
        tokens = Tokens(store)
        secret, _ = tokens.create("agent", "read")
        kept, _ = tokens.create("other-agent", "read")
        verifier = StoreTokenVerifier(tokens)
        assert (await verifier.verify_token(secret)) is not None  # now cached
        assert (await verifier.verify_token(kept)) is not None
        tokens.revoke("agent")
        assert await verifier.verify_token(secret) is None  # no waiting for the cache to expire
        assert (await verifier.verify_token(kept)) is not None
        assert await verifier.verify_token("tq_" + secret[3:][::-1]) is None
    finally:
        store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_legacy_subscriptions_of_a_revoked_token_get_no_more_notifications(
    db_path: Path | str, transport: str
) -> None:
    """`resources/subscribe` made before a revoke (by another process) is not served after it: within
    REVERIFY_SECONDS its connection hears nothing more, while another token's subscription goes on."""
    import warnings

    from mcp_types import ResourceUpdatedNotification

    from mcp_taskqueue.server.auth import REVERIFY_SECONDS

    heard: dict[str, list[str]] = {"agent": [], "other": []}

    def inbox(name: str) -> Any:
        async def handle(message: Any) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                heard[name].append(str(message.params.uri))

        return handle

    async def hears(name: str, uri: str, count: int) -> None:
        with anyio.fail_after(15):
            while heard[name].count(uri) < count:
                await anyio.sleep(0.05)

    agent = make_token(db_path, "agent", "read,write")
    other = make_token(db_path, "other", "read,write")
    with serve(db_path) as server, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        async with (
            mcp_client(server.base, agent, transport, mode="legacy", message_handler=inbox("agent")) as client,
            mcp_client(server.base, other, transport, mode="legacy", message_handler=inbox("other")) as bystander,
        ):
            task = await call(bystander, "create_task", title="watched")
            uri = f"taskqueue://tasks/{task['id']}"
            await client.subscribe_resource(uri)
            await bystander.subscribe_resource(uri)
            await call(bystander, "add_note", task_id=task["id"], text="before")
            await hears("agent", uri, 1)
            await hears("other", uri, 1)
            assert cli(db_path, "token", "revoke", "agent").returncode == 0
            await anyio.sleep(REVERIFY_SECONDS + 0.5)
            heard["agent"].clear()
            heard["other"].clear()
            for n in range(3):
                await call(bystander, "add_note", task_id=task["id"], text=f"after {n}")
                await hears("other", uri, n + 1)
            await anyio.sleep(0.5)
            assert heard["agent"] == []
    assert any("token revoked or expired" in line for line in server.log_lines()), server.log_lines()[-5:]


@pytest.mark.anyio
async def test_an_open_listen_stream_ends_when_its_token_is_revoked_elsewhere(db_path: Path | str) -> None:
    """A stream opened before the revoke does not outlive it: it ends within REVERIFY_SECONDS."""
    from mcp_taskqueue.server.auth import REVERIFY_SECONDS

    agent = make_token(db_path, "agent", "read,write")
    other = make_token(db_path, "other", "read,write")
    with serve(db_path) as server:
        async with mcp_client(server.base, agent) as client, mcp_client(server.base, other) as bystander:
            task = await call(client, "create_task", title="watched")
            uri = f"taskqueue://tasks/{task['id']}"
            async with bystander.listen(resource_subscriptions=[uri]) as kept:
                with pytest.raises(Exception) as ended:
                    async with client.listen(resource_subscriptions=[uri]) as sub:
                        await call(client, "add_note", task_id=task["id"], text="before")
                        with anyio.fail_after(10):
                            assert (await sub.__anext__()).uri == uri  # type: ignore[union-attr]
                        assert cli(db_path, "token", "revoke", "agent").returncode == 0
                        revoked_at = time.monotonic()
                        with anyio.fail_after(REVERIFY_SECONDS + 10):
                            async for _ in sub:
                                pass
                assert "revoked" in str(ended.value) or "Subscription" in type(ended.value).__name__, ended.value
                assert time.monotonic() - revoked_at < REVERIFY_SECONDS + 5  # not the 10 s timeout above
                # another caller's stream on the same URI goes on
                await call(bystander, "add_note", task_id=task["id"], text="after")
                with anyio.fail_after(10):
                    assert (await kept.__anext__()).uri == uri  # type: ignore[union-attr]

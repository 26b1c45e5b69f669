"""Rate limits on a real server: 429 with Retry-After and RateLimit headers, tool errors naming the
wait, reads still served when writes are spent, overrides per token and scope, and a bounded load
test: one flooding client does not push another's p99 over twice its idle value."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.mcp_calls import call, call_error
from tests.servers import server_env
from tests.service_servers import make_token, mcp_client, serve

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "mcp-taskqueue.toml"
    path.write_text(text, encoding="utf-8")
    return {"TASKQUEUE_CONFIG": str(path)}


@pytest.mark.anyio
async def test_http_budget_answers_429_with_headers_per_identity(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    alice, bob = make_token(db, "alice", "read"), make_token(db, "bob", "read")
    env = config(tmp_path, "[rate_limits]\nhttp = { rate = 0.2, burst = 3 }\n")
    with serve(db, env=env) as server:
        async with httpx2.AsyncClient(base_url=server.base) as http:
            as_alice = {"Authorization": f"Bearer {alice}"}
            answers = [await http.post("/mcp", json=PING, headers=as_alice) for _ in range(4)]
            assert [r.status_code == 429 for r in answers] == [False, False, False, True]
            assert answers[0].headers["ratelimit-policy"] == '"http";q=3;w=15'
            assert answers[2].headers["ratelimit"].startswith('"http";r=0;')
            limited = answers[3]
            assert 1 <= int(limited.headers["retry-after"]) <= 5
            assert limited.headers["ratelimit"].startswith('"http";r=0;t=')
            assert "alice" in limited.json()["error_description"]
            # bob has his own bucket; the probes have none
            assert (await http.post("/mcp", json=PING, headers={"Authorization": f"Bearer {bob}"})).status_code != 429
            assert [(await http.get("/healthz")).status_code for _ in range(5)] == [200] * 5
            metrics = (await http.get("/metrics", headers={"Authorization": f"Bearer {bob}"})).text
            assert 'taskqueue_rate_limited_total{bucket="http"} 1.0' in metrics


@pytest.mark.anyio
async def test_anonymous_callers_on_loopback_are_limited_by_address(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    env = config(tmp_path, "[rate_limits]\nhttp = '2/m'\n")
    with serve(db, env=env) as server:
        async with httpx2.AsyncClient(base_url=server.base) as http:
            codes = [(await http.post("/mcp", json=PING)).status_code for _ in range(3)]
        assert codes[2] == 429 and 429 not in codes[:2]


@pytest.mark.anyio
async def test_spent_write_budget_is_a_tool_error_and_reads_keep_working(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    agent = make_token(db, "agent", "read,write")
    vip = make_token(db, "vip", "read,write")
    boss = make_token(db, "boss", "admin")
    env = config(
        tmp_path,
        """
[rate_limits]
write = { rate = 0.05, burst = 2 }
[rate_limits.tokens.vip]
write = "100/s"
[rate_limits.scopes.admin]
write = { rate = 50, burst = 50 }
""",
    )
    with serve(db, env=env) as server:
        async with mcp_client(server.base, agent) as client:
            await call(client, "create_task", title="one")
            await call(client, "create_task", title="two")
            text = await call_error(client, "create_task", title="three")
            assert "rate_limited" in text and "try again in" in text and "write" in text
            wait = float(text.split("try again in ")[1].split(" s")[0])
            assert 1 <= wait <= 20
            for _ in range(5):  # reads are another budget
                assert len((await call(client, "list_tasks"))["tasks"]) == 2
        for token in (vip, boss):
            async with mcp_client(server.base, token) as client:
                for i in range(5):
                    await call(client, "create_task", title=f"bulk {i}")
        async with mcp_client(server.base, boss) as client:
            titles = [t["title"] for t in (await call(client, "list_tasks", limit=50))["tasks"]]
        assert "three" not in titles and len(titles) == 12


# A flooding client in a process of its own: 4 keep-alive connections sending pings at FLOOD_RATE in
# all (25 times its budget of 20/s) while told to ("go" on stdin) until told to stop ("stop"); it
# answers each with its request count. Paced, so the load is bounded and the same on a busy or an
# idle machine, and written on raw sockets with one prepared request, so the flooder's own CPU
# (which in life is another machine's) stays small: on this 2-core machine an HTTP-library client
# flooding flat out measured how the cores are shared between the two clients, not the server.
FLOOD_RATE = 500
FLOODER = """
import asyncio, sys, threading
from urllib.parse import urlsplit
url, token, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
parts = urlsplit(url)
body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
request = (
    f"POST {parts.path} HTTP/1.1\\r\\nHost: {parts.netloc}\\r\\nAuthorization: Bearer {token}\\r\\n"
    f"Content-Type: application/json\\r\\nAccept: application/json, text/event-stream\\r\\n"
    f"Content-Length: {len(body)}\\r\\n\\r\\n"
).encode() + body
count = 0

async def read_response(reader):
    head = (await reader.readuntil(b"\\r\\n\\r\\n")).lower()
    if b"transfer-encoding: chunked" in head:
        while True:
            size = int((await reader.readuntil(b"\\r\\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        length = head.split(b"content-length:")[1].split(b"\\r\\n")[0] if b"content-length:" in head else b"0"
        await reader.readexactly(int(length))
    return b"connection: close" in head

async def connection(flooding):
    global count
    loop = asyncio.get_running_loop()
    gap = 4 / rate
    reader = writer = None
    while True:
        await flooding.wait()
        due = loop.time()
        while flooding.is_set():
            if writer is None:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(request)
            try:
                closed = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                closed = True
            count += 1
            if closed:
                writer.close()
                reader = writer = None
            due += gap
            await asyncio.sleep(max(0.0, due - loop.time()))

async def main():
    loop = asyncio.get_running_loop()
    flooding = asyncio.Event()
    for _ in range(4):
        loop.create_task(connection(flooding))
    def commands():
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line.strip())
    def command(word):
        flooding.set() if word == "go" else flooding.clear()
        print(count, flush=True)
    threading.Thread(target=commands, daemon=True).start()
    await asyncio.Event().wait()

asyncio.run(main())
"""

ROUNDS = 30  # short idle and flooded phases alternate, so drifting machine load hits both alike
SAMPLES = 20  # calls per phase
BLOCKS = 3  # consecutive rounds pooled into a block: each block's p99 is over 200 idle and 200 flooded calls


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


@pytest.mark.anyio
async def test_a_flooding_client_does_not_double_another_clients_p99(tmp_path: Path) -> None:
    """The victim's p99 under flood stays within 2x its idle p99.

    Measured robustly on a loaded 2-core machine: a warm-up first, then ROUNDS rounds of an idle
    phase and a flooded phase (same flooder process, already running, so its start-up is not
    measured), and the median over rounds of each phase's p99 is compared: one round disturbed by
    another job on the machine cannot decide the outcome, in either direction."""
    db = tmp_path / "tasks.db"
    victim, flooder = make_token(db, "victim", "read,write"), make_token(db, "flooder", "read")
    env = config(
        tmp_path, "[rate_limits]\nhttp = { rate = 20, burst = 20 }\n[rate_limits.tokens.victim]\nhttp = '1000/s'\n"
    )
    # Both clients come from 127.0.0.1, so the per-address session cap (issue 11) would count the
    # flood's admitted requests against the victim too: raised here, as if they were two machines.
    sessions = ("--sessions-per-peer", "100000", "--max-sessions", "100000")
    with serve(db, *sessions, env=env) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOODER, server.base + "/mcp", flooder, str(FLOOD_RATE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=server_env(),
        )
        assert proc.stdin is not None and proc.stdout is not None

        def tell(command: str) -> int:
            proc.stdin.write(command + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return int(proc.stdout.readline())  # type: ignore[union-attr]

        try:
            async with mcp_client(server.base, victim) as client:
                task = await call(client, "create_task", title="probe")

                async def measure(n: int) -> list[float]:
                    out = []
                    for _ in range(n):
                        start = time.perf_counter()
                        await call(client, "get_task", task_id=task["id"])
                        out.append(time.perf_counter() - start)
                    return out

                await measure(30)  # warm up: connections, caches, the server's first calls
                idle: list[list[float]] = []
                loaded: list[list[float]] = []
                flood_requests = 0
                flood_seconds = 0.0
                for _ in range(ROUNDS):
                    idle.append(await measure(SAMPLES))
                    before, started = tell("go"), time.monotonic()
                    time.sleep(0.1)  # the flood is under way
                    loaded.append(await measure(SAMPLES))
                    flood_requests += tell("stop") - before
                    flood_seconds += time.monotonic() - started
        finally:
            proc.kill()
            proc.wait(timeout=30)
    # it really flooded: at least half its pace, over ten times its budget of 20 requests/s
    assert flood_requests / flood_seconds > FLOOD_RATE / 2
    # One ratio per block (p99 flooded / p99 idle over the block's interleaved rounds); the median of
    # the blocks decides, so a burst of other jobs on the machine during one block cannot.
    size = ROUNDS // BLOCKS
    blocks = [(p99(sum(idle[i : i + size], [])), p99(sum(loaded[i : i + size], []))) for i in range(0, ROUNDS, size)]
    ratio = statistics.median(flooded / quiet for quiet, flooded in blocks)
    print(
        "victim p99 per block (idle -> flooded): "
        + ", ".join(f"{quiet * 1000:.1f} -> {flooded * 1000:.1f} ms" for quiet, flooded in blocks)
        + f"; median ratio {ratio:.2f}x; flood sent {flood_requests / flood_seconds:.0f} requests/s"
    )
    assert ratio <= 2.0

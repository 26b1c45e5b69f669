"""Every CLI command through click's runner on a real database file, plus `serve` as a real process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mcp_taskqueue.cli import main
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import open_store
from tests.servers import http_server, server_env


def cli(db: Path | str, *args: str, fmt: str = "json", url: str | None = None, stdin: str | None = None) -> Result:
    target = ["--url", url] if url else ["--db", str(db)]
    return CliRunner().invoke(main, [*target, "--format", fmt, *args], input=stdin)


def ok(db: Path | str, *args: str, **kw: Any) -> Any:
    """Run a command that must succeed; its stdout parsed as JSON."""
    result = cli(db, *args, **kw)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def fails(db: Path | str, *args: str, code: int, **kw: Any) -> str:
    """Run a command that must fail with `code`; its one-line error."""
    result = cli(db, *args, **kw)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_task_lifecycle_commands(db_path: Path) -> None:
    first = ok(db_path, "task", "add", "Write docs", "--priority", "high", "--tag", "docs", "--payload", '{"n": 1}')
    assert first["status"] == "ready" and first["version"] == 1
    second = ok(db_path, "task", "add", "Review docs", "--depends-on", first["id"], "--kind", "review")
    assert second["status"] == "pending"

    listed = ok(db_path, "task", "list")
    assert [t["id"] for t in listed["tasks"]] == [first["id"], second["id"]]
    assert ok(db_path, "task", "list", "--status", "pending")["tasks"][0]["id"] == second["id"]
    assert [t["id"] for t in ok(db_path, "task", "list", "--all", "--limit", "1")["tasks"]] == [
        first["id"],
        second["id"],
    ]

    claimed = ok(db_path, "task", "claim", "--worker", "me", "--lease", "60")
    assert claimed["task"]["id"] == first["id"] and claimed["task"]["payload"] == {"n": 1}
    assert ok(db_path, "task", "claim", "--worker", "me")["task"] is None

    lease = claimed["lease_id"]
    assert "--lease-id" in fails(db_path, "task", "complete", first["id"], "--worker", "me", code=2)
    done = ok(
        db_path, "task", "complete", first["id"], "--worker", "me", "--lease-id", lease, "--result", '{"pages": 3}'
    )
    assert done["status"] == "completed"
    shown = ok(db_path, "task", "show", first["id"])
    assert shown["result"] == {"pages": 3} and shown["tags"] == ["docs"] and shown["priority"] == "high"

    # The dependent became ready; fail it for good, retry it, cancel it.
    claimed = ok(db_path, "task", "claim", "-w", "me", "--kind", "review")
    assert claimed["task"]["id"] == second["id"]
    lease = claimed["lease_id"]
    failed = ok(
        db_path, "task", "fail", second["id"], "-w", "me", "--lease-id", lease, "--error", "typo", "--permanent"
    )
    assert failed["status"] == "failed" and failed["error"] == "typo"
    assert ok(db_path, "task", "retry", second["id"])["status"] == "ready"
    assert ok(db_path, "task", "note", second["id"], "looked at it")["action"] == "note"
    assert ok(db_path, "task", "cancel", second["id"], "--reason", "obsolete")["status"] == "cancelled"

    with_history = ok(db_path, "task", "show", second["id"], "--history")
    actions = [e["action"] for e in with_history["history"]]
    assert actions[0] == "created" and "note" in actions and with_history["task"]["status"] == "cancelled"


def test_release_and_payload_from_file(db_path: Path, tmp_path: Path) -> None:
    (tmp_path / "payload.json").write_text('{"from": "file"}')
    created = ok(db_path, "task", "add", "t", "--payload", f"@{tmp_path / 'payload.json'}")
    lease = ok(db_path, "task", "claim", "-w", "w1")["lease_id"]
    released = ok(db_path, "task", "release", created["id"], "-w", "w1", "--lease-id", lease)
    assert released["status"] == "ready" and released["worker"] is None
    assert ok(db_path, "task", "show", created["id"])["payload"] == {"from": "file"}


def test_bad_input_exits_non_zero_with_one_line(db_path: Path) -> None:
    assert "not_found" in fails(db_path, "task", "show", "nope", code=3)
    assert "--payload" in fails(db_path, "task", "add", "x", "--payload", "{bad", code=2)
    assert "--priority" in fails(db_path, "task", "add", "x", "--priority", "urgent", code=2)
    assert "No such option" in fails(db_path, "task", "list", "--bogus", code=2)
    created = ok(db_path, "task", "add", "x")
    assert "lease_lost" in fails(db_path, "task", "complete", created["id"], "-w", "nobody", "--lease-id", "x", code=4)
    assert "invalid_transition" in fails(db_path, "task", "retry", created["id"], code=4)
    assert "not_found" in fails(db_path, "task", "add", "y", "--depends-on", "missing", code=3)
    assert "validation_failed" in fails(db_path, "task", "add", "t" * 600, code=2)
    # Nothing the failures touched changed.
    assert ok(db_path, "task", "show", created["id"])["version"] == 1
    assert ok(db_path, "stats")["total"] == 1


def test_formats(db_path: Path) -> None:
    ok(db_path, "task", "add", "Hello table", "--project", "proj")
    table = cli(db_path, "task", "list", fmt="table")
    assert table.exit_code == 0 and "Hello table" in table.stdout and "proj" in table.stdout
    yaml = cli(db_path, "task", "list", fmt="yaml")
    assert yaml.exit_code == 0
    assert "tasks:\n  - id: " in yaml.stdout and "    title: Hello table\n" in yaml.stdout
    assert "next_cursor: null" in yaml.stdout
    stats_table = cli(db_path, "stats", fmt="table")
    assert "by_status" in stats_table.stdout


def test_project_and_stats(db_path: Path) -> None:
    ok(db_path, "task", "add", "a", "--project", "alpha")
    ok(db_path, "task", "add", "b", "--project", "beta")
    projects = ok(db_path, "project", "list")["projects"]
    assert [p["name"] for p in projects] == ["alpha", "beta"]
    alpha = ok(db_path, "project", "show", "alpha")
    assert alpha["task_counts"]["ready"] == 1
    assert "not_found" in fails(db_path, "project", "show", "gamma", code=3)
    stats = ok(db_path, "stats", "--project", "beta")
    assert stats["project"] == "beta" and stats["total"] == 1


def test_workflow_commands(db_path: Path, tmp_path: Path) -> None:
    spec = {
        "name": "release",
        "project": "rel",
        "tasks": [{"ref": "build", "title": "Build"}, {"ref": "ship", "title": "Ship", "depends_on": ["build"]}],
    }
    (tmp_path / "plan.json").write_text(json.dumps(spec))
    result = cli(db_path, "workflow", "create", str(tmp_path / "plan.json"))
    if result.exit_code == 7:  # the workflow tools are not on this server yet: the error path is one line
        assert "unknown_tool" in result.stderr and "create_workflow" in result.stderr
        pytest.skip("create_workflow is not registered yet")
    assert result.exit_code == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["name"] == "release" and set(created["refs"]) == {"build", "ship"}
    shown = ok(db_path, "workflow", "show", created["id"])
    assert {t["id"] for t in shown["tasks"]} == set(created["refs"].values())
    assert {t["id"]: t["status"] for t in shown["tasks"]}[created["refs"]["ship"]] == "pending"
    assert [w["id"] for w in ok(db_path, "workflow", "list", "--project", "rel")["workflows"]] == [created["id"]]
    table = cli(db_path, "workflow", "show", created["id"], fmt="table")
    assert table.exit_code == 0 and "Ship" in table.stdout
    assert ok(db_path, "workflow", "cancel", created["id"])["status"] == "cancelled"
    # Bad input: not JSON, and neither spec nor template.
    (tmp_path / "bad.json").write_text("{nope")
    assert "SPEC" in fails(db_path, "workflow", "create", str(tmp_path / "bad.json"), code=2)
    fails(db_path, "workflow", "create", code=2)
    assert "not_found" in fails(db_path, "workflow", "show", "nope", code=3)


def test_workflow_error_path_without_the_tools(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server without the workflows toolset: one line, exit code 7, nothing created."""
    import mcp_taskqueue.client as client_module

    real = client_module.TaskQueueClient

    def restricted(target: Any = None, **kw: Any) -> Any:
        return real(target, toolsets="tasks,queue,projects", **kw)

    monkeypatch.setattr(client_module, "TaskQueueClient", restricted)
    line = fails(db_path, "workflow", "list", code=7)
    assert "unknown_tool" in line and "list_workflows" in line


def test_export_import_round_trip(db_path: Path, tmp_path: Path, new_db: Callable[..., Path | str]) -> None:
    first = ok(db_path, "task", "add", "one", "--tag", "t")
    ok(db_path, "task", "add", "two", "--depends-on", first["id"])
    ok(db_path, "task", "note", first["id"], "hi")
    out = tmp_path / "dump.jsonl"
    summary = ok(db_path, "export", "-o", str(out))
    assert summary["tasks"] == 2 and summary["dependencies"] == 1 and out.exists()

    copy = new_db()
    imported = ok(copy, "import", str(out))
    assert imported["tasks"] == 2 and imported["events"] == summary["events"]
    again = cli(copy, "export")
    assert again.exit_code == 0
    assert again.stdout.splitlines()[1:] == out.read_text().splitlines()[1:]
    assert ok(copy, "task", "show", first["id"])["tags"] == ["t"]

    # Importing twice is refused and changes nothing; so is a damaged file.
    assert "conflict" in fails(copy, "import", str(out), code=4)
    (tmp_path / "cut.jsonl").write_text("\n".join(out.read_text().splitlines()[:-1]))
    empty = new_db()
    assert "truncated" in fails(empty, "import", str(tmp_path / "cut.jsonl"), code=2)
    assert ok(empty, "stats")["total"] == 0
    # Exporting a database that does not exist does not create one.
    assert "no database" in fails(tmp_path / "absent.db", "export", code=3)
    assert not (tmp_path / "absent.db").exists()
    # Export/import are local-file commands.
    assert "--db" in fails(db_path, "export", code=2, url="http://127.0.0.1:1/mcp")


def test_import_from_stdin(db_path: Path, new_db: Callable[..., Path | str]) -> None:
    ok(db_path, "task", "add", "piped")
    dump = cli(db_path, "export").stdout
    copy = new_db()
    assert ok(copy, "import", "-", stdin=dump)["tasks"] == 1
    assert cli(copy, "export").stdout.splitlines()[1:] == dump.splitlines()[1:]


def test_export_moves_a_queue_to_the_other_engine_and_back(
    db_path: Path, engine: str, tmp_path: Path, new_db: Callable[..., Path | str]
) -> None:
    first = ok(db_path, "task", "add", "one", "--payload", '{"z": 1, "a": [2.50, 1e100]}', "--tag", "t")
    ok(db_path, "task", "add", "two", "--depends-on", first["id"])
    ok(db_path, "task", "note", first["id"], "hi")
    out = tmp_path / "here.jsonl"
    ok(db_path, "export", str(out))
    other = new_db("postgres" if engine == "sqlite" else "sqlite")
    ok(other, "import", str(out))
    assert ok(other, "task", "show", first["id"])["payload"] == {"z": 1, "a": [2.5, 1e100]}
    there = cli(other, "export").stdout
    assert there.splitlines()[1:] == out.read_text().splitlines()[1:]
    assert '"payload":{"z":1,"a":[2.5,1e+100]}' in there


def test_backup_verify_and_restore(db_path: Path, tmp_path: Path) -> None:
    created = ok(db_path, "task", "add", "keep me")
    target = tmp_path / "backup.db"
    made = ok(db_path, "backup", str(target), "--verify")
    assert made["verified"] is True and made["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert (tmp_path / "backup.db.sha256").read_text().split()[0] == made["sha256"]
    assert "--force" in fails(db_path, "backup", str(target), code=2)

    ok(db_path, "task", "cancel", created["id"])
    restored = ok(db_path, "restore", str(target), "--yes")
    assert restored["integrity_check"] == "ok"
    assert ok(db_path, "task", "show", created["id"])["status"] == "ready"

    # A corrupted backup is refused; the database keeps its contents.
    ok(db_path, "task", "add", "after restore")
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    assert "checksum" in fails(db_path, "restore", str(target), "--yes", code=2)
    assert ok(db_path, "stats")["total"] == 2
    # Without --yes and without a terminal to ask on, restore refuses.
    ok(db_path, "backup", str(tmp_path / "b2.db"))
    assert "--yes" in fails(db_path, "restore", str(tmp_path / "b2.db"), code=2)


def test_completion_scripts() -> None:
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --no-files")):
        result = CliRunner().invoke(main, ["completion", shell])
        assert result.exit_code == 0 and marker in result.stdout and "_MCP_TASKQUEUE_COMPLETE" in result.stdout
    assert CliRunner().invoke(main, ["completion", "tcsh"]).exit_code == 2


def test_completion_completes_subcommands() -> None:
    env = {"_MCP_TASKQUEUE_COMPLETE": "bash_complete", "COMP_WORDS": "mcp-taskqueue ta", "COMP_CWORD": "1"}
    result = CliRunner().invoke(main, [], env=env, prog_name="mcp-taskqueue")
    assert "plain,task" in result.stdout


def test_worker_command(db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clijob.py").write_text(
        "from mcp_taskqueue.worker import Worker\n"
        "worker = Worker('cli-worker', poll_interval=0.05)\n"
        "@worker.handler('upper')\n"
        "def upper(task):\n"
        "    return task.payload['text'].upper()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "clijob", raising=False)  # a fresh Worker (and counts) per engine
    created = ok(db_path, "task", "add", "shout", "--kind", "upper", "--payload", '{"text": "hi"}')
    summary = ok(db_path, "worker", "clijob:worker", "--drain")
    assert summary["worker"] == "cli-worker" and summary["completed"] == 1
    assert ok(db_path, "task", "show", created["id"])["result"] == "HI"
    assert "SPEC" in fails(db_path, "worker", "clijob:nothing", code=2)


def test_url_mode_against_a_served_database(db_path: Path) -> None:
    """`serve` as a real process; --url commands and --db commands see the same queue."""
    with http_server(db_path) as base:
        url = base + "/mcp"
        created = ok(db_path, "task", "add", "remote", "--project", "net", url=url)
        assert ok(db_path, "task", "show", created["id"])["project"] == "net"  # local file sees it
        claimed = ok(db_path, "task", "claim", "-w", "remote-worker", url=url)
        assert claimed["task"]["id"] == created["id"]
        lease = ["--lease-id", claimed["lease_id"]]
        assert (
            ok(db_path, "task", "complete", created["id"], "-w", "remote-worker", *lease, url=url)["status"]
            == "completed"
        )
        assert ok(db_path, "stats", url=url)["by_status"]["completed"] == 1
        assert "not_found" in fails(db_path, "task", "show", "nope", code=3, url=url)


def test_unreachable_url_is_one_line_error(db_path: Path) -> None:
    line = fails(db_path, "stats", code=6, url="http://127.0.0.1:9/mcp")
    assert line.startswith("error: transport: ")


def test_serve_stdio_subprocess_speaks_only_protocol_on_stdout(db_path: Path) -> None:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_taskqueue.cli", "--db", str(db_path), "serve"],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines and all(line.get("jsonrpc") == "2.0" for line in lines)
    assert lines[0]["id"] == 1 and lines[0]["result"]["serverInfo"]["name"] == "mcp-taskqueue"
    queue = TaskQueue(open_store(db_path))
    assert queue.stats().total == 0


def test_docs_reference_matches_the_commands() -> None:
    """docs/cli.md embeds every command's --help; regenerate it when a command changes."""
    from mcp_taskqueue.cli import REFERENCE_BEGIN, REFERENCE_END, help_reference

    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    generated = doc.split(REFERENCE_BEGIN, 1)[1].split(REFERENCE_END, 1)[0]
    assert generated.strip() == help_reference().strip(), "run: python -m mcp_taskqueue.cli --update-docs docs/cli.md"
    for command in ("task add", "task claim", "workflow create", "export", "import", "backup", "restore", "serve"):
        assert f"### `mcp-taskqueue {command}`" in doc

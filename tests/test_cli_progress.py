"""Progress bars on a terminal for the long CLI commands: workflow create (fed by the server's
progress notifications), export, import, backup and restore. Pipes stay clean."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.servers import server_env

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(db: Path, *args: str, terminal: bool) -> subprocess.CompletedProcess[str]:
    env = {**server_env(), "TASKQUEUE_DB": str(db), "COLUMNS": "120"}
    env.pop("FORCE_COLOR", None)
    if terminal:
        env["FORCE_COLOR"] = "1"  # rich treats stderr as a terminal
    return subprocess.run(
        [sys.executable, "-m", "mcp_taskqueue.cli", *args, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def bar_counts(stderr: str, description: str) -> list[tuple[int, int]]:
    """The done/total pairs the bar drew after `description`."""
    frames = ANSI.sub("", stderr).replace("\r", "\n").splitlines()
    return [
        (int(m[1]), int(m[2]))
        for frame in frames
        if frame.startswith(description)
        for m in [re.search(r"(\d+)/(\d+)", frame)]
        if m
    ]


def test_long_commands_show_progress_on_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    spec = tmp_path / "big.json"
    spec.write_text(json.dumps({"name": "big", "tasks": [{"ref": f"r{i}", "title": f"t{i}"} for i in range(420)]}))

    created = run(db, "workflow", "create", str(spec), terminal=True)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["total"] == 420  # stdout stays the result only
    counts = bar_counts(created.stderr, "creating tasks")
    # Fed by the server's notifications (reports along the way are tested in test_logging_progress.py;
    # on a loaded machine the bar may draw only the last one).
    assert (420, 420) in counts and all(total == 420 for _, total in counts), counts

    for args, description in (
        (("export", str(tmp_path / "out.jsonl")), "exporting"),
        (("import", str(tmp_path / "out.jsonl"), "--db", str(tmp_path / "copy.db")), "importing"),
        (("backup", str(tmp_path / "b.db")), "backing up"),
        (("restore", str(tmp_path / "b.db"), "--yes"), "restoring"),
    ):
        result = run(db, *args, terminal=True)
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout)
        counts = bar_counts(result.stderr, description)
        assert counts and counts[-1][0] == counts[-1][1] > 0, (description, counts)


def test_no_bar_in_a_pipe(tmp_path: Path) -> None:
    db = tmp_path / "quiet.db"
    spec = tmp_path / "w.json"
    spec.write_text(json.dumps({"name": "w", "tasks": [{"ref": "a", "title": "A"}]}))
    created = run(db, "workflow", "create", str(spec), terminal=False)
    exported = run(db, "export", str(tmp_path / "o.jsonl"), terminal=False)
    assert created.returncode == exported.returncode == 0
    assert created.stderr == exported.stderr == ""

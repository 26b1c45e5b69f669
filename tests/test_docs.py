"""Every code block in README.md and docs/*.md runs, so the docs cannot drift from the code.

How a fenced block is treated, by its language (write docs so that they run):
  sh, bash, shell, console   run with `bash -euo pipefail`, `mcp-taskqueue` on PATH, in a scratch
                             directory holding a copy of examples/, with TASKQUEUE_DB set to a
                             scratch store (tasks.db). `http://127.0.0.1:8765` in a block means a
                             live HTTP server started for the document on its own store (server.db).
  python                     run as a script, same directory, same server.
  json                       must parse; a block preceded by `<!-- docs-test: tool NAME -->` is
                             NAME's arguments and is called on that server (it must succeed).
  toml                       must parse.
  text                       output or a listing: never run.
  ts, tsx in docs/typescript.md  run by sdk/typescript/test/docs.test.ts (make test-ts): ELSEWHERE.
  anything else, or none     must be preceded by a skip marker.
A block that must not run (it starts a server forever, installs packages, runs this suite) is
preceded, on the line just before its fence, by:
  <!-- docs-test: skip: <reason, at least three words> -->
The blocks of one document run in order and share the scratch directory and store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from mcp import Client

from tests.servers import http_server, server_env

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
MARKER = re.compile(r"^<!-- docs-test: (?P<kind>skip|tool)(?::| )\s*(?P<arg>.*?)\s*-->$")
DOC_URL = "http://127.0.0.1:8765"
BLOCK_TIMEOUT = 180
# Blocks another test runs: (document, language) -> that test, which must read the document.
ELSEWHERE = {
    ("docs/typescript.md", "ts"): "sdk/typescript/test/docs.test.ts",
    ("docs/typescript.md", "tsx"): "sdk/typescript/test/docs.test.ts",
}


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: tuple[str, str] | None

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the docs-test marker just before each, if any."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = re.match(r"^```(\S*)\s*$", lines[index])
        if not match:
            index += 1
            continue
        start, language = index, match[1].lower()
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        assert index < len(lines), f"{path}:{start + 1}: unclosed code block"
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.match(previous.strip())
        found.append(
            Block(path, start + 1, language, "\n".join(body) + "\n", (marker[1], marker[2]) if marker else None)
        )
        index += 1
    return found


def test_every_block_is_runnable_or_skipped_with_a_reason() -> None:
    runnable = SHELL | {"python", "json", "toml", "text"}
    counted = 0
    for path in DOCS:
        for block in blocks(path):
            counted += 1
            if block.marker and block.marker[0] == "skip":
                assert len(block.marker[1].split()) >= 3, f"{block.where()}: a skip marker needs a reason"
                continue
            if block.marker and block.marker[0] == "tool":
                assert block.language == "json", f"{block.where()}: a tool marker goes before a json block"
            runner = ELSEWHERE.get((str(block.path.relative_to(ROOT)), block.language))
            if runner is not None:
                assert str(block.path.relative_to(ROOT)) in (ROOT / runner).read_text(encoding="utf-8"), runner
                continue
            assert block.language in runnable, (
                f"{block.where()}: a ```{block.language or '(no language)'} block needs a language this test "
                "runs (see tests/test_docs.py) or '<!-- docs-test: skip: <reason> -->' before it"
            )
    assert counted >= 20


def test_readme_first_screen() -> None:
    """The first screen: the two commands, how to get the command on PATH, and the test time."""
    first = "\n".join(ROOT.joinpath("README.md").read_text(encoding="utf-8").splitlines()[:30])
    assert "make run" in first and "make test" in first
    assert ". .venv/bin/activate" in first
    assert re.search(r"make test.*\d+ min", ROOT.joinpath("README.md").read_text(encoding="utf-8"), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_document_blocks_run(path: Path, tmp_path: Path) -> None:
    todo = [b for b in blocks(path) if not (b.marker and b.marker[0] == "skip")]
    for block in (b for b in todo if b.language == "json"):
        try:
            json.loads(block.text)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{block.where()}: not JSON: {exc}")
    for block in (b for b in todo if b.language == "toml"):
        try:
            tomllib.loads(block.text)
        except tomllib.TOMLDecodeError as exc:
            pytest.fail(f"{block.where()}: not TOML: {exc}")
    live = [b for b in todo if b.language in SHELL | {"python"} or (b.marker and b.marker[0] == "tool")]
    if not live:
        return

    work, home = tmp_path / "work", tmp_path / "home"
    shutil.copytree(ROOT / "examples", work / "examples")
    home.mkdir()
    db = work / "tasks.db"
    env = {
        **server_env(),
        "HOME": str(home),
        "TASKQUEUE_DB": str(db),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for name in ("TASKQUEUE_URL", "TASKQUEUE_FORMAT", "XDG_DATA_HOME", "TASKQUEUE_CONFIG", "TASKQUEUE_PROFILE"):
        env.pop(name, None)
    with http_server(work / "server.db") as base:  # its own file: restore refuses a store a server holds
        for block in live:
            text = block.text.replace(DOC_URL, base)
            if block.marker and block.marker[0] == "tool":
                run_tool(block, base, block.marker[1], json.loads(text))
                continue
            command = (
                ["bash", "-euo", "pipefail", "-c", text] if block.language in SHELL else [sys.executable, "-c", text]
            )
            result = subprocess.run(
                command,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            assert result.returncode == 0, (
                f"{block.where()} exited {result.returncode}\n--- block\n{text}--- stdout\n{result.stdout[-3000:]}"
                f"--- stderr\n{result.stderr[-3000:]}"
            )


def run_tool(block: Block, base: str, tool: str, arguments: dict[str, object]) -> None:
    import anyio

    async def call() -> None:
        async with Client(base + "/mcp") as client:
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, f"{block.where()}: {tool} refused the example: {result.content}"

    anyio.run(call)

"""The TypeScript SDK's generated code and version stay in step with the server.

The SDK's own tests (sdk/typescript/test, run by `make test-ts`) drive the real server from Node
and Chromium; these checks need no Node, so they also fail a plain `pytest` run when someone
changes a tool and forgets `make sdk-generate`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_taskqueue import __version__

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "typescript"
GENERATE = SDK / "scripts" / "generate.py"


def test_generated_types_match_the_live_server() -> None:
    check = subprocess.run([sys.executable, str(GENERATE), "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_a_stale_file_is_refused(tmp_path: Path) -> None:
    stale = tmp_path / "generated.ts"
    stale.write_text((SDK / "src" / "generated.ts").read_text().replace("claimTask(", "claimTaskOld("))
    check = subprocess.run(
        [sys.executable, str(GENERATE), "--check", "--out", str(stale)], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 1
    assert "make sdk-generate" in check.stderr


def test_every_tool_has_a_method_and_result_schema() -> None:
    text = (SDK / "src" / "generated.ts").read_text()
    tools = re.findall(r"^  (\w+): \{ method: \"(\w+)\"", text, re.M)
    assert ("claim_task", "claimTask") in tools and ("create_tasks", "createTasks") in tools
    for _, method in tools:
        assert re.search(rf"^  {method}\(args", text, re.M), f"no method {method}"


def test_package_version_follows_the_server() -> None:
    pyproject = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert pyproject is not None
    package = json.loads((SDK / "package.json").read_text())
    lock = json.loads((SDK / "package-lock.json").read_text())
    assert package["version"] == pyproject[1] == __version__
    assert lock["version"] == package["version"] == lock["packages"][""]["version"]
    assert f'SERVER_VERSION = "{__version__}"' in (SDK / "src" / "generated.ts").read_text()


@pytest.mark.parametrize("field", ["exports", "engines", "files", "types"])
def test_package_declares(field: str) -> None:
    package = json.loads((SDK / "package.json").read_text())
    assert package.get(field), f"package.json lacks {field}"
    assert set(package["dependencies"]) == {"@modelcontextprotocol/sdk", "zod"}
    assert "./react" in package["exports"]

"""Installed the way users install it: build the sdist and wheel, install the wheel into a fresh
venv outside the checkout, and drive the installed `mcp-taskqueue serve` with a real client.

The editable install the other tests use reads the top-level prompts/ and schemas/ in place;
this is the test that would see a wheel without them.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mcp_taskqueue.data_files import SHIPPED

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def source_files(name: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file under the checkout's top-level `name`/."""
    base = ROOT / name
    return {
        p.relative_to(base).as_posix(): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel built by `python -m build` (the wheel is built from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv (outside the checkout) with only the wheel and its dependencies installed."""
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=300)
    wheel = next(dist.glob("*.whl"))
    subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
    )
    yield home


def test_wheel_and_sdist_carry_what_the_server_reads(dist: Path) -> None:
    wheel = zipfile.ZipFile(next(dist.glob("*.whl")))
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        sdist_names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in SHIPPED:
        source = source_files(name)
        assert source, name
        packaged = {
            entry[len(f"mcp_taskqueue/{name}/") :]: wheel.read(entry)
            for entry in wheel.namelist()
            if entry.startswith(f"mcp_taskqueue/{name}/") and not entry.endswith("/")
        }
        assert packaged == source, f"the wheel's copy of {name}/ differs from the checkout's"
        assert {f"{name}/{rel}" for rel in source} <= sdist_names, f"the sdist lacks files of {name}/"
    # Every other file the package keeps beside its code (py.typed, the board's web assets, ...).
    tracked = subprocess.run(
        ["git", "ls-files", "mcp_taskqueue"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    data = {name for name in tracked if not name.endswith(".py")}
    assert "mcp_taskqueue/py.typed" in data
    assert data <= set(wheel.namelist()), f"the wheel lacks {sorted(data - set(wheel.namelist()))}"


@pytest.mark.anyio
async def test_installed_server_offers_prompts_templates_and_kind_schemas(venv: Path, tmp_path: Path) -> None:
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mcp_taskqueue.data_files as d; print(d.shipped_dir('prompts'))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(located).is_relative_to(venv), located  # the package's own copy, not the checkout's

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    params = StdioServerParameters(
        command=str(venv / "bin" / "mcp-taskqueue"),
        args=["serve", "--db", str(tmp_path / "installed.db")],
        env=env,
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"create_task", "claim_task", "create_workflow"} <= tools

        prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
        assert prompts == {p.removesuffix(".md") for p in source_files("prompts")}
        work_next = await client.get_prompt("work_next", {"worker": "w1"})
        assert "claim_task" in work_next.messages[0].content.text  # type: ignore[union-attr]

        created = await client.call_tool("create_workflow", {"template": "bugfix", "parameters": {"bug": "crash"}})
        assert not created.is_error, created.content
        assert created.structured_content is not None and created.structured_content["total"] == 4

        refused = await client.call_tool("create_task", {"title": "Review", "kind": "code_review", "payload": {}})
        assert refused.is_error
        text = refused.content[0].text  # type: ignore[union-attr]
        assert "validation_failed" in text and "target" in text and "code_review" in text

        schema = await client.read_resource("taskqueue://schemas/workflow")
        assert '"tasks"' in schema.contents[0].text  # type: ignore[union-attr]

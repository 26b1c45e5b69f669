"""docs/reference.md is generated from the server; it must match what the server says today."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_taskqueue.reference import render

pytestmark = pytest.mark.anyio
DOC = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


async def test_reference_doc_is_current() -> None:
    expected = await render()
    assert "#### `claim_task`" in expected and "taskqueue://tasks/{task_id}" in expected
    assert DOC.read_text(encoding="utf-8") == expected, (
        "docs/reference.md is stale: run `.venv/bin/python -m mcp_taskqueue.reference > docs/reference.md`"
    )

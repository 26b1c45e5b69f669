"""Where the files the server reads live: `prompts/` and `schemas/`.

The checkout's top-level `prompts/` and `schemas/` are the source. A wheel or sdist build copies
them into the package (setup.py's `build_py`), so an installed server reads
`<site-packages>/mcp_taskqueue/prompts/` and an editable one reads the checkout's folders.
`TASKQUEUE_PROMPTS_DIR` and `TASKQUEUE_SCHEMAS_DIR` point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED = ("prompts", "schemas")  # top-level folders carried inside the package by setup.py


def shipped_dir(name: str) -> Path:
    """The directory of shipped files `name` ("prompts" or "schemas"): env override, the
    package's own copy (installed), else the checkout's top-level folder (editable)."""
    override = os.environ.get(f"TASKQUEUE_{name.upper()}_DIR")
    if override:
        return Path(override)
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name

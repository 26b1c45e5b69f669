"""Lighthouse (npm, offline) on the board with Debian's Chromium: performance, accessibility and
best practices. `make test` installs it into .cache/lighthouse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.browser.conftest import CHROMIUM, Site

ROOT = Path(__file__).resolve().parents[2]
LIGHTHOUSE = ROOT / ".cache" / "lighthouse" / "node_modules" / ".bin" / "lighthouse"
NODE22 = ROOT / ".cache" / "node22" / "node_modules" / ".bin"


def test_lighthouse_scores_the_board(site: Site, tmp_path: Path) -> None:
    assert LIGHTHOUSE.exists(), "Lighthouse is missing: `make test` (or `make lighthouse`) installs it"
    env = dict(os.environ, CHROME_PATH=CHROMIUM)
    if NODE22.is_dir():  # the Node 22 `make` installs, when present; else the system's node
        env["PATH"] = f"{NODE22}{os.pathsep}{env['PATH']}"
    assert shutil.which("node", path=env["PATH"]), "Lighthouse needs node on PATH"
    report = tmp_path / "lighthouse.json"
    subprocess.run(
        [
            str(LIGHTHOUSE),
            site.base + "/#/p/demo",
            "--quiet",
            "--chrome-flags=--headless=new --no-sandbox",
            "--only-categories=performance,accessibility,best-practices",
            "--form-factor=desktop",
            "--screenEmulation.disabled",
            "--throttling-method=provided",  # the real (local) network: no simulated 4G
            "--output=json",
            f"--output-path={report}",
        ],
        env=env,
        check=True,
        timeout=240,
        capture_output=True,
    )
    result = json.loads(report.read_text())
    scores = {name: category["score"] for name, category in result["categories"].items()}
    assert scores["accessibility"] == 1, scores
    assert scores["best-practices"] >= 0.9, scores
    assert scores["performance"] >= 0.9, scores
    weight = result["audits"]["total-byte-weight"]["numericValue"]
    assert weight < 300_000, f"Lighthouse counted {weight} bytes"
    print(
        f"\nlighthouse: {scores}, {weight:.0f} bytes, LCP {result['audits']['largest-contentful-paint']['displayValue']}"
    )

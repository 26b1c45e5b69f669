"""axe-core on the board under its real Content-Security-Policy, in every engine.

Playwright's `evaluate` is `eval()` to Firefox over WebDriver BiDi, and the board's CSP
(`script-src 'self'`) forbids eval, so axe-playwright-python (which injects and runs axe with
`evaluate`) cannot run there. Instead the test's browser context serves axe-core from the
board's own origin (`/__axe/harness.js`, answered by a Playwright route, never by the server)
and adds one `<script src>` for it to the page; the CSP header stays as the server sent it.
The harness runs axe on a key chord (Control+Alt+Shift+X, caught before the page sees it; keys
reach it even while a modal dialog makes the rest inert, and focus stays where it was) and
writes the violations as JSON into a hidden `<output>`: the test presses keys and reads the
output with locators, never running script in the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import axe_playwright_python
from playwright.sync_api import BrowserContext, Page, Route, expect

AXE_SOURCE = Path(axe_playwright_python.__file__).with_name("axe.min.js").read_text(encoding="utf-8")
HARNESS_PATH = "/__axe/harness.js"
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
RUNNER = """
(() => {
  const holder = document.createElement("div");
  holder.id = "axe-harness";
  holder.hidden = true;
  const out = document.createElement("output");
  out.id = "axe-result";
  holder.append(out);
  let runs = 0;
  window.addEventListener("keydown", async (event) => {
    if (!(event.ctrlKey && event.altKey && event.shiftKey && event.code === "KeyX")) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    delete out.dataset.run;
    let text;
    try {
      const result = await axe.run({ exclude: [["#axe-harness"]] }, OPTIONS);
      text = JSON.stringify(result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })) })));
    } catch (error) {
      text = JSON.stringify([{ id: "axe-error", help: String(error), nodes: [] }]);
    }
    out.textContent = text;
    runs += 1;
    out.dataset.run = String(runs);
  }, { capture: true });
  document.body.append(holder);
})();
"""


def install(context: BrowserContext, base: str, plant: str = "") -> None:
    """Serve the harness from `base`'s origin and add it to the board's page (CSP header untouched);
    `plant`: HTML added to the page too (to show the check can fail)."""

    def page(route: Route) -> None:
        response = route.fetch()
        html = response.text().replace("</body>", f'{plant}<script src="{HARNESS_PATH}"></script></body>')
        route.fulfill(response=response, body=html)

    def harness(route: Route) -> None:
        route.fulfill(
            body=AXE_SOURCE + "\n" + RUNNER.replace("OPTIONS", json.dumps(WCAG)),
            content_type="text/javascript",
        )

    context.route(base + "/", page)
    context.route(base + HARNESS_PATH, harness)


def violations(page: Page, timeout: float = 60_000) -> list[dict[str, Any]]:
    """Run axe on the page as it is now; its WCAG 2.1 A/AA violations."""
    out = page.locator("#axe-result")
    previous = out.get_attribute("data-run")
    page.keyboard.press("Control+Alt+Shift+KeyX")
    expect(out).to_have_attribute("data-run", str(int(previous or 0) + 1), timeout=timeout)
    found: list[dict[str, Any]] = json.loads(out.text_content() or "[]")
    return found


def report(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"- {v['id']} ({v.get('impact')}): {v['help']}\n"
        + "".join(f"    {n['target']}: {n['summary']}\n" for n in v["nodes"])
        for v in found
    )

// The browser bundle in a real browser (Debian's Chromium, driven by playwright-core): a page loads
// dist/browser/index.js and drives a task through its life against the real server over HTTP.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium, type Browser } from "playwright-core";

import { TaskQueueClient } from "mcp-taskqueue";
import { HttpServer, tempDir } from "./server.ts";

const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const BUNDLE = fileURLToPath(new URL("../dist/browser/index.js", import.meta.url));

const PAGE = `<!doctype html><meta charset="utf-8"><title>sdk</title>
<script type="module">
  import { TaskQueueClient, NotFound, LeaseLost } from "/sdk/index.js";
  window.run = async () => {
    const tq = await TaskQueueClient.connect(new URL("/mcp", location.href).href, { clientName: "browser" });
    const log = [];
    const created = await tq.createTask({ title: "from the browser", project: "web", payload: { via: "chromium" } });
    log.push(created.status);
    let heard = 0;
    const off = await tq.subscribe("taskqueue://tasks/" + created.id, () => heard++);
    const claim = await tq.claimTask({ worker: "tab", project: "web" });
    const lease = { lease_id: claim.task.lease_id };
    log.push(claim.task.status);
    await tq.heartbeat({ task_id: created.id, worker: "tab", progress: 0.5, ...lease });
    const done = await tq.completeTask({ task_id: created.id, worker: "tab", result: { ok: true }, ...lease });
    log.push(done.status);
    try { await tq.getTask({ task_id: "missing" }); } catch (e) { log.push(e instanceof NotFound ? "NotFound" : String(e)); }
    try { await tq.failTask({ task_id: created.id, worker: "other", error: "x", ...lease }); }
    catch (e) { log.push(e.name); }
    const start = Date.now();
    while (heard === 0 && Date.now() - start < 20000) await new Promise((r) => setTimeout(r, 50));
    await off();
    const task = await tq.getTask({ task_id: created.id });
    await tq.close();
    return { log, heard: heard > 0, result: task.result, id: created.id };
  };
  window.ready = true;
</script>`;

describe("browser bundle in Chromium", () => {
  const tmp = tempDir();
  let server: HttpServer;
  let browser: Browser;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `no browser at ${CHROMIUM}: make test-ts installs Debian's chromium`);
    server = await HttpServer.start(join(tmp.dir, "tasks.db"));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    tmp.cleanup();
  });

  test("a page drives a task through its life with the bundle", async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // The page and the bundle are served on the server's own origin (so no CORS is involved);
    // every other request, /mcp included, goes to the real server.
    await page.route(`${server.base}/sdk-test.html`, (route) =>
      route.fulfill({ contentType: "text/html", body: PAGE }),
    );
    await page.route(`${server.base}/sdk/index.js`, (route) =>
      route.fulfill({ contentType: "text/javascript", body: readFileSync(BUNDLE, "utf8") }),
    );
    await page.goto(`${server.base}/sdk-test.html`);
    await page.waitForFunction(() => (window as { ready?: boolean }).ready === true, undefined, { timeout: 30_000 });
    const outcome = (await page.evaluate(() => (window as unknown as { run: () => Promise<unknown> }).run())) as {
      log: string[];
      heard: boolean;
      result: unknown;
      id: string;
    };
    assert.deepEqual(errors, []);
    assert.deepEqual(outcome.log, ["ready", "running", "completed", "NotFound", "LeaseLost"]);
    assert.ok(outcome.heard, "the page's subscription was notified");
    assert.deepEqual(outcome.result, { ok: true });
    const tq = await TaskQueueClient.connect(server.url);
    const task = await tq.getTask({ task_id: outcome.id });
    assert.equal(task.status, "completed");
    assert.deepEqual(task.payload, { via: "chromium" });
    await tq.close();
  });
});

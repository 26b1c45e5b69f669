// The package as users get it: both module systems, the subpaths, and what `npm pack` ships.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const PACKAGE = fileURLToPath(new URL("..", import.meta.url));
const require = createRequire(import.meta.url);

describe("package", () => {
  test("ESM and CommonJS entry points export the same API", async () => {
    const esm = await import("mcp-taskqueue");
    const cjs = require("mcp-taskqueue") as typeof esm;
    for (const name of ["TaskQueueClient", "Worker", "PermanentError", "NotFound", "LeaseLost", "TOOLS"] as const) {
      assert.ok(esm[name], `ESM exports ${name}`);
      assert.ok(cjs[name], `CommonJS exports ${name}`);
    }
    assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
    assert.equal(new cjs.NotFound("x").name, "NotFound");
  });

  test("the react subpath loads in both module systems", async () => {
    const esm = await import("mcp-taskqueue/react");
    const cjs = require("mcp-taskqueue/react") as typeof esm;
    for (const hook of ["useTask", "useTasks", "useWorkflow", "useQueueStats", "TaskQueueProvider"] as const) {
      assert.equal(typeof esm[hook], "function");
      assert.equal(typeof cjs[hook], "function");
    }
  });

  test("the browser bundle is one self-contained module without Node built-ins", () => {
    const bundle = readFileSync(new URL("../dist/browser/index.js", import.meta.url), "utf8");
    assert.doesNotMatch(bundle, /from\s*["'](node:|child_process|@modelcontextprotocol|zod)/);
    assert.doesNotMatch(bundle, /require\(["']node:/);
    assert.ok(statSync(new URL("../dist/browser/index.js", import.meta.url)).size < 1_500_000);
  });

  test("npm pack ships dist, sources and types, not tests", async () => {
    const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: PACKAGE });
    const [info] = JSON.parse(stdout) as Array<{ name: string; version: string; files: Array<{ path: string }> }>;
    assert.ok(info);
    const files = info.files.map((f) => f.path);
    for (const needed of ["dist/esm/index.js", "dist/esm/index.d.ts", "dist/cjs/index.js", "dist/cjs/package.json"]) {
      assert.ok(files.includes(needed), `ships ${needed}`);
    }
    assert.ok(files.includes("dist/browser/index.js") && files.includes("dist/esm/react.d.ts"));
    assert.ok(files.includes("README.md") && files.includes("package.json"));
    assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("node_modules/")));
    const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    assert.equal(info.version, manifest.version);
  });
});

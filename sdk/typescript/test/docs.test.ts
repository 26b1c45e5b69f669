// docs/typescript.md: every ```ts example runs against the real server and prints what its
// "Output" block says; every example (```tsx too) type-checks against the built package.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { HttpServer, PYTHON, REPO, tempDir } from "./server.ts";

const run = promisify(execFile);
const PACKAGE = fileURLToPath(new URL("..", import.meta.url));
// inside the package, so `import ... from "mcp-taskqueue"` resolves to it (self-reference)
const WORK = join(PACKAGE, ".docs-test");

interface Example {
  index: number;
  lang: string;
  code: string;
  output: string | undefined;
}

function examples(): Example[] {
  const text = readFileSync(join(REPO, "docs", "typescript.md"), "utf8");
  const blocks = [...text.matchAll(/```(\w+)\n([\s\S]*?)```(?:\s*Output:\s*```text\n([\s\S]*?)```)?/g)];
  return blocks
    .filter((m) => m[1] === "ts" || m[1] === "tsx")
    .map((m, index) => ({ index, lang: m[1] ?? "", code: m[2] ?? "", output: m[3] }));
}

describe("docs/typescript.md", () => {
  const tmp = tempDir();
  let server: HttpServer;
  const all = examples();

  before(async () => {
    rmSync(WORK, { recursive: true, force: true });
    mkdirSync(WORK, { recursive: true });
    for (const ex of all) writeFileSync(join(WORK, `example-${ex.index}.${ex.lang}`), ex.code);
    server = await HttpServer.start(join(tmp.dir, "docs.db"));
  });
  after(async () => {
    await server?.stop();
    rmSync(WORK, { recursive: true, force: true });
    tmp.cleanup();
  });

  test("has runnable examples", () => {
    assert.ok(all.filter((ex) => ex.lang === "ts").length >= 5);
    assert.ok(all.some((ex) => ex.lang === "tsx"));
  });

  test("every example type-checks", async () => {
    const config = {
      extends: "../tsconfig.json",
      compilerOptions: { noUnusedLocals: false },
      include: ["*.ts", "*.tsx"],
    };
    writeFileSync(join(WORK, "tsconfig.json"), JSON.stringify(config));
    const tsc = join(PACKAGE, "node_modules", "typescript", "bin", "tsc");
    const result = await run(process.execPath, [tsc, "-p", join(WORK, "tsconfig.json")]).catch(
      (e: { stdout: string }) => e,
    );
    assert.equal("code" in result ? result.code : 0, 0, result.stdout);
  });

  for (const ex of all.filter((e) => e.lang === "ts")) {
    test(`example ${ex.index} runs${ex.output === undefined ? "" : " and prints its Output"}`, async () => {
      const env = {
        ...process.env,
        TASKQUEUE_URL: server.url,
        TASKQUEUE_COMMAND: PYTHON,
        TASKQUEUE_ARGS: JSON.stringify(["-m", "mcp_taskqueue.cli", "--db", join(tmp.dir, "stdio.db"), "serve"]),
      };
      const { stdout } = await run(process.execPath, [join(WORK, `example-${ex.index}.ts`)], { env, timeout: 120_000 });
      if (ex.output !== undefined) assert.equal(stdout.trim(), ex.output.trim());
    });
  }
});

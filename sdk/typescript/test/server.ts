// Starts the real Python server (from the repository's .venv) for the tests: HTTP on a free port, or stdio.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";

import { TaskQueueClient, type ConnectOptions } from "mcp-taskqueue";

export const REPO = resolve(fileURLToPath(new URL("../../..", import.meta.url)));
export const PYTHON = process.env["TASKQUEUE_PYTHON"] ?? join(REPO, ".venv", "bin", "python");

/** `mcp-taskqueue --db DB serve` as a command for the stdio transport. */
export function serveCommand(db: string): { command: string; args: string[]; stderr: "ignore" } {
  return { command: PYTHON, args: ["-m", "mcp_taskqueue.cli", "--db", db, "serve"], stderr: "ignore" };
}

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "tq-ts-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/** A running `serve --transport http` process; `restart()` stops it and starts it again on the same port and file. */
export class HttpServer {
  readonly db: string;
  readonly port: number;
  private proc: ChildProcess | undefined;
  private stderr = "";

  private constructor(db: string, port: number) {
    this.db = db;
    this.port = port;
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `${this.base}/mcp`;
  }

  static async start(db: string): Promise<HttpServer> {
    const server = new HttpServer(db, await freePort());
    await server.launch();
    return server;
  }

  private async launch(): Promise<void> {
    this.stderr = "";
    const proc = spawn(
      PYTHON,
      ["-m", "mcp_taskqueue.cli", "--db", this.db, "serve", "--transport", "http", "--port", String(this.port)],
      { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, PYTHONUNBUFFERED: "1" } },
    );
    proc.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.proc = proc;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`server exited early: ${this.stderr}`);
      try {
        const response = await fetch(`${this.base}/healthz`);
        if (response.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`server on ${this.base} did not become healthy: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc === undefined || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }
}

/** Poll `check` until it returns a value other than undefined (generous deadline: the machine is loaded). */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`condition not met in ${ms} ms; last error: ${String(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface ServerContext {
  /** The test's temporary directory (the server's file is tasks.db in it). */
  dir: string;
  server: HttpServer;
  /** A client connected to `server`. */
  tq: TaskQueueClient;
}

/** For the surrounding suite: a server on a fresh file and a client connected to it, closed afterwards. */
export function withServer(options: ConnectOptions = {}, cleanup?: () => Promise<void>): ServerContext {
  const tmp = tempDir();
  const ctx = { dir: tmp.dir } as ServerContext;
  before(async () => {
    ctx.server = await HttpServer.start(join(tmp.dir, "tasks.db"));
    ctx.tq = await TaskQueueClient.connect(ctx.server.url, options);
  });
  after(async () => {
    await ctx.tq?.close();
    await ctx.server?.stop();
    await cleanup?.();
    tmp.cleanup();
  });
  return ctx;
}

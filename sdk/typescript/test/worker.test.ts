// The Worker against the real server: draining 200 tasks with 4 handlers at once, failures,
// a lease lost mid-handler, shutdown by AbortSignal and by SIGTERM releasing held tasks.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { PermanentError, Worker, type Task } from "mcp-taskqueue";
import { eventually, withServer } from "./server.ts";

const quiet = { log: () => undefined, handleSignals: false };

describe("Worker", () => {
  const ctx = withServer();

  test("drains 200 tasks with 4 concurrent handlers", async () => {
    const tasks = Array.from({ length: 200 }, (_, i) => ({
      title: `job ${i}`,
      project: "drain",
      kind: "square",
      payload: { n: i },
    }));
    await ctx.tq.createTasks({ tasks });
    let running = 0;
    let peak = 0;
    const seen = new Set<string>();
    const worker = new Worker(ctx.tq, {
      ...quiet,
      name: "drainer",
      concurrency: 4,
      project: "drain",
      stopWhenIdle: true,
      pollMs: 100,
    }).handle("square", async (task: Task) => {
      assert.ok(!seen.has(task.id), "no task is handed out twice");
      seen.add(task.id);
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      const n = (task.payload as { n: number }).n;
      return { square: n * n };
    });
    const stats = await worker.run();
    assert.equal(stats.completed, 200);
    assert.equal(stats.failed + stats.lost + stats.released, 0);
    assert.ok(peak <= 4, `never more than 4 handlers at once (saw ${peak})`);
    assert.ok(peak >= 2, `handlers overlapped (saw ${peak})`);
    const q = await ctx.tq.queueStats({ project: "drain" });
    assert.equal(q.by_status["completed"], 200);
    const page = await ctx.tq.listTasks({ project: "drain", status: "completed", limit: 200 });
    const one = await ctx.tq.getTask({ task_id: page.tasks[7]?.id ?? "" });
    const n = (one.payload as { n: number }).n;
    assert.deepEqual(one.result, { square: n * n });
    assert.ok(one.worker?.startsWith("drainer-"), "slots are named <name>-<i>");
  });

  test("keeps working through a server restart", async () => {
    await ctx.tq.createTasks({
      tasks: Array.from({ length: 30 }, (_, i) => ({ title: `r${i}`, project: "restart", kind: "slowish" })),
    });
    let done = 0;
    let restarted: Promise<void> | undefined;
    const worker = new Worker(ctx.tq, {
      ...quiet,
      name: "survivor",
      concurrency: 2,
      project: "restart",
      stopWhenIdle: true,
      pollMs: 100,
      leaseSeconds: 3,
    }).handle("slowish", async () => {
      await new Promise((r) => setTimeout(r, 30));
      if (++done === 10) restarted = ctx.server.restart();
      return { ok: true };
    });
    const stats = await worker.run();
    await restarted;
    const q = await ctx.tq.queueStats({ project: "restart" });
    assert.equal(q.by_status["completed"], 30, JSON.stringify({ stats, q }));
    assert.ok(stats.completed >= 20, `most outcomes were recorded (${JSON.stringify(stats)})`);
  });

  test("a handler's error fails the attempt: retryable, or for good with PermanentError", async () => {
    const flaky = await ctx.tq.createTask({ title: "flaky", project: "fail", kind: "flaky", max_attempts: 3 });
    const broken = await ctx.tq.createTask({ title: "broken", project: "fail", kind: "broken", max_attempts: 3 });
    const worker = new Worker(ctx.tq, { ...quiet, project: "fail", maxTasks: 2, pollMs: 100 })
      .handle("flaky", () => {
        throw new Error("try again later");
      })
      .handle("broken", () => {
        throw new PermanentError("bad input");
      });
    const stats = await worker.run();
    assert.equal(stats.failed, 2);
    const f = await ctx.tq.getTask({ task_id: flaky.id });
    assert.notEqual(f.status, "failed", "a retryable failure with attempts left is retried");
    assert.equal(f.attempts, 1);
    assert.match(f.error ?? "", /try again later/);
    const b = await ctx.tq.getTask({ task_id: broken.id });
    assert.equal(b.status, "failed");
    assert.match(b.error ?? "", /PermanentError: bad input/);
  });

  test("a lease lost mid-handler aborts the handler and discards its result", async () => {
    const task = await ctx.tq.createTask({ title: "slow", project: "lost", kind: "slow" });
    let abortedWith: unknown;
    const worker = new Worker(ctx.tq, {
      ...quiet,
      name: "slowpoke",
      project: "lost",
      leaseSeconds: 1,
      heartbeatMs: 2500,
      maxTasks: 1,
    });
    worker.handle("slow", async (_t, job) => {
      // the lease (1 s) runs out long before the first heartbeat (2.5 s); another worker takes the task
      await new Promise<void>((resolve) => job.signal.addEventListener("abort", () => resolve(), { once: true }));
      abortedWith = job.signal.reason;
      return { from: "slowpoke" };
    });
    const running = worker.run();
    const stolen = await eventually(async () => {
      const claim = await ctx.tq.claimTask({ worker: "thief", project: "lost" });
      return claim.task ? claim : undefined;
    });
    assert.equal(stolen.task?.id, task.id);
    await ctx.tq.completeTask({
      task_id: task.id,
      worker: "thief",
      result: { from: "thief" },
      lease_id: stolen.task?.lease_id ?? "",
    });
    worker.stop();
    await eventually(() => (worker.stats.lost === 1 ? true : undefined));
    worker.shutdown();
    const stats = await running;
    assert.equal(stats.lost, 1);
    assert.equal(stats.completed, 0);
    assert.equal((abortedWith as { code?: string }).code, "lease_lost");
    const final = await ctx.tq.getTask({ task_id: task.id });
    assert.equal(final.status, "completed");
    assert.deepEqual(final.result, { from: "thief" }, "the late worker's result did not overwrite the thief's");
  });

  test("shutdown by AbortSignal releases the held task without using an attempt", async () => {
    const task = await ctx.tq.createTask({ title: "long", project: "stop", kind: "long" });
    const controller = new AbortController();
    let started = false;
    const worker = new Worker(ctx.tq, { ...quiet, name: "stopper", project: "stop", signal: controller.signal }).handle(
      "long",
      async (_t, job) => {
        started = true;
        await new Promise((resolve) => job.signal.addEventListener("abort", resolve, { once: true }));
      },
    );
    const running = worker.run();
    await eventually(() => (started ? true : undefined));
    assert.deepEqual(worker.holding, [task.id]);
    controller.abort();
    const stats = await running;
    assert.equal(stats.released, 1);
    const after = await ctx.tq.getTask({ task_id: task.id });
    assert.equal(after.status, "ready");
    assert.equal(after.worker, undefined);
    assert.equal(after.attempts, 0, "a released task keeps its attempts");
  });

  test("SIGTERM makes a worker process release its task and exit cleanly", async () => {
    const task = await ctx.tq.createTask({ title: "sig", project: "sig", kind: "long" });
    const script = fileURLToPath(new URL("./fixtures/sigterm-worker.ts", import.meta.url));
    const child = spawn(process.execPath, [script, ctx.server.url], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    await eventually(async () =>
      (await ctx.tq.getTask({ task_id: task.id })).status === "running" ? true : undefined,
    );
    await eventually(() => (output.includes("handling") ? true : undefined));
    child.kill("SIGTERM");
    assert.equal(await exited, 0, output);
    assert.match(output, /released=1/);
    const after = await ctx.tq.getTask({ task_id: task.id });
    assert.equal(after.status, "ready");
    assert.equal(after.attempts, 0);
  });
});

// The typed client against the real server over streamable HTTP: a task's life, errors, batches, workflows.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Conflict,
  InvalidTransition,
  LeaseLost,
  NotFound,
  TaskQueueError,
  TaskSchema,
  ValidationFailed,
  ToolFailed,
  UnknownTool,
  errorFromToolText,
  type ClaimTaskResult,
  isRepeatSafe,
} from "mcp-taskqueue";
import { eventually, withServer } from "./server.ts";

describe("client over streamable HTTP", () => {
  const ctx = withServer({ clientName: "ts-test" });

  test("a task's whole life: create, claim, heartbeat, complete", async () => {
    const created = await ctx.tq.createTask({
      title: "Write the docs",
      project: "life",
      priority: "high",
      payload: { n: 1 },
    });
    assert.equal(created.status, "ready");
    const claim = await ctx.tq.claimTask({ worker: "w1", project: "life", lease_seconds: 30 });
    assert.ok(claim.task);
    assert.equal(claim.task.id, created.id);
    assert.equal(claim.task.status, "running");
    assert.deepEqual(claim.task.payload, { n: 1 });
    const lease = { task_id: created.id, worker: "w1", ...leaseOf(claim) };
    const beat = await ctx.tq.heartbeat({ ...lease, progress: 0.5, message: "half way" });
    assert.equal(beat.progress, 0.5);
    const done = await ctx.tq.completeTask({ ...lease, result: { pages: 3 } });
    assert.equal(done.status, "completed");
    const task = await ctx.tq.getTask({ task_id: created.id });
    assert.equal(task.status, "completed");
    assert.deepEqual(task.result, { pages: 3 });
    assert.equal(task.attempts, 1);
    const history = await ctx.tq.readResource<{ events: Array<{ actor?: string }> }>(
      `taskqueue://tasks/${created.id}/history`,
    );
    assert.ok(
      history.events.some((e) => e.actor === "ts-test"),
      "the client's name is the actor in the history",
    );
    const empty = await ctx.tq.claimTask({ worker: "w1", project: "life" });
    assert.equal(empty.task, null);
  });

  test("tool errors arrive as typed errors", async () => {
    await assert.rejects(
      ctx.tq.getTask({ task_id: "nope" }),
      (e: unknown) => e instanceof NotFound && e.tool === "get_task",
    );
    await assert.rejects(
      ctx.tq.createTask({ title: "x", priority: "urgent" as "high" }),
      (e: unknown) => e instanceof ValidationFailed && /priority/.test(e.message),
    );
    const t = await ctx.tq.createTask({ title: "held", project: "errors" });
    const claim = await ctx.tq.claimTask({ worker: "owner", project: "errors" });
    await assert.rejects(
      ctx.tq.completeTask({ task_id: t.id, worker: "thief", ...leaseOf(claim) }),
      (e: unknown) => e instanceof LeaseLost && e.code === "lease_lost",
    );
    await assert.rejects(
      ctx.tq.updateTask({ task_id: t.id, expected_version: 1, title: "changed" }),
      (e: unknown) => e instanceof Conflict,
    );
    await ctx.tq.completeTask({ task_id: t.id, worker: "owner", ...leaseOf(claim) });
    await assert.rejects(ctx.tq.cancelTask({ task_id: t.id }), (e: unknown) => e instanceof InvalidTransition);
    // every typed error is a TaskQueueError with its code
    const err = errorFromToolText("get_task", "Error executing tool get_task: not_found: no task with id 'x'");
    assert.ok(err instanceof NotFound && err instanceof TaskQueueError && err.code === "not_found");
    assert.ok(errorFromToolText("zap", "Unknown tool: zap") instanceof UnknownTool);
    const newer = errorFromToolText("x", "Error executing tool x: brand_new_kind: something");
    assert.ok(newer instanceof ToolFailed);
    assert.equal(newer.code, "brand_new_kind", "an unknown kind keeps the server's code");
  });

  test("fencing: an old lease_id gets LeaseLost, even from the same worker", async () => {
    const t = await ctx.tq.createTask({ title: "fenced", project: "fence" });
    const first = await ctx.tq.claimTask({ worker: "same", project: "fence", lease_seconds: 1 });
    const old = leaseOf(first);
    await new Promise((r) => setTimeout(r, 1500)); // the lease runs out
    const second = await eventually(async () => {
      const claim = await ctx.tq.claimTask({ worker: "same", project: "fence" });
      return claim.task ? claim : undefined;
    });
    const fresh = leaseOf(second);
    assert.equal(second.task?.id, t.id);
    assert.notEqual(fresh.lease_id, old.lease_id);
    await assert.rejects(
      ctx.tq.completeTask({ task_id: t.id, worker: "same", ...old }),
      (e: unknown) => e instanceof LeaseLost,
    );
    const done = await ctx.tq.completeTask({ task_id: t.id, worker: "same", ...fresh });
    assert.equal(done.status, "completed");
    assert.equal(done.attempts, 2);
  });

  test("results are checked with zod", () => {
    assert.equal(TaskSchema.safeParse({ id: "x" }).success, false);
    const ok = TaskSchema.safeParse({
      id: "x",
      project: "p",
      title: "t",
      status: "ready",
      version: 1,
      created_at: "a",
      updated_at: "b",
      extra: 1,
    });
    assert.ok(ok.success, "unknown fields from a newer server pass");
    assert.equal(
      TaskSchema.safeParse({
        id: "x",
        project: "p",
        title: "t",
        status: "odd",
        version: 1,
        created_at: "a",
        updated_at: "b",
      }).success,
      false,
    );
  });

  test("retries only for read-only, idempotent or keyed calls", () => {
    assert.equal(isRepeatSafe("get_task", { task_id: "x" }), true);
    assert.equal(isRepeatSafe("queue_stats", {}), true);
    assert.equal(isRepeatSafe("cancel_task", { task_id: "x" }), true);
    assert.equal(isRepeatSafe("create_task", { title: "x" }), false);
    assert.equal(isRepeatSafe("create_task", { title: "x", idempotency_key: "k" }), true);
    assert.equal(isRepeatSafe("fail_task", { task_id: "x", worker: "w", error: "e" }), false);
  });

  test("createTasks in chunks with progress; refs resolve across chunks", async () => {
    const specs = Array.from({ length: 1100 }, (_, i) => ({
      title: `item ${i}`,
      project: "batch",
      ref: `r${i}`,
      ...(i > 0 ? { depends_on: [`r${i - 1}`] } : {}),
    }));
    const progress: number[] = [];
    const result = await ctx.tq.createTasks({ tasks: specs }, { onProgress: (p) => progress.push(p.created) });
    assert.deepEqual(progress, [500, 1000, 1100]);
    assert.equal(result.tasks.length, 1100);
    assert.equal(Object.keys(result.refs ?? {}).length, 1100);
    const last = await ctx.tq.getTask({ task_id: result.refs?.["r1099"] ?? "" });
    assert.deepEqual(last.depends_on, [result.refs?.["r1098"]], "a dependency on a ref of an earlier chunk");
    assert.equal(result.tasks[0]?.status, "ready");
    assert.equal(result.tasks[600]?.status, "pending");
    const small = await ctx.tq.createTasks({ tasks: [{ title: "a", project: "batch2" }] }, { chunkSize: 10 });
    assert.equal(small.tasks.length, 1);
  });

  test("a workflow: create, follow, cancel", async () => {
    const wf = await ctx.tq.createWorkflow({
      spec: {
        name: "release",
        project: "wf",
        tasks: [
          { ref: "build", title: "Build" },
          { ref: "test", title: "Test", depends_on: ["build"] },
          { ref: "ship", title: "Ship", depends_on: ["test"] },
        ],
      },
    });
    assert.equal(wf.total, 3);
    const buildId = wf.refs["build"];
    assert.ok(buildId);
    const claim = await ctx.tq.claimTask({ worker: "wfw", project: "wf" });
    assert.equal(claim.task?.id, buildId);
    await ctx.tq.completeTask({ task_id: buildId, worker: "wfw", ...leaseOf(claim) });
    const state = await ctx.tq.getWorkflow({ workflow_id: wf.id });
    assert.equal(state.counts["completed"], 1);
    assert.ok(state.progress > 0 && state.progress < 1);
    assert.deepEqual(
      state.tasks?.filter((t) => t.status === "ready").map((t) => t.id),
      [wf.refs["test"]],
    );
    // the spec is typed from the server's workflow schema: a task without a title does not compile,
    // and the server refuses it anyway
    await assert.rejects(
      // @ts-expect-error -- `title` is required by WorkflowSpecTask
      ctx.tq.createWorkflow({ spec: { name: "bad", project: "wf", tasks: [{ ref: "a" }] } }),
      (e: unknown) => e instanceof ValidationFailed,
    );
    const cancelled = await ctx.tq.cancelWorkflow({ workflow_id: wf.id });
    assert.equal(cancelled.status, "cancelled");
    const ship = await ctx.tq.getTask({ task_id: wf.refs["ship"] ?? "" });
    assert.equal(ship.status, "cancelled");
  });
});

/** The claim's lease token (fencing): every claimed task carries its own. */
function leaseOf(claim: ClaimTaskResult): { lease_id: string } {
  const id = claim.task?.lease_id;
  assert.ok(id, "a claimed task has a lease_id");
  assert.equal(claim.lease_id, id);
  return { lease_id: id };
}

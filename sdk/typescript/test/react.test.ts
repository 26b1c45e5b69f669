// The React hooks in a DOM (happy-dom) against the real server: they render, then follow changes.
import { GlobalRegistrator } from "@happy-dom/global-registrator";
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { eventually, withServer } from "./server.ts";

// a DOM for React, but Node's own networking: happy-dom's fetch would apply a page's CORS rules
const nodeFetch = globalThis.fetch;
GlobalRegistrator.register();
globalThis.fetch = nodeFetch;
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = false;
const { createElement: h } = await import("react");
const { createRoot } = await import("react-dom/client");
const { TaskQueueProvider, useQueueStats, useTask, useTasks, useWorkflow } = await import("mcp-taskqueue/react");

function TaskView(props: { id: string }): ReturnType<typeof h> {
  const { data, loading } = useTask(props.id);
  return h("p", { id: "task" }, loading ? "loading" : `${data?.title}:${data?.status}:${data?.progress ?? 0}`);
}

function StatsView(): ReturnType<typeof h> {
  const { data } = useQueueStats("react");
  return h("p", { id: "stats" }, `done=${data?.by_status["completed"] ?? 0}`);
}

function ListView(): ReturnType<typeof h> {
  const { data } = useTasks({ project: "react", status: "ready" });
  return h(
    "ul",
    { id: "list" },
    (data?.tasks ?? []).map((t) => h("li", { key: t.id }, t.title)),
  );
}

function WorkflowView(props: { id: string }): ReturnType<typeof h> {
  const { data } = useWorkflow(props.id);
  return h("p", { id: "workflow" }, data ? `${data.status}:${Math.round(data.progress * 100)}` : "");
}

describe("React hooks stay live", () => {
  const ctx = withServer({}, () => GlobalRegistrator.unregister());

  test("useTask, useTasks, useQueueStats and useWorkflow follow the server", async () => {
    const task = await ctx.tq.createTask({ title: "render me", project: "react", priority: "critical" });
    const wf = await ctx.tq.createWorkflow({
      spec: {
        name: "ui",
        project: "react",
        tasks: [
          { ref: "a", title: "A" },
          { ref: "b", title: "B", depends_on: ["a"] },
        ],
      },
    });
    const container = document.createElement("div");
    document.body.appendChild(container);
    const root = createRoot(container);
    root.render(
      h(
        TaskQueueProvider,
        { client: ctx.tq },
        h(TaskView, { id: task.id }),
        h(StatsView),
        h(ListView),
        h(WorkflowView, { id: wf.id }),
      ),
    );
    const text = (id: string): string => document.getElementById(id)?.textContent ?? "";
    await eventually(() => (text("task") === "render me:ready:0" ? true : undefined));
    await eventually(() => (text("list").includes("render me") && text("list").includes("A") ? true : undefined));
    await eventually(() => (text("workflow") === "running:0" || text("workflow") === "pending:0" ? true : undefined));

    // another client works the task: the components follow
    const claim = await ctx.tq.claimTask({ worker: "ui", project: "react", kinds: ["task"] });
    const claimed = claim.task;
    assert.equal(claimed?.id, task.id, "the critical task is claimed first");
    assert.ok(claimed);
    const held = { task_id: claimed.id, worker: "ui", lease_id: claimed.lease_id ?? "" };
    await ctx.tq.heartbeat({ ...held, progress: 0.5 });
    await eventually(() => (text("task") === "render me:running:0.5" ? true : undefined));
    await ctx.tq.completeTask(held);
    await eventually(() => (text("stats") === "done=1" ? true : undefined));
    // finish the workflow's tasks: its progress reaches 100
    for (;;) {
      const next = await ctx.tq.claimTask({ worker: "ui", project: "react" });
      if (!next.task) break;
      await ctx.tq.completeTask({ task_id: next.task.id, worker: "ui", lease_id: next.task.lease_id ?? "" });
    }
    await eventually(() => (text("workflow") === "completed:100" ? true : undefined));
    await eventually(() => (text("task").startsWith("render me:completed:") ? true : undefined));
    assert.equal(text("list"), "", "no ready tasks left");
    root.unmount();
  });
});

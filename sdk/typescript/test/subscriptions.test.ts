// Resource subscriptions, and what happens when the server goes away: over HTTP (restart on the
// same port and file) and over stdio (the spawned server is killed and spawned again).
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { TaskQueueClient, TransportFailed, type ConnectionEvent } from "mcp-taskqueue";
import { HttpServer, eventually, serveCommand, tempDir } from "./server.ts";

describe("subscriptions and reconnects over HTTP", () => {
  const tmp = tempDir();
  let server: HttpServer;
  let watcher: TaskQueueClient;
  let writer: TaskQueueClient;
  const events: ConnectionEvent[] = [];

  before(async () => {
    server = await HttpServer.start(join(tmp.dir, "tasks.db"));
    watcher = await TaskQueueClient.connect(server.url, {
      keepAliveMs: 500,
      backoffMs: 100,
      maxBackoffMs: 1000,
      onConnectionEvent: (e) => events.push(e),
    });
    writer = await TaskQueueClient.connect(server.url, { backoffMs: 100, retries: 8 });
  });
  after(async () => {
    await watcher?.close();
    await writer?.close();
    await server?.stop();
    tmp.cleanup();
  });

  test("a subscriber hears about changes made by another client", async () => {
    const task = await writer.createTask({ title: "watched", project: "subs" });
    const heard: string[] = [];
    const off = await watcher.subscribe(`taskqueue://tasks/${task.id}`, (uri) => heard.push(uri));
    await writer.addNote({ task_id: task.id, text: "first" });
    await eventually(() => (heard.length > 0 ? true : undefined));
    assert.equal(heard[0], `taskqueue://tasks/${task.id}`);
    await off();
    const count = heard.length;
    await writer.addNote({ task_id: task.id, text: "after unsubscribe" });
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(heard.length, count, "no news after unsubscribing");
  });

  test("after a server restart: calls reconnect, subscriptions are renewed", async () => {
    const task = await writer.createTask({ title: "survivor", project: "restart" });
    const heard: string[] = [];
    await watcher.subscribe(`taskqueue://tasks/${task.id}`, (uri) => heard.push(uri));
    let stats = 0;
    await watcher.subscribe("taskqueue://stats", () => stats++);
    await server.restart();
    // no call needed: the keep-alive notices the dead session and reconnects by itself
    await eventually(() => (events.some((e) => e.type === "connected" && e.generation > 1) ? true : undefined));
    const again = await watcher.getTask({ task_id: task.id });
    assert.equal(again.title, "survivor");
    const before = heard.length;
    await writer.addNote({ task_id: task.id, text: "after the restart" });
    await eventually(() => (heard.length > before ? true : undefined));
    assert.ok(stats > 0, "the stats subscription was renewed too");
    assert.ok(
      events.some((e) => e.type === "lost"),
      "the loss was reported",
    );
  });

  test("a call that is not safe to repeat is not repeated when the connection breaks", async () => {
    const client = await TaskQueueClient.connect(server.url, { retries: 1, backoffMs: 50 });
    try {
      await server.stop();
      await assert.rejects(client.createTask({ title: "never twice" }), (e: unknown) => e instanceof TransportFailed);
    } finally {
      await server.restart();
      await client.close();
    }
    const page = await writer.listTasks({ query: "twice" });
    assert.equal(page.tasks.length, 0, "nothing was created behind our back");
  });
});

describe("stdio transport", () => {
  const tmp = tempDir();
  let tq: TaskQueueClient;

  before(async () => {
    tq = await TaskQueueClient.connect(serveCommand(join(tmp.dir, "stdio.db")), { backoffMs: 100 });
  });
  after(async () => {
    await tq?.close();
    tmp.cleanup();
  });

  test("a task's life over stdio, and a new server process after the old one died", async () => {
    const task = await tq.createTask({ title: "over stdio", project: "stdio" });
    const claim = await tq.claimTask({ worker: "sw", project: "stdio" });
    assert.equal(claim.task?.id, task.id);
    const done = await tq.completeTask({
      task_id: task.id,
      worker: "sw",
      result: 42,
      lease_id: claim.task?.lease_id ?? "",
    });
    assert.equal(done.status, "completed");
    const firstPid = await tq.serverPid;
    assert.ok(firstPid);
    process.kill(firstPid, "SIGKILL");
    const again = await tq.getTask({ task_id: task.id });
    assert.equal(again.result, 42);
    const secondPid = await tq.serverPid;
    assert.notEqual(secondPid, firstPid, "a new server process was spawned");
  });
});

/**
 * mcp-taskqueue: a typed client and worker for the mcp-taskqueue MCP server.
 *
 *     import { TaskQueueClient, Worker } from "mcp-taskqueue";
 *     const tq = await TaskQueueClient.connect("http://127.0.0.1:8765/mcp", { token });
 *     const task = await tq.createTask({ title: "Write the docs" });
 */
export * from "./generated.js";
export * from "./errors.js";
export {
  TaskQueueClient,
  errorFromToolText,
  isConnectionFailure,
  isRepeatSafe,
  type CallOptions,
  type ConnectOptions,
  type ConnectionEvent,
  type CreateTasksOptions,
  type ResourceListener,
  type Target,
} from "./client.js";
export type { StdioTarget } from "./stdio.js";
export { Worker, PermanentError, type Handler, type Job, type WorkerOptions, type WorkerStats } from "./worker.js";
export { backoffDelay } from "./backoff.js";

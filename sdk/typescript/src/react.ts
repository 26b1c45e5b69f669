/**
 * mcp-taskqueue/react: hooks that keep a component in step with the queue. Each loads through a
 * tool call and loads again whenever the server notifies a change of the matching resource
 * (subscriptions survive reconnects).
 *
 *     <TaskQueueProvider client={tq}><Board /></TaskQueueProvider>
 *     const { data: task } = useTask(id);
 */
import { createContext, createElement, useContext, useEffect, useState, type ReactNode } from "react";

import type { TaskQueueClient } from "./client.js";
import type {
  GetWorkflowResult,
  ListTasksArgs,
  ListTasksResult,
  QueueStatsResult,
  ResourceUri,
  Task,
} from "./generated.js";

const ClientContext = createContext<TaskQueueClient | null>(null);

/** Makes `client` the one the hooks below use. */
export function TaskQueueProvider(props: { client: TaskQueueClient; children?: ReactNode }): ReactNode {
  return createElement(ClientContext.Provider, { value: props.client }, props.children);
}

/** The client of the nearest TaskQueueProvider (or the one passed in). */
export function useTaskQueueClient(client?: TaskQueueClient): TaskQueueClient {
  const fromContext = useContext(ClientContext);
  const found = client ?? fromContext;
  if (found === null) throw new Error("wrap the component in <TaskQueueProvider client={...}> or pass a client");
  return found;
}

export interface Live<T> {
  /** The latest value (undefined until the first load). */
  data: T | undefined;
  /** The latest load's error (cleared by the next successful load). */
  error: unknown;
  /** True until the first load finished. */
  loading: boolean;
}

export interface HookOptions {
  client?: TaskQueueClient;
}

/** `load` now and whenever one of `uris` changes; `key` says when to start over. */
export function useLive<T>(
  client: TaskQueueClient,
  uris: ResourceUri[] | null,
  load: () => Promise<T>,
  key: string,
): Live<T> {
  const [state, setState] = useState<Live<T>>({ data: undefined, error: undefined, loading: uris !== null });
  useEffect(() => {
    if (uris === null) {
      setState({ data: undefined, error: undefined, loading: false });
      return undefined;
    }
    setState((s) => ({ ...s, loading: true }));
    return client.live(
      uris,
      load,
      (data) => setState({ data, error: undefined, loading: false }),
      (error) => setState((s) => ({ ...s, error, loading: false })),
    );
    // `key` stands for uris and load: they are new objects on every render
  }, [client, key]);
  return state;
}

/** One task, live (`taskqueue://tasks/{id}`). Pass undefined to load nothing. */
export function useTask(taskId: string | undefined, options: HookOptions = {}): Live<Task> {
  const client = useTaskQueueClient(options.client);
  const uris: ResourceUri[] | null = taskId === undefined ? null : [`taskqueue://tasks/${taskId}`];
  return useLive(client, uris, () => client.getTask({ task_id: taskId ?? "" }), `task:${taskId ?? ""}`);
}

/** One page of `list_tasks`, live: it reloads when a task of the project (or any task) changes. */
export function useTasks(filters: ListTasksArgs = {}, options: HookOptions = {}): Live<ListTasksResult> {
  const client = useTaskQueueClient(options.client);
  const uri: ResourceUri = filters.project ? `taskqueue://projects/${filters.project}` : "taskqueue://stats";
  return useLive(client, [uri], () => client.listTasks(filters), `tasks:${JSON.stringify(filters)}`);
}

/** A workflow with its tasks, live (`taskqueue://workflows/{id}`). */
export function useWorkflow(workflowId: string | undefined, options: HookOptions = {}): Live<GetWorkflowResult> {
  const client = useTaskQueueClient(options.client);
  const uris: ResourceUri[] | null = workflowId === undefined ? null : [`taskqueue://workflows/${workflowId}`];
  return useLive(
    client,
    uris,
    () => client.getWorkflow({ workflow_id: workflowId ?? "" }),
    `workflow:${workflowId ?? ""}`,
  );
}

/** Queue statistics (of one project, or all), live. */
export function useQueueStats(project?: string, options: HookOptions = {}): Live<QueueStatsResult> {
  const client = useTaskQueueClient(options.client);
  const uri: ResourceUri = project ? `taskqueue://projects/${project}` : "taskqueue://stats";
  return useLive(
    client,
    [uri],
    () => client.queueStats(project === undefined ? {} : { project }),
    `stats:${project ?? ""}`,
  );
}

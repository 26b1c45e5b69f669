/**
 * `TaskQueueClient`: one typed method per server tool (generated), over streamable HTTP (Node and
 * browsers) or stdio (Node). Results are checked with zod; tool errors become typed errors; calls
 * that are safe to repeat are retried with backoff when the connection breaks; resource
 * subscriptions survive reconnects (they are renewed on the new connection).
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode, McpError, ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

import { backoffDelay, sleep } from "./backoff.js";
import { InvalidOutput, TaskQueueError, ToolFailed, TransportFailed, Unauthorized, UnknownTool } from "./errors.js";
import {
  ERROR_CLASSES,
  MAX_BATCH,
  RateLimited,
  SERVER_VERSION,
  TOOLS,
  ToolMethods,
  ValidationFailed,
  NotFound,
  type CallOptionsBase,
  type CreateTasksArgs,
  type CreateTasksResult,
  type ResourceUri,
  type TaskSpec,
  type ToolName,
  type ToolTypes,
} from "./generated.js";
import { stdioTransport, type StdioTarget } from "./stdio.js";

/** Where the server is: an `http(s)://host:port/mcp` URL, a command to spawn (Node), or a transport factory. */
export type Target = string | URL | StdioTarget | (() => Transport);

export interface ConnectOptions {
  /** Bearer token sent as `Authorization: Bearer <token>` (HTTP; in Node, default $TASKQUEUE_TOKEN). */
  token?: string;
  /** Extra HTTP headers. */
  headers?: Record<string, string>;
  /** The client's name, recorded as the actor in task history (default "mcp-taskqueue-ts"). */
  clientName?: string;
  /** Retries of a broken connection or a safe call (default 4). */
  retries?: number;
  /** First backoff delay, ms (default 250); it doubles per retry up to `maxBackoffMs` (default 5000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Timeout of one request, ms (default 60000). */
  timeoutMs?: number;
  /** While subscriptions are open, how often the connection is checked, ms (default 5000). */
  keepAliveMs?: number;
  /** Check results against the tools' output schemas with zod (default true). */
  validate?: boolean;
  /** Told about connection trouble that the client handles by itself (lost, reconnected). */
  onConnectionEvent?: (event: ConnectionEvent) => void;
}

export type ConnectionEvent =
  | { type: "connected"; generation: number }
  | { type: "lost"; error: unknown }
  | { type: "reconnect_failed"; error: unknown; attempt: number };

export interface CallOptions extends CallOptionsBase {
  /** Override the client's request timeout for this call, ms. */
  timeoutMs?: number;
}

/** `createTasks` with more than one chunk: progress after each chunk is created. */
export interface CreateTasksOptions extends CallOptions {
  /** Tasks per create_tasks call (default and maximum: MAX_BATCH). Each chunk is atomic. */
  chunkSize?: number;
  onProgress?: (progress: { created: number; total: number }) => void;
}

/** Called when a subscribed resource changed (or may have: after a reconnect). */
export type ResourceListener = (uri: string) => void;

interface Connection {
  client: Client;
  transport: Transport;
  generation: number;
}

/** How long a subscriber waits for the server's event stream to open before it counts as listening. */
const LISTEN_WAIT_MS = 10_000;

/**
 * Streamable HTTP pushes `resources/updated` on the GET event stream, which the MCP SDK opens in the
 * background after `initialize`; the server drops what it sends before that stream exists. So a
 * subscription counts only once the stream answered: `listening` settles on the first GET response.
 */
const listening = new WeakMap<Transport, Promise<void>>();

/** Wait (bounded) until the connection's event stream is open; stdio and custom transports are at once. */
async function untilListening(conn: Connection): Promise<void> {
  const heard = listening.get(conn.transport);
  if (heard === undefined) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([heard, new Promise<void>((resolve) => (timer = setTimeout(resolve, LISTEN_WAIT_MS)))]);
  clearTimeout(timer);
}

// "Error executing tool claim_task: lease_lost: ..." -> tool, code, message
const TOOL_ERROR = /^Error executing tool (?<tool>[\w.-]+): (?:(?<code>[a-z_]+): )?(?<message>[\s\S]*)$/;

/** A tool error's text -> the typed error it stands for. */
export function errorFromToolText(tool: string, text: string): TaskQueueError {
  const trimmed = text.trim();
  if (trimmed.startsWith("Unknown tool")) {
    return new UnknownTool(`the server has no tool ${tool} (is its toolset enabled?)`, tool);
  }
  const match = TOOL_ERROR.exec(trimmed);
  const code = match?.groups?.["code"];
  const message = match?.groups?.["message"] ?? trimmed;
  const cls = code === undefined ? undefined : ERROR_CLASSES[code];
  if (cls !== undefined) return new cls(message, tool);
  if (/validation error/i.test(trimmed)) return new ValidationFailed(message, tool);
  // a kind newer than this client: keep the server's code, so callers can still tell it apart
  return new ToolFailed(trimmed, tool, code === undefined ? {} : { code });
}

/** Failures that mean "the connection is broken" (so: reconnect, and maybe retry). */
export function isConnectionFailure(error: unknown): boolean {
  if (error instanceof TaskQueueError) return error instanceof TransportFailed;
  if (error instanceof StreamableHTTPError) {
    // 404: the server forgot our session (it restarted); 5xx and no status: it is away
    return error.code === undefined || error.code === 404 || error.code >= 500;
  }
  if (error instanceof McpError) {
    return error.code === (ErrorCode.ConnectionClosed as number) || error.code === (ErrorCode.RequestTimeout as number);
  }
  if (error instanceof TypeError) return true; // fetch: "fetch failed", "Failed to fetch", "NetworkError"
  if (error instanceof Error) {
    const text = `${error.message} ${String((error as { code?: unknown }).code ?? "")}`;
    return /ECONNREFUSED|ECONNRESET|EPIPE|ENOTCONN|socket hang up|Not connected|closed|terminated/i.test(text);
  }
  return false;
}

function isAbort(error: unknown, signal: AbortSignal | undefined): boolean {
  return (
    signal?.aborted === true && (error === signal.reason || (error instanceof Error && error.name === "AbortError"))
  );
}

/** Errors of the HTTP layer that are refusals rather than breakage. */
function refusal(error: unknown, what: string): TaskQueueError | undefined {
  if (!(error instanceof StreamableHTTPError) && !(error instanceof Error && error.name === "UnauthorizedError")) {
    return undefined;
  }
  const code = error instanceof StreamableHTTPError ? error.code : 401;
  const forbidden = ERROR_CLASSES["forbidden"]; // the server's own kind, when it has one
  if (code === 403 && forbidden !== undefined) {
    return new forbidden(`${what}: the token may not do this (HTTP 403)`, what);
  }
  if (code === 401 || code === 403) {
    return new Unauthorized(`${what}: the server refused the credentials (HTTP ${code}); pass a valid token`, what, {
      cause: error,
    });
  }
  if (code === 429) return new RateLimited(`${what}: too many requests (HTTP 429)`, what, { cause: error });
  return undefined;
}

/** $TASKQUEUE_TOKEN in Node (as the Python client and CLI read it); nothing in a browser. */
function envToken(): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.["TASKQUEUE_TOKEN"];
}

function textOf(content: unknown): string {
  return (content as Array<{ type: string; text?: string }>)
    .map((part) => (part.type === "text" ? (part.text ?? "") : ""))
    .join("");
}

function dropUndefined(args: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(args).filter(([, value]) => value !== undefined));
}

/** A call that doing twice cannot do twice: read-only or idempotent by its annotations, or carrying an idempotency key. */
export function isRepeatSafe(tool: ToolName, args: object): boolean {
  const meta = TOOLS[tool];
  return (
    meta.readOnly || meta.idempotent || typeof (args as { idempotency_key?: unknown }).idempotency_key === "string"
  );
}

export class TaskQueueClient extends ToolMethods<CallOptions> {
  readonly target: Target;
  readonly options: ConnectOptions;
  private conn: Promise<Connection> | undefined;
  private generation = 0;
  private closed = false;
  private readonly subscriptions = new Map<string, Set<ResourceListener>>();
  private keepAlive: ReturnType<typeof setInterval> | undefined;
  private reviving: Promise<void> | undefined;

  /** Prefer `await TaskQueueClient.connect(target, options)`, which also opens the connection. */
  constructor(target: Target, options: ConnectOptions = {}) {
    super();
    this.target = target;
    this.options = options;
  }

  /** Connect to a server: `await TaskQueueClient.connect("http://127.0.0.1:8765/mcp", { token })`,
   * or in Node `await TaskQueueClient.connect({ command: "mcp-taskqueue", args: ["serve"] })`.
   * Throws `TransportFailed` when the server cannot be reached after the retries. */
  static async connect(target: Target, options: ConnectOptions = {}): Promise<TaskQueueClient> {
    const client = new TaskQueueClient(target, options);
    await client.connection();
    return client;
  }

  /** True when a connection is open right now. */
  get connected(): boolean {
    return this.conn !== undefined && !this.closed;
  }

  /** The process id of the stdio server, when the client spawned one. */
  get serverPid(): Promise<number | null> {
    return this.connection().then((c) => (c.transport as { pid?: number | null }).pid ?? null);
  }

  /** The underlying MCP SDK client, for anything this class does not wrap. */
  async mcp(): Promise<Client> {
    return (await this.connection()).client;
  }

  private makeTransport(): Transport {
    const target = this.target;
    if (typeof target === "function") return target();
    if (typeof target === "string" || target instanceof URL) {
      // a relative URL ("/mcp") is relative to the page, in a browser
      const url = new URL(String(target), (globalThis as { location?: { href: string } }).location?.href);
      if (url.pathname === "/" || url.pathname === "") url.pathname = "/mcp";
      const headers: Record<string, string> = { ...this.options.headers };
      const token = this.options.token ?? envToken();
      if (token) headers["Authorization"] = `Bearer ${token}`;
      let answered: () => void = () => undefined;
      const heard = new Promise<void>((resolve) => (answered = resolve));
      const transport = new StreamableHTTPClientTransport(url, {
        requestInit: { headers },
        fetch: async (input, init) => {
          const response = await globalThis.fetch(input, init);
          if (init?.method === "GET") answered();
          return response;
        },
        // our own reconnect (with re-subscribe) takes over when the event stream cannot be resumed
        reconnectionOptions: {
          initialReconnectionDelay: 250,
          maxReconnectionDelay: 2000,
          reconnectionDelayGrowFactor: 2,
          maxRetries: 2,
        },
      });
      listening.set(transport, heard);
      return transport;
    }
    return stdioTransport(target);
  }

  private describeTarget(): string {
    const t = this.target;
    if (typeof t === "function") return "a custom transport";
    if (typeof t === "string" || t instanceof URL) return String(t);
    return [t.command, ...(t.args ?? [])].join(" ");
  }

  /** The open connection, opening one (with retries and backoff) when there is none. */
  private connection(): Promise<Connection> {
    if (this.closed) return Promise.reject(new TransportFailed("the client is closed"));
    if (this.conn === undefined) {
      const opening = this.open();
      this.conn = opening;
      opening.catch(() => {
        if (this.conn === opening) this.conn = undefined;
      });
    }
    return this.conn;
  }

  private async open(): Promise<Connection> {
    const retries = this.options.retries ?? 4;
    for (let attempt = 0; ; attempt++) {
      const transport = this.makeTransport();
      const client = new Client(
        { name: this.options.clientName ?? "mcp-taskqueue-ts", version: SERVER_VERSION },
        { capabilities: {} },
      );
      try {
        await client.connect(transport, { timeout: this.options.timeoutMs ?? 60_000 });
      } catch (error) {
        await client.close().catch(() => undefined);
        const refused = refusal(error, "connect");
        if (refused !== undefined) throw refused;
        if (!isConnectionFailure(error) || attempt >= retries || this.closed) {
          throw new TransportFailed(
            `cannot reach the server at ${this.describeTarget()}: ${String(error)}`,
            undefined,
            {
              cause: error,
            },
          );
        }
        await sleep(backoffDelay(attempt, this.options));
        continue;
      }
      const conn: Connection = { client, transport, generation: ++this.generation };
      client.setNotificationHandler(ResourceUpdatedNotificationSchema, (note) => {
        this.notify(note.params.uri);
      });
      client.onclose = () => this.lost(conn, new TransportFailed("the connection closed"));
      client.onerror = (error) => {
        // the event stream could not be resumed, or the server forgot the session: start afresh
        if (error instanceof StreamableHTTPError ? error.code === 404 : /reconnect|disconnected/i.test(error.message)) {
          this.lost(conn, error);
        }
      };
      this.options.onConnectionEvent?.({ type: "connected", generation: conn.generation });
      if (conn.generation > 1 && this.subscriptions.size > 0) await this.renew(conn);
      return conn;
    }
  }

  /** Forget a broken connection (once, however many callers noticed); reconnect at once when
   * subscriptions are waiting for news, else on the next call. */
  private lost(conn: Connection, error: unknown): void {
    void this.conn?.then(
      (current) => {
        if (current !== conn) return;
        this.conn = undefined;
        this.options.onConnectionEvent?.({ type: "lost", error });
        void conn.client.close().catch(() => undefined);
        if (this.subscriptions.size > 0) void this.revive();
      },
      () => undefined,
    );
  }

  /** Keep reconnecting (backoff capped at maxBackoffMs) until connected or closed. */
  private revive(): Promise<void> {
    this.reviving ??= (async () => {
      for (let attempt = 0; !this.closed && this.subscriptions.size > 0; attempt++) {
        try {
          await this.connection();
          return;
        } catch (error) {
          this.options.onConnectionEvent?.({ type: "reconnect_failed", error, attempt });
          await sleep(backoffDelay(attempt, this.options));
        }
      }
    })().finally(() => {
      this.reviving = undefined;
    });
    return this.reviving;
  }

  /** On a new connection: subscribe again, and tell every listener to look (it may have missed news). */
  private async renew(conn: Connection): Promise<void> {
    for (const uri of this.subscriptions.keys()) {
      await conn.client.subscribeResource({ uri });
    }
    await untilListening(conn);
    for (const uri of this.subscriptions.keys()) this.notify(uri);
  }

  private notify(uri: string): void {
    for (const listener of this.subscriptions.get(uri) ?? []) {
      try {
        listener(uri);
      } catch {
        // a listener's own failure is not the connection's business
      }
    }
  }

  /** Send one request. When the connection breaks it is dropped (the next request reconnects, with
   * backoff) and this one is repeated only when `safe`: doing it twice cannot do the work twice. */
  private async request<T>(
    what: string,
    safe: boolean,
    send: (client: Client) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    const retries = this.options.retries ?? 4;
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const conn = await this.connection(); // nothing is sent before this succeeds
      try {
        return await send(conn.client);
      } catch (error) {
        if (isAbort(error, signal)) throw error;
        const refused = error instanceof RateLimited ? error : refusal(error, what);
        if (refused instanceof RateLimited && attempt < retries) {
          // refused before anything was done: waiting and asking again is safe for any call
          await sleep(backoffDelay(attempt, this.options), signal);
          continue;
        }
        if (refused !== undefined) throw refused;
        if (!isConnectionFailure(error)) throw error;
        this.lost(conn, error);
        if (!safe || attempt >= retries) {
          throw new TransportFailed(`${what} was interrupted by a broken connection: ${String(error)}`, what, {
            cause: error,
          });
        }
      }
      await sleep(backoffDelay(attempt, this.options), signal);
    }
  }

  /** Call any tool by name: its structured result, checked against the tool's output schema. */
  async callTool<K extends ToolName>(
    name: K,
    args: ToolTypes[K]["args"],
    options: CallOptions = {},
  ): Promise<ToolTypes[K]["result"]> {
    const params = { name, arguments: dropUndefined(args) };
    const timeout = options.timeoutMs ?? this.options.timeoutMs ?? 60_000;
    const requestOptions = { timeout, ...(options.signal === undefined ? {} : { signal: options.signal }) };
    let result;
    try {
      result = await this.request(
        name,
        isRepeatSafe(name, args),
        async (client) => {
          const answer = await client.callTool(params, undefined, requestOptions);
          if (answer.isError === true) throw errorFromToolText(name, textOf(answer.content));
          return answer;
        },
        options.signal,
      );
    } catch (error) {
      if (error instanceof McpError) {
        if (error.code === (ErrorCode.InvalidParams as number)) throw new ValidationFailed(error.message, name);
        if (error.code === (ErrorCode.MethodNotFound as number)) throw new UnknownTool(error.message, name);
        throw new ToolFailed(error.message, name, { cause: error });
      }
      throw error;
    }
    const text = textOf(result.content);
    const data: unknown = result.structuredContent ?? (text ? JSON.parse(text) : {});
    if (this.options.validate === false) return data as ToolTypes[K]["result"];
    const parsed = TOOLS[name].result.safeParse(data);
    if (!parsed.success) {
      throw new InvalidOutput(
        `${name} returned a result this client does not understand: ${parsed.error.message}`,
        name,
      );
    }
    return parsed.data as ToolTypes[K]["result"];
  }

  /**
   * Create any number of tasks: one atomic `create_tasks` call per chunk of `chunkSize` (at most
   * MAX_BATCH), `onProgress` after each. An item's `depends_on` may name a `ref` made in an earlier
   * chunk; it is replaced by the id that ref got. The result lists every task and every ref.
   */
  override async createTasks(args: CreateTasksArgs, options: CreateTasksOptions = {}): Promise<CreateTasksResult> {
    const size = Math.max(1, Math.min(options.chunkSize ?? MAX_BATCH, MAX_BATCH));
    const total = args.tasks.length;
    const created: CreateTasksResult = { tasks: [], refs: {} };
    for (let start = 0; start < total; start += size) {
      const refs = created.refs ?? {};
      const chunk: TaskSpec[] = args.tasks
        .slice(start, start + size)
        .map((spec) =>
          spec.depends_on === undefined
            ? spec
            : { ...spec, depends_on: spec.depends_on.map((dep) => refs[dep] ?? dep) },
        );
      const result = await this.callTool("create_tasks", { tasks: chunk }, options);
      created.tasks.push(...result.tasks);
      created.refs = { ...refs, ...result.refs };
      options.onProgress?.({ created: created.tasks.length, total });
    }
    return created;
  }

  /** Read one of the server's JSON resources (`taskqueue://...`). Unknown ones throw `NotFound`. */
  async readResource<T = unknown>(uri: ResourceUri, options: CallOptions = {}): Promise<T> {
    let result;
    try {
      result = await this.request(
        uri,
        true,
        (client) =>
          client.readResource(
            { uri },
            {
              timeout: options.timeoutMs ?? this.options.timeoutMs ?? 60_000,
              ...(options.signal ? { signal: options.signal } : {}),
            },
          ),
        options.signal,
      );
    } catch (error) {
      if (error instanceof McpError) {
        const [code, ...rest] = error.message.replace(/^MCP error -?\d+: /, "").split(": ");
        const cls = code === undefined ? undefined : ERROR_CLASSES[code];
        if (cls !== undefined) throw new cls(rest.join(": "), uri);
        throw new NotFound(error.message, uri);
      }
      throw error;
    }
    const text = result.contents.map((part) => ("text" in part ? part.text : "")).join("");
    return JSON.parse(text) as T;
  }

  /**
   * Get told when a resource changes (`taskqueue://tasks/{id}`, `taskqueue://stats`, ...). The
   * subscription is renewed after a reconnect, and the listener is called then too, since changes
   * may have been missed meanwhile. Returns a function that unsubscribes.
   */
  async subscribe(uri: ResourceUri, listener: ResourceListener): Promise<() => Promise<void>> {
    let listeners = this.subscriptions.get(uri);
    if (listeners === undefined) {
      listeners = new Set();
      this.subscriptions.set(uri, listeners);
      try {
        await this.request(`subscribe ${uri}`, true, (client) => client.subscribeResource({ uri }));
        await untilListening(await this.connection());
      } catch (error) {
        this.subscriptions.delete(uri);
        throw error;
      }
    }
    listeners.add(listener);
    this.startKeepAlive();
    const own = listeners;
    return async () => {
      own.delete(listener);
      if (own.size === 0 && this.subscriptions.get(uri) === own) {
        this.subscriptions.delete(uri);
        if (this.subscriptions.size === 0) this.stopKeepAlive();
        if (this.conn !== undefined && !this.closed) {
          const conn = await this.conn.catch(() => undefined);
          await conn?.client.unsubscribeResource({ uri }).catch(() => undefined);
        }
      }
    };
  }

  /**
   * A live query: `load()` now, and again whenever one of `uris` changes (calls coalesce: at most
   * one load runs, and one more follows if news came meanwhile). Returns a function that stops it.
   */
  live<T>(
    uris: ResourceUri[],
    load: () => Promise<T>,
    onValue: (value: T) => void,
    onError: (error: unknown) => void = () => undefined,
  ): () => void {
    let stopped = false;
    let running = false;
    let again = false;
    const unsubscribes: Array<() => Promise<void>> = [];
    const refresh = async (): Promise<void> => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          try {
            const value = await load();
            if (!stopped) onValue(value);
          } catch (error) {
            if (!stopped) onError(error);
          }
        } while (again && !stopped);
      } finally {
        running = false;
      }
    };
    void (async () => {
      for (const uri of uris) {
        try {
          const off = await this.subscribe(uri, () => void refresh());
          if (stopped) await off();
          else unsubscribes.push(off);
        } catch (error) {
          if (!stopped) onError(error);
        }
      }
      if (!stopped) await refresh();
    })();
    return () => {
      stopped = true;
      for (const off of unsubscribes.splice(0)) void off();
    };
  }

  private startKeepAlive(): void {
    if (this.keepAlive !== undefined) return;
    // Notifications only flow while the connection lives; a ping notices when it died quietly.
    this.keepAlive = setInterval(() => {
      const current = this.conn;
      if (current === undefined || this.closed) return;
      void current.then(
        (conn) =>
          conn.client
            .ping({ timeout: this.options.keepAliveMs ?? 5000 })
            .catch((error: unknown) => this.lost(conn, error)),
        () => undefined,
      );
    }, this.options.keepAliveMs ?? 5000);
    (this.keepAlive as { unref?: () => void }).unref?.();
  }

  private stopKeepAlive(): void {
    if (this.keepAlive !== undefined) clearInterval(this.keepAlive);
    this.keepAlive = undefined;
  }

  /** Close the connection (ending an HTTP session, or the stdio server process). */
  async close(): Promise<void> {
    this.closed = true;
    this.stopKeepAlive();
    this.subscriptions.clear();
    const conn = await this.conn?.catch(() => undefined);
    this.conn = undefined;
    if (conn === undefined) return;
    if (conn.transport instanceof StreamableHTTPClientTransport) {
      await conn.transport.terminateSession().catch(() => undefined);
    }
    await conn.client.close().catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * `Worker`: the queue's worker protocol in a loop, like the Python one. Each of `concurrency` slots
 * claims a task of a kind it has a handler for, runs the handler while heartbeating the lease (with
 * the lease's `lease_id`), then completes the task with the handler's
 * return value or fails it (retryable unless the handler threw a `PermanentError`). A lost lease
 * aborts the handler's signal and its result is discarded. `shutdown()`, the `signal` option or
 * SIGTERM/SIGINT (Node) stop claiming, abort running handlers and release their tasks.
 */
import { backoffDelay, sleep } from "./backoff.js";
import type { TaskQueueClient } from "./client.js";
import { TaskQueueError, TransportFailed } from "./errors.js";
import { InvalidTransition, LeaseLost, NotFound, type Task } from "./generated.js";

/** Throw this from a handler to fail the task for good (no retry). */
export class PermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PermanentError";
  }
}

/** What a handler gets besides the task. */
export interface Job {
  readonly task: Task;
  /** The worker name holding the lease. */
  readonly worker: string;
  /** The lease's fencing token (`lease_id`), passed with every heartbeat, complete, fail and release. */
  readonly leaseId: string;
  /** Aborted when the lease is lost or the worker shuts down: stop working then. */
  readonly signal: AbortSignal;
  /** Report progress (0..1) and/or a message; also extends the lease. */
  heartbeat(report?: { progress?: number; message?: string }): Promise<void>;
}

export type Handler = (task: Task, job: Job) => unknown;

export interface WorkerOptions {
  /** Worker name (default `ts-<pid or random>`); slots are named `<name>-1`, `<name>-2`, ... */
  name?: string;
  /** Handlers running at once (default 1). */
  concurrency?: number;
  /** Only tasks of this project / with any of these tags. */
  project?: string;
  tags?: string[];
  /** Lease length asked for each claim, seconds (default 60). */
  leaseSeconds?: number;
  /** Heartbeat period, ms (default a third of the lease). */
  heartbeatMs?: number;
  /** Wait between claims when nothing is ready, ms (default 1000). */
  pollMs?: number;
  /** Stop when nothing is ready, running or pending (in the project). */
  stopWhenIdle?: boolean;
  /** Stop after this many tasks were completed or failed. */
  maxTasks?: number;
  /** Shut down (releasing held tasks) when this aborts. */
  signal?: AbortSignal;
  /** In Node, shut down on SIGTERM and SIGINT (default true). */
  handleSignals?: boolean;
  /** Told about problems the worker handles by itself (default: console.warn). */
  log?: (message: string) => void;
}

export interface WorkerStats {
  claimed: number;
  completed: number;
  failed: number;
  /** Given back at shutdown. */
  released: number;
  /** Leases lost before the outcome was recorded (the task will be retried elsewhere). */
  lost: number;
}

/** What identifies a lease in heartbeat, complete_task, fail_task and release_task. */
interface Lease {
  task_id: string;
  worker: string;
  lease_id: string;
}

type ProcessNode = {
  once(event: string, fn: () => void): unknown;
  off(event: string, fn: () => void): unknown;
  pid?: number;
};

function nodeProcess(): ProcessNode | undefined {
  const candidate = (globalThis as { process?: Partial<ProcessNode> }).process;
  return typeof candidate?.once === "function" && typeof candidate.off === "function"
    ? (candidate as ProcessNode)
    : undefined;
}

/** Claim errors that pass by themselves: the worker waits and claims again. */
const PASSING_TROUBLE = new Set(["transport", "store_busy", "rate_limited"]);

/** A random key per claim: a claim repeated after a broken connection gets the same lease back. */
function claimKey(worker: string): string {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  return `${worker}:${random}`;
}

export class Worker {
  readonly client: TaskQueueClient;
  readonly name: string;
  readonly options: WorkerOptions;
  readonly stats: WorkerStats = { claimed: 0, completed: 0, failed: 0, released: 0, lost: 0 };
  private readonly handlers = new Map<string, Handler>();
  private readonly held = new Map<string, Lease>();
  private shutdownController = new AbortController();
  private stopping = false;

  constructor(client: TaskQueueClient, options: WorkerOptions = {}) {
    this.client = client;
    this.options = options;
    this.name = options.name ?? `ts-${nodeProcess()?.pid ?? Math.random().toString(36).slice(2, 8)}`;
  }

  /** Register the handler for tasks of `kind`; its return value becomes the task's result. */
  handle(kind: string, handler: Handler): this {
    this.handlers.set(kind, handler);
    return this;
  }

  /** Ids of the tasks held right now. */
  get holding(): string[] {
    return [...this.held.keys()];
  }

  /** Stop claiming; tasks in hand finish and are reported. `run()` resolves after them. */
  stop(): void {
    this.stopping = true;
  }

  /** Stop now: abort running handlers and release their tasks (no attempt used up). */
  shutdown(reason: unknown = new Error("worker shut down")): void {
    this.stopping = true;
    this.shutdownController.abort(reason);
  }

  private log(message: string): void {
    (this.options.log ?? ((m: string) => console.warn(m)))(message);
  }

  /** Work until stopped, shut down, `maxTasks` done or (with `stopWhenIdle`) drained. */
  async run(): Promise<WorkerStats> {
    if (this.handlers.size === 0) throw new Error('register a handler first: worker.handle("kind", fn)');
    this.stopping = false;
    if (this.shutdownController.signal.aborted) this.shutdownController = new AbortController();
    const external = this.options.signal;
    const onExternal = (): void => this.shutdown(external?.reason);
    if (external?.aborted) onExternal();
    external?.addEventListener("abort", onExternal, { once: true });
    const proc = this.options.handleSignals === false ? undefined : nodeProcess();
    const onSignal = (): void => {
      this.log(`${this.name}: got a termination signal, releasing held tasks and stopping`);
      this.shutdown(new Error("termination signal"));
    };
    proc?.once("SIGTERM", onSignal);
    proc?.once("SIGINT", onSignal);
    try {
      const concurrency = Math.max(1, this.options.concurrency ?? 1);
      const slots = Array.from({ length: concurrency }, (_, i) =>
        this.loop(concurrency === 1 ? this.name : `${this.name}-${i + 1}`),
      );
      await Promise.all(slots);
    } finally {
      external?.removeEventListener("abort", onExternal);
      proc?.off("SIGTERM", onSignal);
      proc?.off("SIGINT", onSignal);
    }
    return this.stats;
  }

  private done(): boolean {
    const max = this.options.maxTasks;
    return this.stopping || (max !== undefined && this.stats.completed + this.stats.failed >= max);
  }

  private async loop(worker: string): Promise<void> {
    const signal = this.shutdownController.signal;
    let outage = 0;
    while (!this.done()) {
      let claim;
      try {
        claim = await this.client.claimTask(
          {
            worker,
            idempotency_key: claimKey(worker),
            kinds: [...this.handlers.keys()],
            ...(this.options.project === undefined ? {} : { project: this.options.project }),
            ...(this.options.tags === undefined ? {} : { tags: this.options.tags }),
            lease_seconds: this.options.leaseSeconds ?? 60,
          },
          { signal },
        );
        outage = 0;
      } catch (error) {
        if (signal.aborted) return;
        if (!(error instanceof TaskQueueError) || !PASSING_TROUBLE.has(error.code)) throw error;
        // the server is away (restarting, network) or busy: keep trying, more slowly each time
        this.log(`${worker}: ${error.message}; retrying`);
        await sleep(backoffDelay(outage++, { backoffMs: 500, maxBackoffMs: 30_000 }), signal).catch(() => undefined);
        continue;
      }
      const task = claim.task;
      if (task === undefined || task === null) {
        if (this.options.stopWhenIdle === true && (await this.drained())) return;
        await sleep(this.options.pollMs ?? 1000, signal).catch(() => undefined);
        continue;
      }
      this.stats.claimed++;
      const leaseId = task.lease_id ?? claim.lease_id;
      if (leaseId === undefined) throw new Error("the server issued no lease_id: it is older than this SDK");
      await this.process(task, { task_id: task.id, worker, lease_id: leaseId });
    }
  }

  private async drained(): Promise<boolean> {
    // an unreachable server is not an empty queue
    try {
      return await this.countsSayDrained();
    } catch (error) {
      if (error instanceof TransportFailed) return false;
      throw error;
    }
  }

  private async countsSayDrained(): Promise<boolean> {
    const stats = await this.client.queueStats(
      this.options.project === undefined ? {} : { project: this.options.project },
    );
    const count = (status: string): number => stats.by_status[status] ?? 0;
    return count("running") === 0 && count("pending") + count("ready") - stats.blocked <= 0;
  }

  private async process(task: Task, lease: Lease): Promise<void> {
    const worker = lease.worker;
    const handler = this.handlers.get(task.kind ?? "task");
    const abort = new AbortController();
    const onShutdown = (): void => abort.abort(this.shutdownController.signal.reason);
    this.shutdownController.signal.addEventListener("abort", onShutdown, { once: true });
    this.held.set(task.id, lease);
    let lostLease = false;
    const beat = async (report: { progress?: number; message?: string } = {}): Promise<void> => {
      try {
        await this.client.heartbeat({ ...lease, ...report, lease_seconds: this.options.leaseSeconds ?? 60 });
      } catch (error) {
        if (error instanceof LeaseLost || error instanceof InvalidTransition || error instanceof NotFound) {
          lostLease = true;
          abort.abort(error);
        }
        throw error;
      }
    };
    const period = this.options.heartbeatMs ?? ((this.options.leaseSeconds ?? 60) * 1000) / 3;
    const timer = setInterval(() => {
      beat().catch((error: unknown) => {
        if (!lostLease) this.log(`${worker}: heartbeat for ${task.id} failed: ${String(error)}`);
      });
    }, period);
    const job: Job = { task, worker, leaseId: lease.lease_id, signal: abort.signal, heartbeat: beat };
    let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
    try {
      if (handler === undefined) throw new PermanentError(`no handler for kind ${String(task.kind)}`);
      // a handler that ignores its signal does not hold the worker up once the lease is gone
      const aborted = new Promise<never>((_, reject) => {
        abort.signal.addEventListener("abort", () => reject(abort.signal.reason as Error), { once: true });
      });
      aborted.catch(() => undefined);
      outcome = { ok: true, value: await Promise.race([Promise.resolve().then(() => handler(task, job)), aborted]) };
    } catch (error) {
      outcome = { ok: false, error };
    } finally {
      clearInterval(timer);
      this.shutdownController.signal.removeEventListener("abort", onShutdown);
    }
    try {
      if (lostLease) {
        this.stats.lost++;
        this.log(`${worker}: lost the lease on ${task.id}; its result is discarded`);
      } else if (this.shutdownController.signal.aborted) {
        await this.release(lease);
      } else {
        await this.report(lease, outcome);
      }
    } finally {
      this.held.delete(task.id);
    }
  }

  private async release(lease: Lease): Promise<void> {
    try {
      await this.client.releaseTask(lease, { timeoutMs: 10_000 });
      this.stats.released++;
    } catch (error) {
      this.log(`${lease.worker}: could not release ${lease.task_id}: ${String(error)}`);
    }
  }

  private async report(
    lease: Lease,
    outcome: { ok: true; value: unknown } | { ok: false; error: unknown },
  ): Promise<void> {
    let failure: unknown = outcome.ok ? undefined : outcome.error;
    try {
      if (outcome.ok) {
        try {
          await this.client.completeTask({ ...lease, result: outcome.value ?? null });
          this.stats.completed++;
          return;
        } catch (error) {
          if (error instanceof LeaseLost || error instanceof TransportFailed) throw error;
          if (!(error instanceof TaskQueueError)) throw error;
          failure = error; // e.g. a result the server refused: fail the attempt and say why
        }
      }
      const text = failure instanceof Error ? `${failure.name}: ${failure.message}` : String(failure);
      await this.client.failTask({
        ...lease,
        error: text.slice(0, 9000),
        retryable: !(failure instanceof PermanentError),
      });
      this.stats.failed++;
    } catch (error) {
      if (!(error instanceof LeaseLost || error instanceof TransportFailed)) throw error;
      // the lease is gone, or so is the server: the task returns when its lease expires
      this.stats.lost++;
      this.log(`${lease.worker}: could not report ${lease.task_id} (${error.message}); it will be retried`);
    }
  }
}

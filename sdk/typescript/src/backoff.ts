/** Waiting between retries: exponential backoff with jitter, abortable. */

export interface BackoffOptions {
  /** First delay in milliseconds (default 250). */
  backoffMs?: number;
  /** Longest delay in milliseconds (default 5000). */
  maxBackoffMs?: number;
}

/** The delay before retry number `attempt` (0-based): doubling, capped, times a random 0.5..1 so
 * many clients retrying together spread out. */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const base = options.backoffMs ?? 250;
  const cap = options.maxBackoffMs ?? 5000;
  return Math.min(cap, base * 2 ** attempt) * (0.5 + Math.random() / 2);
}

/** Resolve after `ms`, or reject with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

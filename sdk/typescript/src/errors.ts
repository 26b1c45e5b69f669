/**
 * Errors: one class per kind, so callers can `catch (e) { if (e instanceof LeaseLost) ... }`.
 *
 * The server sends a tool error as text `Error executing tool <tool>: <code>: <message>`; the
 * classes for its codes (`NotFound`, `Conflict`, `LeaseLost`, `ValidationFailed`, ...) are
 * generated from the server's own error types into generated.ts. The ones here are the client's:
 * what can go wrong before or after the server had its say.
 */

/** Base of every error this package throws on purpose. `code` names the kind, `tool` the call. */
export class TaskQueueError extends Error {
  static readonly code: string = "error";
  readonly code: string = "error";
  /** The tool (or resource URI) whose call failed, when there was one. */
  tool: string | undefined;

  constructor(message: string, tool?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.tool = tool;
  }
}

/** The server could not be reached, or the connection broke, and retrying did not help (or was not safe). */
export class TransportFailed extends TaskQueueError {
  static override readonly code = "transport";
  override readonly code: string = "transport";
}

/** The server refused the credentials (HTTP 401/403): pass a valid `token`. */
export class Unauthorized extends TaskQueueError {
  static override readonly code = "unauthorized";
  override readonly code: string = "unauthorized";
}

/** The server does not offer this tool (an older server, or a `--toolsets` subset). */
export class UnknownTool extends TaskQueueError {
  static override readonly code = "unknown_tool";
  override readonly code: string = "unknown_tool";
}

/** A tool error whose code this client has no class for (its `code` is the server's, when it sent one). */
export class ToolFailed extends TaskQueueError {
  static override readonly code = "tool_failed";
  override readonly code: string;

  constructor(message: string, tool?: string, options?: { cause?: unknown; code?: string }) {
    super(message, tool, options);
    this.code = options?.code ?? "tool_failed";
  }
}

/** The server answered with a result that does not match the tool's output schema. */
export class InvalidOutput extends TaskQueueError {
  static override readonly code = "invalid_output";
  override readonly code: string = "invalid_output";
}

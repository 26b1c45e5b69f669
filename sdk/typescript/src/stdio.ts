/** The stdio transport (Node only): spawns `mcp-taskqueue serve` and speaks MCP on its stdin/stdout.
 * The browser bundle swaps this module for stdio.browser.ts. */
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";

/** A server started as a subprocess: e.g. `{ command: "mcp-taskqueue", args: ["--db", "tasks.db", "serve"] }`. */
export interface StdioTarget {
  command: string;
  args?: string[];
  /** Environment of the server (default: this process's). */
  env?: Record<string, string>;
  cwd?: string;
  /** Where the server's stderr (its logs) goes (default "inherit"). */
  stderr?: "inherit" | "ignore" | "pipe";
}

export function stdioTransport(target: StdioTarget): Transport & { readonly pid: number | null } {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(target.env ?? process.env)) {
    if (value !== undefined) env[key] = value;
  }
  return new StdioClientTransport({
    command: target.command,
    args: target.args ?? [],
    env,
    stderr: target.stderr ?? "inherit",
    ...(target.cwd === undefined ? {} : { cwd: target.cwd }),
  });
}

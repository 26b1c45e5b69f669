/** Browsers cannot spawn processes: the browser bundle's stand-in for stdio.ts. */
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { StdioTarget } from "./stdio.js";

export type { StdioTarget };

export function stdioTransport(_target: StdioTarget): Transport & { readonly pid: number | null } {
  throw new Error("the stdio transport needs Node; in a browser connect to an http(s):// URL");
}

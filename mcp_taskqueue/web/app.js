// The board as an MCP App (ui://taskqueue/board): the host renders this document in a sandboxed
// iframe. This script runs before board.js and gives it a data source that reads through the host
// (the MCP Apps postMessage bridge, JSON-RPC 2.0) instead of fetch() to /board/api:
//   GET  /board/api/...                  -> tools/call board_read {path}
//   POST /board/api/tasks/{id}/{action}  -> tools/call board_act {path, body}
// The bridge pushes nothing from our server to the App (the host forwards the tool's input and
// result, not resource updates), so board.js re-reads the open view every POLL_MS instead of
// listening to /board/events.
(() => {
  const POLL_MS = 2000;
  const STATUS = { not_found: 404, validation_failed: 400, unauthorized: 401, forbidden: 403, store_busy: 503, rate_limited: 429 };
  const pending = new Map();
  let nextId = 1;

  function send(message) { window.parent.postMessage({ jsonrpc: "2.0", ...message }, "*"); }
  function request(method, params) {
    const id = nextId++;
    send({ id, method, params });
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  }

  window.addEventListener("message", (event) => {
    if (event.source !== window.parent) return;
    const msg = event.data;
    if (!msg || msg.jsonrpc !== "2.0") return;
    if (msg.id !== undefined && !msg.method && pending.has(msg.id)) {
      const waiter = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) waiter.reject(new Error(msg.error.message)); else waiter.resolve(msg.result);
      return;
    }
    // show_board {project}: open that project's board unless the user already went somewhere
    if (msg.method === "ui/notifications/tool-input") {
      const project = msg.params && msg.params.arguments && msg.params.arguments.project;
      if (project && (!location.hash || location.hash === "#/")) location.hash = `#/p/${encodeURIComponent(project)}`;
    }
  });

  // Links within the board are fragments (#/t/ID ...). A host's document (srcdoc, blob:) may resolve
  // them against another base and navigate the frame away: change the fragment in place instead.
  document.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest('a[href^="#"]') : null;
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    const href = link.getAttribute("href");
    if (href.startsWith("#/")) location.hash = href;
    else { const target = document.getElementById(href.slice(1)); if (target) target.focus(); }
  });

  const ready = request("ui/initialize", { protocolVersion: "2026-01-26", appInfo: { name: "taskqueue-board", version: "1" }, appCapabilities: {} })
    .then((result) => { send({ method: "ui/notifications/initialized", params: {} }); return result; });

  // A tool result as board.js's api() reads a response: {status, body}. Refusals arrive as
  // "Error executing tool NAME: CODE: message" (the server's one error format).
  function asResponse(result) {
    if (!result || !result.isError) return { status: 200, body: result ? result.structuredContent : null };
    const text = result.content && result.content[0] ? result.content[0].text : "the tool failed";
    const match = /^Error executing tool \S+: (\w+): ([\s\S]*)$/.exec(text);
    return match ? { status: STATUS[match[1]] || 409, body: { error: match[1], message: match[2] } } : { status: 500, body: { message: text } };
  }

  window.taskqueueBridge = {
    pollMs: POLL_MS,
    async request(path, options = {}) {
      try {
        await ready;
        const post = (options.method || "GET") === "POST";
        const args = post ? { path, body: options.body ? JSON.parse(options.body) : {} } : { path };
        return asResponse(await request("tools/call", { name: post ? "board_act" : "board_read", arguments: args }));
      } catch (error) {
        return { status: 503, body: { message: `The host did not pass the call on: ${error.message}` } };
      }
    },
  };
})();

// The board as an MCP App (ui://taskqueue/board): rendered by the host in a sandboxed iframe.
// It speaks JSON-RPC to the host over postMessage (ext-apps): ui/initialize, then it draws each
// show_board result the host forwards, and calls tools through the host to refresh or retry.
(() => {
  const LABELS = { ready: "Ready", running: "Running", blocked: "Blocked", failed: "Failed", completed: "Completed", cancelled: "Cancelled" };
  const root = document.getElementById("app");
  const status = document.getElementById("app-status");
  const pending = new Map();
  let nextId = 1;
  let args = {};

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }
  function send(message) { window.parent.postMessage({ jsonrpc: "2.0", ...message }, "*"); }
  function request(method, params) {
    const id = nextId++;
    send({ id, method, params });
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  }
  function say(text) { status.textContent = ""; setTimeout(() => { status.textContent = text; }, 30); }

  async function callTool(name, argumentsObject) {
    const result = await request("tools/call", { name, arguments: argumentsObject });
    if (result && result.isError) throw new Error(result.content && result.content[0] ? result.content[0].text : "tool error");
    return result;
  }
  async function refresh() {
    try { render(await callTool("show_board", args)); say("Board refreshed."); } catch (e) { say(`Refresh failed: ${e.message}`); }
  }
  async function retry(card) {
    try { await callTool("retry_task", { task_id: card.id }); say(`“${card.title}” sent back to the queue.`); await refresh(); }
    catch (e) { say(`Could not retry “${card.title}”: ${e.message}`); }
  }

  function render(result) {
    const board = result && (result.structuredContent || result.structured_content);
    if (!board) return;
    const columns = Object.entries(board.counts).map(([key, count]) => ({ key, count, cards: board.cards.filter((c) => c.column === key) })).map((col) => h("section", { class: `column col-${col.key}`, "aria-labelledby": `c-${col.key}` },
      h("h2", { id: `c-${col.key}` }, h("span", {}, LABELS[col.key] || col.key), h("span", { "aria-label": `${col.count} tasks` }, String(col.count))),
      col.cards.length ? h("ul", { class: "cards" }, col.cards.map((c) => h("li", { class: `card s-${col.key}`, "data-task-id": c.id },
        h("h3", {}, c.title),
        h("ul", { class: "meta", "aria-label": "details" },
          h("li", {}, h("span", { class: `badge p-${c.priority}` }, c.priority)),
          c.worker ? h("li", {}, `worker ${c.worker}`) : null,
          c.progress !== undefined && c.progress !== null ? h("li", {}, `${Math.round(c.progress * 100)}% done`) : null,
          null),
        col.key === "failed" ? h("div", { class: "actions" }, h("button", { type: "button", "aria-label": `Retry ${c.title}`, onclick: () => retry(c) }, "Retry")) : null)))
        : h("p", { class: "empty" }, "None"),
      col.count > col.cards.length ? h("p", { class: "summary" }, `and ${col.count - col.cards.length} more`) : null));
    root.replaceChildren(
      h("div", { class: "row" }, h("h1", {}, board.project ? `Board: ${board.project}` : "Board: all projects"),
        h("button", { type: "button", class: "secondary", onclick: refresh }, "Refresh")),
      h("p", { class: "summary" }, `${Object.values(board.counts).reduce((a, b) => a + b, 0)} tasks.`),
      h("div", { class: "columns" }, columns));
  }

  window.addEventListener("message", (event) => {
    const msg = event.data;
    if (!msg || msg.jsonrpc !== "2.0") return;
    if (msg.id !== undefined && pending.has(msg.id) && !msg.method) {
      const waiter = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) waiter.reject(new Error(msg.error.message)); else waiter.resolve(msg.result);
      return;
    }
    if (msg.method === "ui/notifications/tool-input") args = (msg.params && msg.params.arguments) || {};
    if (msg.method === "ui/notifications/tool-result") render(msg.params);
  });

  request("ui/initialize", { protocolVersion: "2026-01-26", appInfo: { name: "taskqueue-board", version: "1" }, appCapabilities: {} })
    .then(() => send({ method: "ui/notifications/initialized", params: {} }))
    .catch(() => say("The host did not answer; showing nothing."));
})();

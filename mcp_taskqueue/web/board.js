// The live board: plain modern JavaScript, no build step, no dependencies, no network but this server.
// Views come from /board/api; changes are pushed over /board/events (Server-Sent Events read with
// fetch, so the token goes in a header). Routes live in the hash: #/ projects, #/p/NAME board,
// #/p/NAME/charts[?range=24h], #/w/ID workflow, #/t/ID task.
// A server with tokens: the sign-in form keeps the token in sessionStorage (this tab only) and every
// request sends it as `Authorization: Bearer`; it never goes into a URL.

const COLUMNS = ["ready", "running", "blocked", "failed", "completed", "cancelled"];
const LABELS = { ready: "Ready", running: "Running", blocked: "Blocked", failed: "Failed", completed: "Completed", cancelled: "Cancelled" };
const STATUS_COLUMN = { pending: "blocked", ready: "ready", running: "running", failed: "failed", completed: "completed", cancelled: "cancelled" };
const PRIORITIES = ["critical", "high", "medium", "low"];
const PAGE = 50;
const TOKEN_KEY = "taskqueue-board-token";
// Chart ranges: minutes and how the page describes them (30 buckets each).
const RANGES = { "1h": [60, "The last hour in 2-minute buckets"], "24h": [1440, "The last 24 hours in 48-minute buckets"], "7d": [10080, "The last 7 days in buckets of 5 h 36 min"] };
const RANGE_LABELS = { "1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days" };

const view = document.getElementById("view");
const announcer = document.getElementById("announcer");
const conn = document.getElementById("conn");
const connText = document.getElementById("conn-text");
const dialog = document.getElementById("confirm");
const who = document.getElementById("who");
const flashEl = document.getElementById("flash");

// What tests and the performance budget read: first render, pushes received, updates applied.
const metrics = { firstRender: null, changes: 0, updates: 0, lastChangeAt: null, lastUpdateMs: null, resyncs: 0 };
window.boardMetrics = metrics;

let current = { route: null, refresh: null, wants: () => false, seen: new Map(), loaded: {} };
let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;
let dropped = false; // the feed broke: resync everything once it is back
let token = sessionStorage.getItem(TOKEN_KEY);
let me = null; // GET /board/api/me: name, scopes, projects, signed_in
let feed = null; // the live feed's AbortController
let retryMs = 1000;

// --- small DOM helper: text is always text (no HTML from data) ---------------------------------
function h(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function authHeaders(extra) {
  const headers = { ...(extra || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers), cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const message = body && body.message ? body.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

function post(taskId, action, body) {
  return api(`/board/api/tasks/${encodeURIComponent(taskId)}/${action}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
}

// A visible message under the header (role="alert"): refusals and failures the user must see.
function flash(text) {
  flashEl.replaceChildren(h("span", {}, text), h("button", { type: "button", class: "secondary", onclick: clearFlash }, "Dismiss"));
  flashEl.hidden = false;
}
function clearFlash() { flashEl.hidden = true; flashEl.replaceChildren(); }

function announce(text) {
  announcer.textContent = "";
  // a fresh text node after a tick so screen readers announce repeats too
  setTimeout(() => { announcer.textContent = text; }, 50);
}

// --- formatting ------------------------------------------------------------------------------
function duration(seconds) {
  const s = Math.abs(Math.round(seconds));
  const text = s < 90 ? `${s}s` : s < 5400 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
  return seconds < 0 ? `overdue ${text}` : text;
}
function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, " UTC") : "—"; }
function pct(value) { return `${Math.round((value || 0) * 100)}%`; }
function statusBadge(status) {
  const column = STATUS_COLUMN[status] || status;
  return h("span", { class: `st st-${column}` }, status === "pending" ? "blocked" : status);
}
function priorityBadge(priority) { return h("span", { class: `badge p-${priority}` }, priority); }
function progressBar(value, label) {
  if (value === null || value === undefined) return null;
  return h("div", { class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(value * 100) },
    h("span", { style: null, "data-width": pct(value) }));
}
// Lease time left counts down on screen: a hung worker commits nothing, so no push would redraw it.
function leaseLeft(tag, seconds, before, after) {
  const deadline = Date.now() + seconds * 1000;
  return h(tag, { "data-dynamic": "", "data-lease-deadline": deadline, "data-before": before, "data-after": after }, `${before}${duration(seconds)}${after}`);
}
setInterval(() => {
  for (const el of view.querySelectorAll("[data-lease-deadline]")) {
    const text = `${el.dataset.before}${duration((Number(el.dataset.leaseDeadline) - Date.now()) / 1000)}${el.dataset.after}`;
    if (el.textContent !== text) el.textContent = text;
  }
}, 1000);
// widths without inline style attributes (the page's CSP allows no inline styles): set them as properties
function applyWidths(root) {
  for (const el of root.querySelectorAll("[data-width]")) el.style.width = el.dataset.width;
}

// --- routing ---------------------------------------------------------------------------------
function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "p" && parts[1]) return { name: parts[2] === "charts" ? "charts" : "board", project: parts[1], params };
  if (parts[0] === "w" && parts[1]) return { name: "workflow", id: parts[1], params };
  if (parts[0] === "t" && parts[1]) return { name: "task", id: parts[1], params };
  return { name: "projects", params };
}

async function route(focus = true) {
  const r = parseRoute();
  const renderers = { projects: showProjects, board: showBoard, charts: showCharts, workflow: showWorkflow, task: showTask };
  current = { route: r, refresh: null, wants: () => false, seen: new Map(), loaded: {} };
  delete view.dataset.ready;
  try {
    await renderers[r.name](r);
  } catch (error) {
    if (error.status === 401) { signOut(error.message); return; }
    const title = error.status === 403 ? "Not allowed" : error.status === 404 ? "Not found" : "Something went wrong";
    document.title = `${title} · Task queue board`;
    view.replaceChildren(h("h1", {}, title), h("p", { class: "error", role: "alert" }, error.message), h("p", {}, h("a", { href: "#/" }, "Back to projects")));
  }
  view.dataset.ready = location.hash || "#/";
  if (metrics.firstRender === null) {
    metrics.firstRender = performance.now();
    performance.mark("board-first-render");
  }
  if (focus) view.focus({ preventScroll: true });
}

function scheduleRefresh() {
  if (!current.refresh) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(runRefresh, 30);
}

async function runRefresh() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  const started = performance.now();
  try {
    await current.refresh();
    metrics.updates += 1;
    metrics.lastUpdateMs = performance.now() - started;
    showMetrics();
    if (metrics.lastChangeAt !== null) metrics.lastPushToRenderMs = performance.now() - metrics.lastChangeAt;
  } catch (error) {
    if (error.status === 401) signOut(error.message);
    else announce(`Update failed: ${error.message}`);
  } finally {
    refreshing = false;
    if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
  }
}

// --- the live feed: Server-Sent Events over fetch (an EventSource cannot send the token) -----
function connect() {
  if (feed) feed.abort();
  const controller = new AbortController();
  feed = controller;
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const response = await fetch("/board/events", { headers: authHeaders({ Accept: "text/event-stream" }), cache: "no-store", signal: controller.signal });
        if (response.status === 401) { signOut("The server no longer accepts this token."); return; }
        if (!response.ok || !response.body) throw new Error(`live feed answered ${response.status}`);
        await readEvents(response.body, dispatch);
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      dropped = true;
      setConn("down", "Reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  })();
}

// The event-stream format: blocks separated by a blank line; `event:`, `data:`, `retry:` fields; `:` comments.
async function readEvents(body, handle) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
        else if (field === "retry" && /^\d+$/.test(text)) retryMs = Number(text);
      }
      if (data.length) handle(event, data.join("\n"));
    }
  }
}

function dispatch(event, data) {
  if (event === "hello") {
    setConn("live", "Live");
    if (dropped) { metrics.resyncs += 1; dropped = false; scheduleRefresh(); announce("Reconnected; the board is up to date."); }
  } else if (event === "change") {
    metrics.changes += 1;
    metrics.lastChangeAt = performance.now();
    const change = JSON.parse(data);
    if (current.wants(change)) scheduleRefresh();
  }
  showMetrics();
}
function setConn(state, text) { conn.dataset.state = state; connText.textContent = text; }
// the counters as attributes too: tests read them without running script in the page (Firefox under the CSP)
function showMetrics() {
  conn.dataset.changes = metrics.changes;
  conn.dataset.updates = metrics.updates;
  conn.dataset.resyncs = metrics.resyncs;
}

// --- signing in (servers with tokens) ---------------------------------------------------------
function showWho() {
  if (!me || !me.signed_in) { who.hidden = true; who.replaceChildren(); return; }
  const limits = me.projects ? ` · ${me.projects.join(", ")}` : "";
  who.replaceChildren(
    h("span", {}, `Signed in as ${me.name} (${me.scopes.join(", ")}${limits})`),
    h("button", { type: "button", class: "secondary", onclick: () => signOut(null) }, "Sign out"));
  who.hidden = false;
}

function signOut(reason) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  if (feed) { feed.abort(); feed = null; }
  current = { route: null, refresh: null, wants: () => false, seen: new Map(), loaded: {} };
  showWho();
  clearFlash();
  setConn("down", "Signed out");
  showSignIn(reason);
}

function showSignIn(reason) {
  document.title = "Sign in · Task queue board";
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false", required: true, "aria-describedby": "token-help" });
  view.replaceChildren(
    h("h1", {}, "Sign in"),
    reason ? h("p", { class: "error", role: "alert" }, reason) : null,
    h("p", { id: "token-help" }, "This server needs an access token. Make one with ",
      h("code", {}, "mcp-taskqueue token create --name NAME --scopes read,write"),
      ". It stays in this browser tab only (session storage) and is sent in a request header, never in a URL."),
    h("form", { class: "row signin", onsubmit: (event) => {
      event.preventDefault();
      token = input.value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      start(true);
    } }, h("label", { for: "token", class: "grow" }, "Access token", input), h("button", { type: "submit" }, "Sign in")));
  view.dataset.ready = "sign-in";
  input.focus();
}

async function start(focus) {
  clearFlash();
  try {
    me = await api("/board/api/me");
  } catch (error) {
    if (error.status === 401) { signOut(token ? "The server did not accept that token: it may be mistyped, revoked or expired." : null); return; }
    if (error.status === 403) { signOut(`That token may not read the board: ${error.message}`); return; }
    me = null; // the server is away: the views say so, and the feed keeps trying
  }
  showWho();
  await route(focus);
  connect();
}

// --- confirmation and actions ----------------------------------------------------------------
function confirmAction(title, text, yes) {
  return new Promise((resolve) => {
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-yes").textContent = yes;
    const opener = document.activeElement;
    const label = opener && opener.getAttribute("aria-label");
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      // a live update may have redrawn the opener meanwhile: then focus its new twin
      const again = opener && !opener.isConnected && label ? view.querySelector(`button[aria-label="${CSS.escape(label)}"]`) : null;
      if (opener && opener.isConnected) opener.focus();
      else if (again) again.focus();
      resolve(dialog.returnValue === "yes");
    }, { once: true });
    dialog.showModal();
    dialog.querySelector("button.secondary").focus();
  });
}

const ACTIONS = {
  cancel: { label: "Cancel", confirm: (t) => [`Cancel “${t.title}”?`, "Its work stops and tasks that depend on it become blocked.", "Cancel task"], done: "cancelled" },
  retry: { label: "Retry", done: "sent back to the queue" },
  release: { label: "Release", confirm: (t) => [`Release “${t.title}”?`, `Takes the task from ${t.worker || "its worker"}; the worker's result will be refused and the task claimed again.`, "Release lease"], done: "released" },
};

function actionsFor(task) {
  const names = [];
  if (task.status === "failed" || task.status === "cancelled") names.push("retry");
  if (task.status === "running") names.push("release");
  if (["pending", "ready", "running"].includes(task.status)) names.push("cancel");
  return names;
}

async function doAction(name, task, body) {
  const spec = ACTIONS[name];
  if (spec.confirm) {
    const [title, text, yes] = spec.confirm(task);
    if (!(await confirmAction(title, text, yes))) return;
  }
  try {
    await post(task.id, name, body);
    announce(`“${task.title}” ${spec.done}.`);
    scheduleRefresh();
  } catch (error) {
    refused(`Could not ${spec.label.toLowerCase()} “${task.title}”`, error);
  }
}

// An action the server refused: shown (and read out) at once; a lost sign-in goes back to the form.
function refused(what, error) {
  if (error.status === 401) signOut(error.message);
  else flash(`${what}: ${error.message}`);
}

function actionButtons(task) {
  const names = actionsFor(task);
  if (!names.length) return null;
  return h("div", { class: "actions" }, names.map((name) =>
    h("button", { type: "button", class: name === "retry" ? "" : "secondary", "aria-label": `${ACTIONS[name].label} ${task.title}`, onclick: () => doAction(name, task) }, ACTIONS[name].label)));
}

// --- projects --------------------------------------------------------------------------------
async function showProjects() {
  document.title = "Projects · Task queue board";
  const render = async () => {
    const data = await api("/board/api/projects");
    const items = data.projects.map((p) => h("li", {},
      h("h2", {}, h("a", { href: `#/p/${encodeURIComponent(p.name)}` }, p.name)),
      p.description ? h("p", {}, p.description) : null,
      h("ul", { class: "counts", "aria-label": `${p.name} tasks by status` },
        COLUMNS.map((c) => h("li", { class: `st st-${c}` }, `${LABELS[c]} ${p.counts[c === "blocked" ? "pending" : c] || 0}`))),
      h("p", {}, h("a", { href: `#/p/${encodeURIComponent(p.name)}/charts` }, `Charts for ${p.name}`)),
      p.workflows.length ? h("div", {}, h("h3", {}, "Workflows"), h("ul", {}, p.workflows.map((w) =>
        h("li", {}, h("a", { href: `#/w/${encodeURIComponent(w.id)}` }, w.name), " ", statusBadge(w.status), ` ${pct(w.progress)}`)))) : null));
    view.replaceChildren(
      h("h1", {}, "Projects"),
      data.projects.length ? h("ul", { class: "projects" }, items) : h("p", { class: "empty" }, "No projects yet. Tasks created by agents appear here."));
  };
  current.refresh = render;
  current.wants = (change) => change.projects.length > 0 || change.tasks.length > 0;
  await render();
}

// --- board -----------------------------------------------------------------------------------
function filterParams(params, project) {
  const q = new URLSearchParams();
  q.set("project", project);
  for (const key of ["kind", "tag", "worker", "q"]) if (params.get(key)) q.set(key, params.get(key));
  return q;
}

function card(c) {
  const meta = [
    priorityBadge(c.priority),
    c.kind ? h("li", {}, `kind ${c.kind}`) : null,
    c.worker ? h("li", {}, `worker ${c.worker}`) : null,
    c.lease_seconds_left !== null ? leaseLeft("li", c.lease_seconds_left, "lease ", "") : null,
    c.attempts ? h("li", {}, `attempt ${c.attempts}/${c.max_attempts}`) : null,
    c.blocked_by.length ? h("li", {}, `blocked by ${c.blocked_by.length} failed`) : c.waiting_on ? h("li", {}, `waits on ${c.waiting_on}`) : null,
    c.run_at ? h("li", { "data-dynamic": "" }, `not before ${when(c.run_at)}`) : null,
  ].map((x) => (x && x.tagName === "SPAN" ? h("li", {}, x) : x));
  return h("li", { class: `card s-${c.column}`, "data-task-id": c.id, "data-status": c.status },
    h("h3", {}, h("a", { href: `#/t/${encodeURIComponent(c.id)}` }, c.title)),
    h("ul", { class: "meta", "aria-label": "details" }, meta),
    progressBar(c.progress, `${c.title} progress`),
    actionButtons(c));
}

function columnSection(col, project, params) {
  const more = col.next_cursor ? h("button", { type: "button", class: "secondary more", onclick: async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    const q = filterParams(params, project);
    q.set("cursor", col.next_cursor);
    q.set("limit", PAGE);
    try {
      const page = await api(`/board/api/column/${col.key}?${q}`);
      const list = button.parentElement.querySelector("ul.cards");
      for (const c of page.cards) list.append(card(c));
      applyWidths(list);
      col.next_cursor = page.next_cursor;
      current.loaded[col.key] = list.children.length;
      if (page.next_cursor) { button.disabled = false; button.textContent = `Show more (${col.count - list.children.length} more)`; }
      else button.remove();
    } catch (error) { button.disabled = false; announce(error.message); }
  } }, `Show more (${col.count - col.cards.length} more)`) : null;
  return h("section", { class: `column col-${col.key}`, "data-column": col.key, "aria-labelledby": `col-${col.key}` },
    h("h2", { id: `col-${col.key}` }, h("span", {}, col.label), h("span", { class: "count", "aria-label": `${col.count} tasks` }, String(col.count))),
    col.cards.length ? h("ul", { class: "cards" }, col.cards.map(card)) : h("p", { class: "empty" }, "None"),
    more);
}

function filterForm(project, params, shown) {
  const field = (name, label, extra) => h("label", { class: extra }, label, h("input", { name, value: params.get(name) || "", type: name === "q" ? "search" : "text", autocomplete: "off" }));
  const statusSelect = h("select", { name: "status" }, h("option", { value: "" }, "All columns"),
    COLUMNS.map((c) => h("option", { value: c, selected: params.get("status") === c }, LABELS[c])));
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter tasks", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const q = new URLSearchParams();
    for (const [key, value] of data) if (value) q.set(key, value);
    const text = q.toString();
    location.hash = `#/p/${encodeURIComponent(project)}${text ? `?${text}` : ""}`;
  } },
    field("q", "Search", "grow"), h("label", {}, "Status", statusSelect), field("kind", "Kind"), field("tag", "Tag"), field("worker", "Worker"),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Apply"),
      [...params.keys()].length ? h("a", { href: `#/p/${encodeURIComponent(project)}` }, "Clear filters") : null));
  return form;
}

async function showBoard(r) {
  const project = r.project;
  document.title = `${project} · Task queue board`;
  const params = r.params;
  const only = params.get("status");
  const shown = only && COLUMNS.includes(only) ? [only] : COLUMNS;
  const columnsEl = h("div", { class: "columns" });
  const summary = h("p", { class: "summary", "aria-live": "off" });
  view.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Projects"), " / ", project),
    h("h1", {}, project),
    h("ul", { class: "tabs" }, h("li", {}, h("a", { href: `#/p/${encodeURIComponent(project)}`, "aria-current": "page" }, "Board")),
      h("li", {}, h("a", { href: `#/p/${encodeURIComponent(project)}/charts` }, "Charts"))),
    filterForm(project, params, shown), summary, columnsEl);
  const render = async () => {
    const q = filterParams(params, project);
    q.set("columns", shown.join(","));
    // keep what the user paged in: refresh as many cards per column as are loaded (up to 200)
    const loaded = Math.max(PAGE, ...Object.values(current.loaded));
    q.set("limit", Math.min(200, loaded));
    const data = await api(`/board/api/board?${q}`);
    const moved = [];
    const seen = new Map();
    for (const col of data.columns) for (const c of col.cards) {
      const before = current.seen.get(c.id);
      if (before && before !== c.status) moved.push(`“${c.title}” is now ${LABELS[STATUS_COLUMN[c.status]].toLowerCase()}`);
      seen.set(c.id, c.status);
    }
    const hadSeen = current.seen.size > 0;
    current.seen = seen;
    const focusedId = document.activeElement && document.activeElement.closest ? document.activeElement.closest("[data-task-id]")?.dataset.taskId : null;
    const focusedLabel = document.activeElement ? document.activeElement.getAttribute("aria-label") || document.activeElement.textContent : null;
    columnsEl.replaceChildren(...data.columns.map((col) => columnSection(col, project, params)));
    applyWidths(columnsEl);
    summary.textContent = `${data.total} task${data.total === 1 ? "" : "s"}${[...params.keys()].length ? " match the filters" : ""}.`;
    if (focusedId) { // keep keyboard focus where it was across a live update
      const again = columnsEl.querySelector(`[data-task-id="${CSS.escape(focusedId)}"]`);
      const target = again && ([...again.querySelectorAll("a,button")].find((el) => (el.getAttribute("aria-label") || el.textContent) === focusedLabel) || again.querySelector("a"));
      if (target) target.focus();
    }
    if (hadSeen && moved.length) announce(moved.slice(0, 3).join("; ") + (moved.length > 3 ? `; and ${moved.length - 3} more changes` : "."));
  };
  current.refresh = render;
  current.wants = (change) => change.projects.includes(project) || change.projects.includes("*");
  await render();
}

// --- task ------------------------------------------------------------------------------------
function describe(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// Every event of a task, oldest first (the task view holds only the newest 500).
async function allHistory(id) {
  const events = [];
  let cursor = null;
  do {
    const page = await api(`/board/api/tasks/${encodeURIComponent(id)}/history?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    events.push(...page.events);
    cursor = page.next_cursor;
  } while (cursor);
  return events;
}

async function showTask(r) {
  const render = async () => {
    const data = await api(`/board/api/tasks/${encodeURIComponent(r.id)}`);
    if (data.older_events && current.fullHistory) {
      data.history = await allHistory(r.id);
      data.notes = data.history.filter((e) => e.action === "note");
      data.older_events = false;
    }
    const t = data.task;
    document.title = `${t.title} · Task queue board`;
    const link = (id) => h("a", { href: `#/t/${encodeURIComponent(id)}` }, id);
    const fields = [
      ["Status", statusBadge(t.status)], ["Priority", priorityBadge(t.priority)], ["Kind", t.kind], ["Project", h("a", { href: `#/p/${encodeURIComponent(t.project)}` }, t.project)],
      ["Id", t.id], ["Worker", t.worker || "—"], ["Attempts", `${t.attempts} of ${t.max_attempts}`],
      ["Lease", data.lease_seconds_left !== null ? leaseLeft("span", data.lease_seconds_left, "", " left") : "—"],
      ["Progress", t.progress !== null ? pct(t.progress) : "—"],
      ["Workflow", t.workflow_id ? h("a", { href: `#/w/${encodeURIComponent(t.workflow_id)}` }, "Open workflow") : "—"],
      ["Depends on", t.depends_on.length ? t.depends_on.map((id, i) => [i ? ", " : "", link(id)]) : "—"],
      ["Blocked by", t.blocked_by.length ? t.blocked_by.map((id, i) => [i ? ", " : "", link(id)]) : "—"],
      ["Tags", t.tags.join(", ") || "—"], ["Created", h("span", { "data-dynamic": "" }, when(t.created_at))], ["Updated", h("span", { "data-dynamic": "" }, when(t.updated_at))],
    ];
    const edited = (event) => { event.currentTarget.dataset.edited = "1"; };
    const prioritySelect = h("select", { name: "priority", id: "priority", onchange: edited }, PRIORITIES.map((p) => h("option", { value: p, selected: p === t.priority }, p)));
    const noteText = h("textarea", { name: "text", id: "note", rows: 3, required: true, oninput: edited });
    const history = h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "visually-hidden" }, "History, oldest first"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "When"), h("th", { scope: "col" }, "Who"), h("th", { scope: "col" }, "What"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
      h("tbody", {}, data.history.map((e) => h("tr", {}, h("td", { "data-dynamic": "" }, when(e.at)), h("td", {}, e.actor || "—"), h("td", {}, e.action), h("td", {}, describe(e.old)), h("td", {}, describe(e.new)))))));
    view.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Projects"), " / ", h("a", { href: `#/p/${encodeURIComponent(t.project)}` }, t.project), " / task"),
      h("h1", {}, t.title),
      h("div", { class: "grid2" },
        h("section", { class: "panel", "aria-labelledby": "h-details" }, h("h2", { id: "h-details" }, "Details"), h("dl", { class: "fields" }, fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
        h("section", { class: "panel", "aria-labelledby": "h-actions" }, h("h2", { id: "h-actions" }, "Actions"),
          actionButtons({ ...t, column: data.column }) || h("p", { class: "empty" }, "No status actions for a completed task."),
          h("form", { class: "row", onsubmit: async (event) => {
            event.preventDefault();
            const priority = prioritySelect.value;
            delete prioritySelect.dataset.edited; // sent: from now on the server's value is the truth
            try { await post(t.id, "priority", { priority }); announce(`Priority set to ${priority}.`); scheduleRefresh(); }
            catch (error) { refused("Could not change the priority", error); }
          } }, h("label", { for: "priority" }, "Priority", prioritySelect), h("button", { type: "submit" }, "Set priority")),
          h("form", { class: "row", onsubmit: async (event) => {
            event.preventDefault();
            const text = noteText.value;
            noteText.value = "";
            delete noteText.dataset.edited;
            try { await post(t.id, "note", { text }); announce("Note added."); scheduleRefresh(); }
            catch (error) { noteText.value = text; refused("Could not add the note", error); }
          } }, h("label", { for: "note", class: "grow" }, "Note", noteText), h("button", { type: "submit" }, "Add note")))),
      h("section", { class: "panel", "aria-labelledby": "h-desc" }, h("h2", { id: "h-desc" }, "Description"), t.description ? h("p", {}, t.description) : h("p", { class: "empty" }, "No description.")),
      h("div", { class: "grid2" },
        h("section", { class: "panel", "aria-labelledby": "h-payload" }, h("h2", { id: "h-payload" }, "Payload"), t.payload ? h("pre", { tabindex: 0 }, JSON.stringify(t.payload, null, 2)) : h("p", { class: "empty" }, "No payload.")),
        h("section", { class: "panel", "aria-labelledby": "h-result" }, h("h2", { id: "h-result" }, t.error ? "Error" : "Result"),
          t.error ? h("p", { class: "error" }, t.error) : t.result !== null ? h("pre", { tabindex: 0 }, JSON.stringify(t.result, null, 2)) : h("p", { class: "empty" }, "No result yet."))),
      h("section", { class: "panel", "aria-labelledby": "h-notes" }, h("h2", { id: "h-notes" }, `Notes (${data.notes.length})`),
        data.notes.length ? h("ul", {}, data.notes.map((n) => h("li", {}, h("strong", {}, n.actor || "someone"), ": ", describe(n.new)))) : h("p", { class: "empty" }, "No notes.")),
      h("section", { class: "panel", "aria-labelledby": "h-history" }, h("h2", { id: "h-history" }, `History (${data.older_events ? "the newest " : ""}${data.history.length} events)`),
        data.older_events ? h("p", {}, "Older events, and the notes among them, are not shown. ",
          h("button", { type: "button", class: "secondary", onclick: () => { current.fullHistory = true; scheduleRefresh(); } }, "Show the full history")) : null,
        history));
    applyWidths(view);
    if (current.lastStatus && current.lastStatus !== t.status) announce(`“${t.title}” is now ${t.status}.`);
    current.lastStatus = t.status;
  };
  // a live update must not undo what the user is typing or choosing: edited fields keep their value
  current.refresh = async () => {
    const active = document.activeElement && document.activeElement.id;
    const edited = [...view.querySelectorAll("[data-edited]")].map((el) => [el.id, el.value]);
    await render();
    for (const [id, value] of edited) {
      const el = document.getElementById(id);
      if (el) { el.value = value; el.dataset.edited = "1"; }
    }
    if (active && document.getElementById(active)) document.getElementById(active).focus();
  };
  current.wants = (change) => change.tasks.includes(r.id);
  await render();
}

// --- workflow --------------------------------------------------------------------------------
const NODE_W = 180, NODE_H = 56;

function graph(data) {
  const pad = 8;
  const byId = new Map(data.workflow.tasks.map((t) => [t.id, t]));
  const pos = new Map(data.nodes.map((n) => [n.id, n]));
  const edges = data.edges.map((e) => {
    const a = pos.get(e.source), b = pos.get(e.target);
    const x1 = a.x + NODE_W + pad, y1 = a.y + NODE_H / 2 + pad, x2 = b.x + pad, y2 = b.y + NODE_H / 2 + pad;
    const mid = (x1 + x2) / 2;
    return h("svg:path", { class: `edge${e.critical ? " critical" : ""}`, d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, "marker-end": e.critical ? "url(#arrow-critical)" : "url(#arrow)" });
  });
  const nodes = data.nodes.map((n) => {
    const t = byId.get(n.id);
    const column = STATUS_COLUMN[t.status];
    const title = t.title.length > 24 ? `${t.title.slice(0, 23)}…` : t.title;
    return h("svg:a", { href: `#/t/${encodeURIComponent(t.id)}`, class: `node${n.critical ? " critical" : ""}`, "data-task-id": t.id, "data-critical": n.critical ? "true" : "false",
      "aria-label": `${t.title}: ${t.status}${n.critical ? ", on the critical path" : ""}` },
      h("svg:rect", { x: n.x + pad, y: n.y + pad, width: NODE_W, height: NODE_H, rx: 6, fill: `var(--${column}-bg)`, stroke: `var(--${column}-line)` }),
      h("svg:text", { x: n.x + pad + 10, y: n.y + pad + 22, "font-size": 13, "font-weight": 600, fill: "#111827" }, title),
      h("svg:text", { x: n.x + pad + 10, y: n.y + pad + 42, "font-size": 12, fill: `var(--${column}-fg)` }, `${t.status === "pending" ? "blocked" : t.status}${t.worker ? ` · ${t.worker}` : ""}`));
  });
  const marker = (id, color) => h("svg:marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, h("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: color }));
  const width = data.width + 2 * pad, height = data.height + 2 * pad;
  return h("svg:svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": "Dependency graph; tasks on the critical path have a thick red border" },
    h("svg:defs", {}, marker("arrow", "#6b7280"), marker("arrow-critical", "#b91c1c")), edges, nodes);
}

async function showWorkflow(r) {
  const render = async () => {
    const data = await api(`/board/api/workflows/${encodeURIComponent(r.id)}`);
    const w = data.workflow;
    document.title = `${w.name} · Task queue board`;
    const titles = new Map(w.tasks.map((t) => [t.id, t.title]));
    view.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Projects"), " / ", h("a", { href: `#/p/${encodeURIComponent(w.project)}` }, w.project), " / workflow"),
      h("h1", {}, w.name),
      h("p", {}, statusBadge(w.status), ` ${pct(w.progress)} done · ${w.tasks.length} tasks`),
      progressBar(w.progress, `${w.name} progress`),
      h("section", { "aria-labelledby": "h-critical", class: "panel" }, h("h2", { id: "h-critical" }, `Critical path (${w.critical_path_length} steps left)`),
        w.critical_path.length ? h("ol", { class: "critical-path" }, w.critical_path.map((id) => h("li", {}, h("a", { href: `#/t/${encodeURIComponent(id)}` }, titles.get(id) || id)))) : h("p", { class: "empty" }, "Nothing left to do.")),
      h("section", { "aria-labelledby": "h-graph" }, h("h2", { id: "h-graph" }, "Graph"),
        h("ul", { class: "legend", "aria-label": "Legend" }, COLUMNS.map((c) => h("li", {}, h("span", { class: "swatch", "data-swatch": c }), LABELS[c])),
          h("li", {}, h("span", { class: "swatch", "data-swatch": "critical" }), "Critical path")),
        h("div", { class: "graph-wrap", tabindex: 0, "aria-label": "Workflow graph, scrollable" }, graph(data))));
    for (const el of view.querySelectorAll("[data-swatch]")) {
      const c = el.dataset.swatch;
      el.style.background = c === "critical" ? "#fff" : `var(--${c}-bg)`;
      el.style.borderColor = c === "critical" ? "var(--critical)" : `var(--${c}-line)`;
    }
    applyWidths(view);
    current.ids = new Set(w.tasks.map((t) => t.id));
  };
  current.refresh = render;
  current.wants = (change) => change.workflows.includes(r.id);
  await render();
}

// --- charts ----------------------------------------------------------------------------------
const SERIES_COLORS = { ready: "#2563eb", running: "#b45309", pending: "#6d28d9", failed: "#b91c1c", completed: "#15803d", cancelled: "#4b5563" };

function lineChart(title, labels, series, unit) {
  const W = 480, H = 200, L = 44, B = 24, T = 10, R = 10;
  const values = series.flatMap((s) => s.values.filter((v) => v !== null));
  const max = Math.max(1, ...values);
  const x = (i) => L + (i * (W - L - R)) / Math.max(1, labels.length - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const lines = series.map((s) => {
    let d = "";
    s.values.forEach((v, i) => { if (v !== null) d += `${d && s.values[i - 1] !== null ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `; });
    return h("svg:path", { d: d || "M0,0", fill: "none", stroke: s.color, "stroke-width": 2 });
  });
  // a dot per value: a bucket between two empty ones (null) has no line to draw, only its dot
  const points = series.map((s) => s.values.map((v, i) => (v === null ? null
    : h("svg:circle", { class: "point", cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: s.color }))));
  const axis = [
    h("svg:line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#6b7280" }),
    h("svg:line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#6b7280" }),
    h("svg:text", { x: L - 6, y: T + 10, "text-anchor": "end", "font-size": 11, fill: "#374151" }, unit === "%" ? `${Math.round(max * 100)}%` : String(Math.round(max * 100) / 100)),
    h("svg:text", { x: L - 6, y: H - B, "text-anchor": "end", "font-size": 11, fill: "#374151" }, "0"),
    h("svg:text", { x: L, y: H - 6, "font-size": 11, fill: "#374151" }, "−" + labels.length),
    h("svg:text", { x: W - R, y: H - 6, "text-anchor": "end", "font-size": 11, fill: "#374151" }, "now"),
  ];
  const id = title.toLowerCase().replace(/\W+/g, "-");
  const table = h("details", {}, h("summary", {}, `${title}: data table`), h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Bucket end"), series.map((s) => h("th", { scope: "col" }, s.name)))),
    h("tbody", {}, labels.map((label, i) => h("tr", {}, h("td", {}, when(label)), series.map((s) => h("td", {}, s.values[i] === null ? "—" : unit === "%" ? pct(s.values[i]) : String(s.values[i])))))))));
  return h("figure", { class: "chart panel", "aria-labelledby": `fig-${id}` },
    h("figcaption", { id: `fig-${id}` }, h("strong", {}, title)),
    h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}, last ${labels.length} buckets; see the data table` }, axis, lines, points),
    series.length > 1 ? h("ul", { class: "legend" }, series.map((s) => h("li", {}, h("span", { class: "swatch", "data-color": s.color }), s.name))) : null,
    table);
}

async function showCharts(r) {
  const project = r.project;
  const range = RANGES[r.params.get("range")] ? r.params.get("range") : "1h";
  const [minutes, described] = RANGES[range];
  document.title = `${project} charts · Task queue board`;
  const holder = h("div", { class: "charts" });
  const chartsHref = (key) => `#/p/${encodeURIComponent(project)}/charts${key === "1h" ? "" : `?range=${key}`}`;
  view.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Projects"), " / ", project),
    h("h1", {}, `${project}: charts`),
    h("ul", { class: "tabs" }, h("li", {}, h("a", { href: `#/p/${encodeURIComponent(project)}` }, "Board")),
      h("li", {}, h("a", { href: `#/p/${encodeURIComponent(project)}/charts`, "aria-current": "page" }, "Charts"))),
    h("nav", { "aria-label": "Time range" }, h("ul", { class: "tabs ranges" }, Object.keys(RANGES).map((key) =>
      h("li", {}, h("a", { href: chartsHref(key), "aria-current": key === range ? "true" : null }, RANGE_LABELS[key]))))),
    h("p", { class: "summary", id: "range-summary" }, `${described}; updated live.`), holder);
  let last = 0;
  const render = async () => {
    last = Date.now();
    const c = await api(`/board/api/charts?project=${encodeURIComponent(project)}&minutes=${minutes}`);
    const cut = c.counted_since ? ` Buckets before ${when(c.counted_since)} are not counted: the history that far back is longer than the charts read.` : "";
    document.getElementById("range-summary").textContent = `${described}; updated live.${cut}`;
    const depth = Object.entries(c.depth).map(([status, values]) => ({ name: status === "pending" ? "blocked" : status, color: SERIES_COLORS[status], values }));
    holder.replaceChildren(
      lineChart("Queue depth by status", c.buckets, depth, ""),
      lineChart("Throughput (completed per bucket)", c.buckets, [{ name: "completed", color: "#15803d", values: c.throughput }], ""),
      lineChart("Failure rate", c.buckets, [{ name: "failure rate", color: "#b91c1c", values: c.failure_rate }], "%"),
      lineChart("Claim latency (median seconds)", c.buckets, [{ name: "seconds", color: "#1d4ed8", values: c.claim_latency }], "s"));
    for (const el of holder.querySelectorAll("[data-color]")) { el.style.background = el.dataset.color; el.style.borderColor = el.dataset.color; }
  };
  // charts summarise an hour or more: redraw at most every 2 s however fast the pushes come
  current.refresh = async () => { if (Date.now() - last > 2000) await render(); else setTimeout(scheduleRefresh, 2000 - (Date.now() - last)); };
  current.wants = (change) => change.projects.includes(project);
  await render();
}

window.addEventListener("hashchange", () => { clearFlash(); route(true); });
start(false);

// squall's console: keeps the page live from /api/v1/stream (server-sent events). The page
// reads without this script; with it, rows appear and change, a workflow's graph recolours,
// the log is followed, and the overview's figures move. After a lost connection the browser
// resumes from the last event it had (Last-Event-ID); when squall no longer has the events
// in between (`squall.gap`) the page reloads.

const body = document.body;
const detailId = body.dataset.execution || null;
const filters = body.dataset.filters ? JSON.parse(body.dataset.filters) : null;
const live = document.getElementById("live");
const FINAL = ["succeeded", "failed", "timeout", "canceled", "abandoned"];

function text(tag, value, attrs = {}) {
  const el = document.createElement(tag);
  if (value !== undefined && value !== null) el.textContent = String(value);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function link(href, label) {
  return text("a", label, { href });
}

function statusBadge(s) {
  const el = text("span", s, { class: `status status-${s}` });
  el.dataset.status = "";
  return el;
}

function shortTime(t) {
  return t ? t.replace("T", " ").replace(/\..*$/, "").replace(/Z$/, "") : "";
}

function duration(s) {
  if (s === null || s === undefined) return "";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function commandForm(id, command, label) {
  const form = text("form", null, { method: "post", action: `/executions/${id}/${command}`, class: "inline" });
  const button = text("button", label, { type: "submit" });
  button.dataset.command = command;
  form.append(button);
  return form;
}

function commands(e) {
  const span = text("span", null, { class: "commands" });
  const s = e.status;
  if (["requested", "scheduled", "delayed", "running", "pausing", "paused", "resuming"].includes(s)) span.append(commandForm(e.id, "cancel", "Cancel"));
  if (e.action.runner_type === "orquesta" && s === "running") span.append(commandForm(e.id, "pause", "Pause"));
  if (s === "paused") span.append(commandForm(e.id, "resume", "Resume"));
  if (FINAL.includes(s) && !e.parent) span.append(commandForm(e.id, "rerun", "Re-run"));
  return span;
}

function row(e) {
  const tr = document.createElement("tr");
  tr.dataset.id = e.id;
  tr.dataset.action = e.action.ref;
  tr.dataset.status = e.status;
  const cells = [
    link(`/executions/${e.id}`, e.id),
    link(`/actions/${e.action.ref}`, e.action.ref),
    statusBadge(e.status),
    document.createTextNode((e.context && e.context.user) || ""),
    e.rule ? link(`/rules/${e.rule.ref}`, e.rule.ref) : document.createTextNode(""),
    e.trigger_instance ? link(`/trace/${e.trigger_instance.id}`, e.trigger_instance.id) : document.createTextNode(""),
    text("time", shortTime(e.start_timestamp), { datetime: e.start_timestamp }),
    document.createTextNode(duration(e.elapsed_seconds)),
    commands(e),
  ];
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    if (i === 1 && e.task) {
      td.append(c, " ", text("small", `task ${e.task}${e.item !== null && e.item !== undefined ? `[${e.item}]` : ""}`));
    } else {
      td.append(c);
    }
    if (i === 7) { td.className = "num"; td.dataset.elapsed = ""; }
    tr.append(td);
  });
  return tr;
}

function wanted(e) {
  if (!filters) return !e.parent;
  if (!filters.all && !filters.trigger_instance && !filters.rule && e.parent) return false;
  if (filters.action && e.action.ref !== filters.action) return false;
  if (filters.status && e.status !== filters.status) return false;
  if (filters.rule && !(e.rule && e.rule.ref === filters.rule)) return false;
  if (filters.user && !(e.context && e.context.user === filters.user)) return false;
  if (filters.trigger_instance && !(e.trigger_instance && e.trigger_instance.id === filters.trigger_instance)) return false;
  if (filters.until || filters.since) return false;
  return true;
}

function updateTable(table, e, created) {
  const tbody = table.tBodies[0];
  const old = tbody.querySelector(`tr[data-id="${CSS.escape(e.id)}"]`);
  if (old) {
    old.replaceWith(row(e));
  } else if (created) {
    tbody.prepend(row(e));
  }
}

let graphTimer = null;
function refreshGraph() {
  const holder = document.getElementById("graph");
  if (!holder || graphTimer) return;
  graphTimer = setTimeout(async () => {
    graphTimer = null;
    const r = await fetch(`/executions/${encodeURIComponent(detailId)}/graph`, { credentials: "same-origin" });
    if (r.ok) holder.innerHTML = await r.text();
  }, 150);
}

let overviewTimer = null;
function refreshOverview() {
  if (overviewTimer) return;
  overviewTimer = setTimeout(async () => {
    overviewTimer = null;
    const r = await fetch("/api/v1/overview", { credentials: "same-origin" });
    if (!r.ok) return;
    const figures = await r.json();
    for (const el of document.querySelectorAll("[data-metric]")) {
      let v = figures;
      const path = el.dataset.metric;
      const dot = path.indexOf(".");
      v = dot < 0 ? v[path] : (v[path.slice(0, dot)] || {})[path.slice(dot + 1)];
      if (el.dataset.format === "duration") el.textContent = v === null || v === undefined ? "–" : `≤ ${duration(v)}`;
      else el.textContent = v === undefined || v === null ? "0" : String(v);
    }
  }, 300);
}

function onExecution(e, created) {
  if (detailId && e.id === detailId) {
    if (FINAL.includes(e.status)) { location.reload(); return; }
    const badge = document.querySelector("#summary [data-status]");
    if (badge) badge.replaceWith(statusBadge(e.status));
    const result = document.getElementById("result");
    if (result) result.textContent = JSON.stringify(e.result, null, 2);
  }
  if (detailId && e.parent === detailId) {
    refreshGraph();
    const children = document.getElementById("children");
    if (children) updateTable(children, e, created);
    else if (created) location.reload();
  }
  const table = document.getElementById("executions");
  if (table && !detailId) updateTable(table, e, created && wanted(e));
  if (body.dataset.page === "overview") refreshOverview();
}

function onOutput(line) {
  if (!detailId || line.execution_id !== detailId) return;
  const log = document.getElementById("log");
  if (!log) return;
  const span = text("span", `${shortTime(line.timestamp)} ${line.message}`, { class: `line level-${line.level}` });
  log.append(span, "\n");
  const follow = document.getElementById("follow");
  if (!follow || follow.checked) log.scrollTop = log.scrollHeight;
}

function connect() {
  // An execution's page follows that execution (its tasks and log lines with it); the other
  // pages follow the shared console feed: each changed execution once per quarter second.
  const url = detailId
    ? `/api/v1/stream?console=execution&execution=${encodeURIComponent(detailId)}`
    : "/api/v1/stream?console=executions";
  const source = new EventSource(url);
  source.onopen = () => {
    live.classList.remove("off");
    live.title = "live updates: on";
    body.dataset.live = "1";
  };
  source.onerror = () => {
    live.classList.add("off");
    live.title = "live updates: reconnecting";
    body.dataset.live = "0";
  };
  source.addEventListener("squall.gap", () => location.reload());
  source.addEventListener("st2.execution__create", (m) => onExecution(JSON.parse(m.data), true));
  source.addEventListener("st2.execution__update", (m) => onExecution(JSON.parse(m.data), false));
  source.addEventListener("st2.execution.output__create", (m) => onOutput(JSON.parse(m.data)));
  source.addEventListener("squall.skipped", () => { if (body.dataset.page === "overview") refreshOverview(); });
  if (body.dataset.page === "overview") setInterval(refreshOverview, 2000);
  // A page left for another must not keep its stream open: browsers allow few connections
  // per host, and a page kept for the back button would hold one.
  window.addEventListener("pagehide", () => source.close());
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });
}

if (live && "EventSource" in window) connect();
const log = document.getElementById("log");
if (log) log.scrollTop = log.scrollHeight;

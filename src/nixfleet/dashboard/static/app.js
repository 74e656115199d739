// NixFleet dashboard: draws the fleet from the /api/events stream.
// Data is always inserted with textContent, never as HTML, and there are no inline handlers.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const state = { hosts: new Map(), commands: new Map(), target: null, selected: new Set(),
                shown: null, lines: new Map(), rendered: 0, historyHost: null };
const ACTIONS = [["plan", "Preview"], ["pull", "Pull"], ["switch", "Switch"],
                 ["pull-switch", "Pull+Switch"], ["test", "Test"], ["stop", "Stop"],
                 ["restart", "Restart agent"]];
const IDENTITY_LABELS = { none: "not enrolled", active: "own token", revoked: "revoked" };
const ACTIVE = new Set(["queued", "dispatched", "running"]);
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function post(url, body, method = "POST") {
  const res = await fetch(url, { method, credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.detail || `HTTP ${res.status}`);
  return data;
}

function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

const HEALTH_CELL = 10; // index of the "Connection" cell in a host row

function label(word) { return String(word || "").replaceAll("_", " "); }

function healthParts(h) {
  // Connection health: how long up, how often it dropped, how it came back, TLS trouble.
  const c = h.connection || {};
  const parts = [];
  if (c.connected_since) {
    parts.push(el("div", { "data-health": "since",
      text: `since ${new Date(c.connected_since * 1000).toLocaleTimeString()}` }));
  }
  const n = c.reconnects_1h || 0;
  parts.push(el("div", { "data-health": "reconnects", class: n > 3 ? "warn" : "muted",
    text: `${n} reconnect${n === 1 ? "" : "s"} in the last hour` }));
  const b = c.breaker;
  if (b && b.failed_attempts > 0) {
    const how = b.state === "half_open" ? "by a breaker probe" : `breaker ${label(b.state)}`;
    parts.push(el("div", { "data-health": "breaker", class: "muted",
      text: `back after ${b.failed_attempts} failed dials (${Math.round(b.down_s)} s), ${how}` }));
  }
  const t = c.tls_failure;
  if (t) {
    parts.push(el("div", { "data-health": "tls", class: "bad",
      text: `last TLS failure: ${label(t.kind)}, ${t.count} time${t.count === 1 ? "" : "s"}, ${ago(t.at)}` }));
  }
  return parts;
}

function activeCommand(hostId) {
  let best = null;
  for (const c of state.commands.values()) {
    if (c.host_id === hostId && ACTIVE.has(c.state) && (!best || c.created_at > best.created_at)) best = c;
  }
  return best;
}

function hostRow(h) {
  const st = h.status || {};
  const tr = el("tr", { "data-host": h.id });
  const box = el("input", { type: "checkbox", "data-select": h.id, "aria-label": `Select ${h.id}` });
  box.checked = state.selected.has(h.id);
  const dot = el("span", { class: "dot" });
  if (h.theme_color) dot.style.background = h.theme_color;
  const name = el("a", { href: "#", "data-history": h.id, text: h.id });
  const identity = h.identity_state === "active" ? "" : el("span",
    { class: `badge identity-${h.identity_state}`, text: IDENTITY_LABELS[h.identity_state] || "" });
  const meta = [h.location, h.device_type].filter(Boolean).join(" · ");
  const online = el("span", { class: `dot ${h.online ? "on" : "off"}` });
  // What runs, not what is checked out: the deployed commit and its state against the target.
  const dep = h.deploy || {};
  const commit = dep.deployed_commit ? dep.deployed_commit.slice(0, 7) : "—";
  const drift = el("span", { class: `badge ${dep.state}`, text: (dep.state || "").replace("_", " "),
    title: dep.last && dep.state === "failed" ? `last deploy ${dep.last.result}: ${dep.last.detail || ""}` : "" });
  const plan = h.plan ? el("div", { class: `muted plan${h.plan.expired ? " expired" : ""}`,
    "data-plan": h.id, text: `plan: ${h.plan.summary}${h.plan.expired ? " (expired)" : ""}` }) : "";
  const lock = h.lock_age_days == null ? "—" : `${Math.round(h.lock_age_days)} d`;
  const tests = h.last_test ? `${h.last_test.passed}/${h.last_test.total}` : "—";
  const cmd = activeCommand(h.id);
  const cmdCell = cmd ? el("a", { href: "#", "data-show": cmd.id },
    el("span", { class: `badge ${cmd.state}`, text: `${cmd.kind} ${stateLabel(cmd)}` })) : "—";
  const actions = el("td", { class: "actions" });
  for (const [kind, label] of ACTIONS) {
    actions.append(el("button", { "data-action": kind, "data-host": h.id, text: label }));
  }
  tr.append(el("td", {}, box), el("td", {}, dot, name, identity, el("div", { class: "muted", text: meta })),
    el("td", {}, online, h.online ? "online" : "offline"), el("td", { text: ago(h.last_seen) }),
    el("td", { text: `${st.os_kind || "?"} ${st.os_version || ""}` }),
    el("td", { text: st.generation ?? "—" }), el("td", {}, el("code", { text: commit }), drift, plan),
    el("td", { text: lock }), el("td", { text: tests }),
    el("td", { text: rebootText(h.reboot), title: (h.reboot && h.reboot.reason) || "" }),
    el("td", { class: "health" }, ...healthParts(h)), el("td", {}, cmdCell), actions);
  return tr;
}

function rebootText(reboot) {
  if (!reboot || reboot.needed === null) return "n/a";
  return reboot.needed ? `yes: ${reboot.reason}` : "—";
}

function rowSignature(h) {
  // Everything the row shows except "last seen", which is patched in place: rebuilding a
  // row on every heartbeat would swallow clicks on its buttons.
  const { last_seen, status, ...rest } = h;
  const { uptime_s, load1, mem_available, ...st } = status || {};
  const cmd = activeCommand(h.id);
  return JSON.stringify([rest, st, cmd && [cmd.id, stateLabel(cmd)], state.selected.has(h.id)]);
}

function renderHosts() {
  const body = $("#hosts tbody");
  const ids = [...state.hosts.keys()].sort();
  const existing = new Map([...body.children].map((tr) => [tr.dataset.host, tr]));
  let prev = null;
  for (const id of ids) {
    const h = state.hosts.get(id);
    const sig = rowSignature(h);
    let tr = existing.get(id);
    if (!tr || tr.dataset.sig !== sig) {
      const fresh = hostRow(h);
      fresh.dataset.sig = sig;
      if (tr) tr.replaceWith(fresh); else body.insertBefore(fresh, prev ? prev.nextSibling : body.firstChild);
      tr = fresh;
    } else {
      tr.children[3].textContent = ago(h.last_seen);
      tr.children[HEALTH_CELL].replaceChildren(...healthParts(h)); // "… min ago" moves on
    }
    existing.delete(id);
    prev = tr;
  }
  for (const tr of existing.values()) tr.remove();
  $("#empty").hidden = state.hosts.size > 0;
  $("#target").textContent = state.target ? state.target.slice(0, 7) : "unknown";
  $("#sel-count").textContent = String(state.selected.size);
  renderIdentity();
}

function stateLabel(c) {
  // A running command whose agent dropped is waiting for it, not failed (yet).
  if (ACTIVE.has(c.state) && c.disconnected_at) return `${c.state}, awaiting reconnect`;
  if (c.state === "running" && c.warned) return "running, over its expected time";
  return c.state;
}

function expiryNote(c) {
  if (c.state !== "queued" || !c.expires_at) return "";
  const min = Math.max(0, Math.round((c.expires_at - Date.now() / 1000) / 60));
  return `expires in ${min} min`;
}

function renderHistory() {
  const host = state.historyHost;
  $("#history-host").textContent = host || "";
  const rows = [...state.commands.values()].filter((c) => c.host_id === host)
    .sort((a, b) => b.created_at - a.created_at).slice(0, 30)
    .map((c) => el("tr", { "data-show": c.id },
      el("td", { text: new Date(c.created_at * 1000).toLocaleTimeString() }),
      el("td", { text: c.kind }),
      el("td", {}, el("span", { class: `badge ${c.state}`, text: stateLabel(c) })),
      el("td", { text: c.exit_code ?? expiryNote(c) }),
      el("td", {}, c.state === "queued"
        ? el("button", { "data-cancel": c.id, text: "Cancel" }) : "")));
  $("#history tbody").replaceChildren(...rows);
  renderIdentity();
}

function renderIdentity() {
  const h = state.hosts.get(state.historyHost);
  $("#identity").hidden = !h;
  if (!h) return;
  $("#identity-host").textContent = h.id;
  const used = h.token_used_at ? `${ago(h.token_used_at)} from ${h.token_used_from || "?"}` : "never";
  const facts = [["Credential", IDENTITY_LABELS[h.identity_state] || h.identity_state],
    ["Last used", used],
    ["Client certificate", h.cert_sha256 ? `SHA-256 ${h.cert_sha256.slice(0, 16)}…` : "not required"]];
  $("#identity-facts").replaceChildren(...facts.flatMap(([k, v]) =>
    [el("dt", { text: k }), el("dd", { text: v, "data-fact": k })]));
}

function shownOnce(prefix, secret, suffix = "") {
  return [prefix, el("span", { class: "token", text: secret }), suffix];
}

async function identityAction(kind) {
  const host = state.historyHost;
  const out = $("#identity-result");
  const url = `/api/hosts/${encodeURIComponent(host)}`;
  try {
    if (kind === "revoke") {
      if (!window.confirm(`Revoke the agent token of ${host}? Its agent is cut off at once.`)) return;
      await post(`${url}/agent-token`, undefined, "DELETE");
      out.replaceChildren(`Revoked: ${host}'s agent was disconnected. Issue an enrollment code to let it back in.`);
    } else if (kind === "rotate") {
      const res = await post(`${url}/agent-token`);
      out.replaceChildren(...shownOnce(`New agent token for ${host}, shown only now: `, res.agent_token,
        " (the old one stopped working; put this one in the agent's token file)"));
    } else {
      const res = await post(`${url}/enroll-code`);
      const until = new Date(res.enroll_expires_at * 1000).toLocaleTimeString();
      out.replaceChildren(...shownOnce(`Enrollment code for ${host}, shown only now: `, res.enroll_code,
        ` (works once, until ${until}; start the agent with --enroll-code-file)`));
    }
  } catch (err) { out.textContent = err.message; }
}

function renderOutputMeta() {
  const c = state.commands.get(state.shown);
  if (!c) return;
  $("#output-title").textContent = `${c.kind} on ${c.host_id}`;
  const exit = c.exit_code == null ? "" : ` · exit ${c.exit_code}`;
  const detail = c.detail ? ` · ${c.detail}` : "";
  const expiry = expiryNote(c) ? ` · ${expiryNote(c)}` : "";
  $("#output-meta").textContent = `${stateLabel(c)}${exit}${detail}${expiry}`;
  $("#output-meta").dataset.state = c.state;
}

function renderOutput() {
  const pre = $("#output");
  const seqs = [...state.lines.keys()].sort((a, b) => a - b);
  if (seqs.length && seqs[seqs.length - 1] !== seqs.length) return; // wait for the gap to fill
  if (state.rendered > seqs.length) { pre.replaceChildren(); state.rendered = 0; }
  for (const seq of seqs.slice(state.rendered)) {
    const line = state.lines.get(seq);
    pre.append(el("span", { class: line.stream, text: line.text + "\n" }));
  }
  state.rendered = seqs.length;
  pre.scrollTop = pre.scrollHeight;
}

const LIVE_STATES = ["queued", "dispatched", "running"]; // every other state is final
function stateRank(s) { const i = LIVE_STATES.indexOf(s); return i < 0 ? LIVE_STATES.length : i; }

async function show(commandId) {
  state.shown = commandId; state.lines = new Map(); state.rendered = 0;
  $("#output").replaceChildren();
  renderOutputMeta();
  const res = await fetch(`/api/commands/${encodeURIComponent(commandId)}`, { credentials: "same-origin" });
  if (!res.ok || state.shown !== commandId) return;
  const cmd = await res.json();
  const known = state.commands.get(cmd.id);
  // The event stream may already have told us a later state than this (older) read.
  const fresher = known && stateRank(known.state) > stateRank(cmd.state) ? { ...known } : {};
  state.commands.set(cmd.id, Object.assign(known || {}, cmd, fresher, { output: undefined }));
  for (const line of cmd.output) state.lines.set(line.seq, line);
  renderOutputMeta(); renderOutput();
}

// The counts per state and the plans' summary come from the API, which owns the rules;
// one request at a time, and at most a few a second however many host events arrive.
let headerPending = false;
async function refreshFleetHeader() {
  if (headerPending) return;
  headerPending = true;
  await new Promise((r) => setTimeout(r, 300));
  try {
    const res = await fetch("/api/hosts", { credentials: "same-origin" });
    if (!res.ok) return;
    const data = await res.json();
    const c = data.counts;
    $("#fleet-counts").textContent = `${data.hosts.length} hosts · ${c.online} online · ` +
      `${c.behind} behind · ${c.failed} failed · ${c.running} running · ${c.reboot} need a reboot`;
    $("#plan-summary").textContent = data.plan_summary ? `Preview: ${data.plan_summary}` : "";
  } finally { headerPending = false; }
}

function applySnapshot(snap) {
  state.hosts = new Map(snap.hosts.map((h) => [h.id, h]));
  state.commands = new Map(snap.commands.map((c) => [c.id, c]));
  state.target = snap.target;
  $("#branch").textContent = snap.branch;
  for (const id of [...state.selected]) if (!state.hosts.has(id)) state.selected.delete(id);
  renderHosts(); renderHistory(); refreshFleetHeader();
  if (state.shown) show(state.shown);
}

function connect() {
  const source = new EventSource("/api/events");
  const handlers = {
    snapshot: applySnapshot, resync: applySnapshot,
    host: (e) => { state.hosts.set(e.host.id, e.host); renderHosts(); refreshFleetHeader(); },
    host_removed: (e) => { state.hosts.delete(e.host_id); state.selected.delete(e.host_id); renderHosts(); },
    target: (e) => { state.target = e.commit; renderHosts(); },
    security: () => {}, // drawn on /security; handled here to keep the sequence unbroken
    command: (e) => {
      state.commands.set(e.command.id, e.command);
      renderHosts();
      if (e.command.host_id === state.historyHost) renderHistory();
      if (e.command.id === state.shown) renderOutputMeta();
    },
    output: (e) => {
      if (e.command_id !== state.shown) return;
      for (const line of e.lines) state.lines.set(line.seq, line);
      renderOutput();
    },
  };
  let lastId = 0;
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (msg) => {
      const id = Number(msg.lastEventId);
      if (name === "snapshot" || name === "resync") lastId = id;
      else if (id <= lastId) return; // older than the snapshot we hold
      else if (id !== lastId + 1) { source.close(); connect(); return; } // a gap: start over
      else lastId = id;
      fn(JSON.parse(msg.data));
    });
  }
  source.onopen = () => { $("#conn").textContent = "live"; $("#conn").className = "conn live"; };
  source.addEventListener("session_ended", () => { source.close(); window.location.assign("/login"); });
  source.onerror = () => {
    $("#conn").className = "conn down";
    if (source.readyState === EventSource.CLOSED) {
      // The browser gives up on a 401: the session is gone, so is the page's purpose.
      $("#conn").textContent = "session ended — log in again";
      window.location.assign("/login");
    } else {
      $("#conn").textContent = "reconnecting…";
    }
  };
}

async function runAction(hostId, kind) {
  try {
    const res = await post(`/api/hosts/${encodeURIComponent(hostId)}/command`, { command: kind });
    state.historyHost = hostId;
    if (kind !== "stop") show(res.command_id);
    renderHistory();
  } catch (err) {
    $("#output-meta").textContent = `${kind} on ${hostId}: ${err.message}`;
  }
}

document.addEventListener("click", (ev) => {
  const t = ev.target.closest("[data-action],[data-bulk],[data-history],[data-show],[data-cancel],[data-identity]");
  if (!t) return;
  if (t.dataset.identity) identityAction(t.dataset.identity);
  else if (t.dataset.cancel) {
    ev.stopPropagation();
    post(`/api/commands/${encodeURIComponent(t.dataset.cancel)}/cancel`)
      .catch((err) => { $("#output-meta").textContent = err.message; });
  } else if (t.dataset.action) runAction(t.dataset.host, t.dataset.action);
  else if (t.dataset.bulk) runBulk(t.dataset.bulk);
  else if (t.dataset.history) {
    ev.preventDefault();
    if (state.historyHost !== t.dataset.history) $("#identity-result").textContent = "";
    state.historyHost = t.dataset.history; renderHistory();
  }
  else if (t.dataset.show) { ev.preventDefault(); show(t.dataset.show); }
});

document.addEventListener("change", (ev) => {
  const t = ev.target;
  if (t.id === "select-all") {
    state.selected = t.checked ? new Set(state.hosts.keys()) : new Set();
    renderHosts();
  } else if (t.dataset && t.dataset.select) {
    if (t.checked) state.selected.add(t.dataset.select); else state.selected.delete(t.dataset.select);
    renderHosts();
  }
});

async function runBulk(kind) {
  if (!state.selected.size) { $("#bulk-result").textContent = "select hosts first"; return; }
  try {
    const res = await post("/api/commands/bulk", { command: kind, host_ids: [...state.selected] });
    const bad = res.results.filter((r) => r.error);
    $("#bulk-result").textContent = `${kind}: ${res.results.length - bad.length} queued` +
      (bad.length ? `, ${bad.length} refused (${bad.map((r) => r.host_id).join(", ")})` : "");
  } catch (err) { $("#bulk-result").textContent = err.message; }
}

$("#add-host-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const out = $("#add-host-result");
  try {
    const res = await post("/api/hosts", Object.fromEntries(form.entries()));
    const until = new Date(res.enroll_expires_at * 1000).toLocaleTimeString();
    out.replaceChildren(...shownOnce(`Added ${res.host.id}. Its one-time enrollment code, shown only now: `,
      res.enroll_code, ` (until ${until}; start its agent with --enroll-code-file)`));
    ev.target.reset();
  } catch (err) { out.textContent = err.message; }
});

setInterval(renderHosts, 15000); // keeps "last seen" ages honest between events
connect();

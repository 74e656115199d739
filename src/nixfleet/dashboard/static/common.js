// Shared by the dashboard's pages: DOM building, the API, time formats, the live stream.
// Data is always inserted with textContent, never as HTML, and there are no inline handlers.
"use strict";

window.NF = window.NF || {};

(function (NF) {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  NF.csrf = csrfMeta ? csrfMeta.content : "";
  NF.$ = (sel, root = document) => root.querySelector(sel);

  NF.el = function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined && c !== "") node.append(c);
    return node;
  };

  NF.svg = function svg(tag, attrs = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };

  // Sets text only when it changed: a cell that is rewritten on every heartbeat would make
  // screen readers and selection flicker, and costs layout for nothing.
  NF.setText = function setText(node, text) {
    const t = String(text);
    if (node.textContent !== t) node.textContent = t;
  };
  NF.setAttr = function setAttr(node, name, value) {
    if (value === null || value === undefined) { if (node.hasAttribute(name)) node.removeAttribute(name); return; }
    const v = String(value);
    if (node.getAttribute(name) !== v) node.setAttribute(name, v);
  };

  NF.api = async function api(url, { method = "GET", body } = {}) {
    const res = await fetch(url, { method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": NF.csrf },
      body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await res.json().catch(() => ({}));
    if (res.status === 401) { window.location.assign("/login"); throw new Error("Your session ended: log in again."); }
    if (!res.ok) {
      const err = new Error(data.detail || `The dashboard answered ${res.status}; try again.`);
      err.code = data.error;
      throw err;
    }
    return data;
  };
  NF.post = (url, body, method = "POST") => NF.api(url, { method, body });

  // One command for one host. A deploy while another runs is refused by the dashboard
  // (guard rail): ask, and send it again with force only when the operator says so.
  NF.command = async function command(hostId, kind) {
    const url = `/api/hosts/${encodeURIComponent(hostId)}/command`;
    try {
      return await NF.post(url, { command: kind });
    } catch (err) {
      if (err.code !== "already_deploying" || !window.confirm(`${err.message}\n\nQueue another ${kind} after it?`)) throw err;
      return NF.post(url, { command: kind, force: true });
    }
  };

  NF.ago = function ago(ts, now = Date.now() / 1000) {
    if (!ts) return "never";
    const s = Math.max(0, now - ts);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400 * 2) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  };
  NF.shortAgo = (ts, now) => NF.ago(ts, now).replace(" ago", "");
  // Formatters are built once: toLocaleString(…, options) builds one per call, which costs
  // more than the rest of a row's update.
  const DATE_TIME = new Intl.DateTimeFormat(undefined,
    { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  NF.dateTime = (ts) => ts ? DATE_TIME.format(ts * 1000) : "—";
  NF.clock = (ts) => CLOCK.format(ts * 1000);
  NF.duration = function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return "—";
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
  };
  NF.words = (w) => String(w || "").replaceAll("_", " ");
  // "role=web, site=ams1" -> {role: "web", site: "ams1"}; the dashboard checks the rules
  // (a word without "=" becomes an empty value, which it refuses in words).
  NF.parseLabels = (text) => Object.fromEntries(String(text).split(/[\s,]+/).filter(Boolean)
    .map((w) => { const i = w.indexOf("="); return i < 0 ? [w, ""] : [w.slice(0, i), w.slice(i + 1)]; }));
  NF.short = (commit) => commit ? String(commit).slice(0, 7) : "—";

  NF.ACTIVE = new Set(["queued", "dispatched", "running"]);
  NF.DEPLOY_KINDS = new Set(["switch", "pull-switch"]);

  NF.stateLabel = function stateLabel(c) {
    // A running command whose agent dropped is waiting for it, not failed (yet); a gated
    // one for as long as its gate (the agent is meant to be away if the switch broke it).
    if (NF.ACTIVE.has(c.state) && c.disconnected_at) {
      return `${c.state}, ${c.gate ? "waiting for the health gate" : "awaiting reconnect"}`;
    }
    if (c.state === "running" && c.warned) return "running, over its expected time";
    if (c.state === "rolled_back") return "rolled back";
    return c.state;
  };
  // What a switch or rollback moved: "gen 12 (abc1234) → gen 13 (def5678)"; "" when unknown.
  NF.changeWords = function changeWords(c) {
    const ch = c && c.change;
    if (!ch || !ch.before || !ch.after) return "";
    const point = (p) => `${p.generation === null || p.generation === undefined ? "gen ?" : `gen ${p.generation}`}${p.commit ? ` (${NF.short(p.commit)})` : ""}`;
    // A rolled-back switch ends where it began: "gen 1 → gen 1" would read as a no-op.
    if (c.state === "rolled_back" && point(ch.before) === point(ch.after)) return `stayed on ${point(ch.after)}`;
    return `${point(ch.before)} → ${point(ch.after)}`;
  };
  // "rollback to gen 12" for a rollback to a chosen generation, else the kind.
  NF.kindWords = (c) => (c.kind === "rollback" && c.generation ? `rollback to gen ${c.generation}` : c.kind);
  // A switch's health gate in a few words: "gate 120 s: agent, web, tests".
  NF.gateWords = function gateWords(gate) {
    if (!gate) return "";
    const what = [gate.confirm ? "agent" : null, ...(gate.checks || []).map((k) => k.name || k.unit || k.url
      || (k.port ? `${k.host}:${k.port}` : k.kind))].filter(Boolean);
    return `gate ${gate.deadline_s} s${what.length ? `: ${what.join(", ")}` : ""}`;
  };

  // The host's deploy state: the dashboard's own `deploy` field when it sends one, else
  // what the older fields (drift, the last deploy command) say.
  NF.deployState = function deployState(h, lastDeploy) {
    if (h.deploy && h.deploy.state) return h.deploy.state;
    if (lastDeploy && lastDeploy.state === "failed") return "failed";
    if (h.drift === "current" || h.drift === "behind") return h.drift;
    return "unknown";
  };
  NF.rebootNeeded = (h) => (h.reboot && "needed" in h.reboot) ? h.reboot.needed : !!h.reboot_needed;
  NF.memFraction = function memFraction(st) {
    if (!st || !st.mem_total) return null;
    return Math.min(1, Math.max(0, 1 - (st.mem_available || 0) / st.mem_total));
  };

  // A stream the browser gave up on: EventSource stops for good on any answer but 200, and
  // only a 401 means the session is gone. A 503 (the dashboard's database out of reach), a
  // 502 (no replica behind the balancer) or no answer at all is waited out: the page asks
  // the stream's own address what it answers now, and opens the stream again in a while.
  NF.streamAnswer = async function streamAnswer() {
    const stop = new AbortController();
    try {
      const res = await fetch("/api/events", { credentials: "same-origin", signal: stop.signal });
      return res.status;
    } catch (err) {
      return 0;
    } finally {
      stop.abort(); // a 200 is a stream: the page opens its own
    }
  };
  NF.STREAM_RETRY_MS = 3000;
  NF.whenStreamStops = async function whenStreamStops(reopen, say) {
    if (await NF.streamAnswer() === 401) {
      say("session ended — log in again");
      window.location.assign("/login");
      return;
    }
    say("dashboard unavailable — retrying…");
    setTimeout(reopen, NF.STREAM_RETRY_MS);
  };

  // The live stream: a snapshot, then deltas with contiguous ids; a gap starts over.
  NF.connect = function connect(handlers, conn) {
    const source = new EventSource("/api/events");
    let lastId = 0;
    const names = ["snapshot", "resync", "host", "host_removed", "target", "security", "command", "output", "rollout"];
    for (const name of names) {
      source.addEventListener(name, (msg) => {
        const id = Number(msg.lastEventId);
        if (name === "snapshot" || name === "resync") lastId = id;
        else if (id <= lastId) return; // older than the snapshot we hold
        else if (id !== lastId + 1) { source.close(); NF.connect(handlers, conn); return; }
        else lastId = id;
        const fn = handlers[name === "resync" ? "snapshot" : name];
        if (fn) fn(JSON.parse(msg.data));
      });
    }
    const say = (text, cls) => { if (conn) { conn.textContent = text; conn.className = `conn ${cls}`; } };
    source.onopen = () => say("live", "live");
    source.addEventListener("session_ended", () => { source.close(); window.location.assign("/login"); });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        NF.whenStreamStops(() => NF.connect(handlers, conn), (text) => say(text, "down"));
      } else {
        say("reconnecting…", "down");
      }
    };
    return source;
  };
})(window.NF);

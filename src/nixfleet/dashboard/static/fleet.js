// The fleet page's model: hosts and commands as the live stream tells them, and the view
// (filter, search, sort, group) computed from them. No DOM here.
"use strict";

window.NF = window.NF || {};

(function (NF) {
  const SPARK_POINTS = 40; // load samples kept per host for the row's sparkline

  // Failures first: the order of the default sort, and each state's words.
  const DEPLOY = {
    failed: { rank: 0, word: "failed", tone: "bad", tip: "The last deployment failed" },
    diverged: { rank: 1, word: "diverged", tone: "bad", tip: "The checked-out commit is not on the target branch" },
    behind: { rank: 2, word: "behind", tone: "warn", tip: "Deployed commit is older than the target" },
    never_deployed: { rank: 3, word: "never deployed", tone: "neutral", tip: "Nothing was deployed through NixFleet yet" },
    unknown: { rank: 4, word: "unknown", tone: "neutral", tip: "The dashboard cannot tell yet" },
    current: { rank: 5, word: "current", tone: "ok", tip: "Running the target commit" },
  };
  const COUNTS = [
    ["online", "online", (h) => !!h.online],
    // The same rules as the API's counts (GET /api/hosts → counts), kept live here.
    ["behind", "behind", (h, f) => f.deployState(h) === "behind"],
    ["failed", "failed", (h, f) => f.deployState(h) === "failed"],
    ["running", "running", (h, f) => f.running(h.id)],
    ["reboot", "reboot needed", (h) => NF.rebootNeeded(h) === true],
  ];
  const GROUPS = {
    location: (h) => h.location || "no location",
    device_type: (h) => h.device_type || "no device type",
    os: (h) => (h.status && h.status.os_kind) || "unknown OS",
    state: (h, f) => DEPLOY[f.deployState(h)] ? DEPLOY[f.deployState(h)].word : "unknown",
  };

  class Fleet {
    constructor() {
      this.hosts = new Map();
      this.commands = new Map();
      this.byHost = new Map(); // host id -> {active, lastDeploy, last}
      this.tests = new Map(); // command id -> {passed, failed} while a test runs
      this.loads = new Map(); // host id -> recent load1 values
      this.target = null; this.branch = "";
      this.filter = null; this.query = ""; this.groupBy = "";
      this.sortKey = "attention"; this.sortDir = 1;
      this.selected = new Set();
    }

    // --- what the stream says ---------------------------------------------------------
    snapshot(snap) {
      const old = this.loads;
      this.hosts = new Map(snap.hosts.map((h) => [h.id, h]));
      this.commands = new Map(snap.commands.map((c) => [c.id, c]));
      this.target = snap.target; this.branch = snap.branch || "";
      this.loads = new Map();
      for (const h of snap.hosts) this.loads.set(h.id, old.get(h.id) || []);
      for (const h of snap.hosts) this.sample(h);
      for (const id of [...this.selected]) if (!this.hosts.has(id)) this.selected.delete(id);
      this.reindex();
    }

    host(h) {
      this.hosts.set(h.id, h);
      this.sample(h);
    }

    sample(h) {
      const st = h.status || {};
      if (!h.online || st.load1 === undefined) return;
      const pts = this.loads.get(h.id) || [];
      const stamp = h.last_seen || 0;
      if (pts.length && pts[pts.length - 1][0] === stamp) return;
      pts.push([stamp, Number(st.load1) || 0]);
      if (pts.length > SPARK_POINTS) pts.shift();
      this.loads.set(h.id, pts);
    }

    removeHost(id) {
      this.hosts.delete(id); this.selected.delete(id); this.byHost.delete(id); this.loads.delete(id);
    }

    command(c) {
      const known = this.commands.get(c.id);
      // A read of an older state must not undo a newer one the stream already gave.
      if (known && rank(known.state) > rank(c.state)) return;
      this.commands.set(c.id, { ...(known || {}), ...c });
      if (!NF.ACTIVE.has(c.state)) this.tests.delete(c.id);
      this.reindexHost(c.host_id);
      // Keep memory bounded on a long-open page: forget old finished commands.
      if (this.commands.size > 5000) this.trimCommands();
    }

    output(e) {
      const c = this.commands.get(e.command_id);
      if (!c || c.kind !== "test") return false;
      const p = this.tests.get(c.id) || { passed: 0, failed: 0 };
      let changed = false;
      for (const ln of e.lines) {
        if (ln.stream !== "system") continue;
        if (ln.text.startsWith("PASS ")) { p.passed += 1; changed = true; }
        else if (ln.text.startsWith("FAIL ")) { p.failed += 1; changed = true; }
      }
      this.tests.set(c.id, p);
      return changed;
    }

    trimCommands() {
      const finished = [...this.commands.values()].filter((c) => !NF.ACTIVE.has(c.state))
        .sort((a, b) => a.created_at - b.created_at);
      for (const c of finished.slice(0, finished.length - 3000)) this.commands.delete(c.id);
      this.reindex();
    }

    reindex() {
      this.byHost = new Map();
      for (const c of this.commands.values()) this.index(c);
    }

    reindexHost(hostId) {
      const entry = { active: null, lastDeploy: null, last: null, running: false };
      this.byHost.set(hostId, entry);
      for (const c of this.commands.values()) if (c.host_id === hostId) this.index(c);
    }

    index(c) {
      let e = this.byHost.get(c.host_id);
      if (!e) { e = { active: null, lastDeploy: null, last: null, running: false }; this.byHost.set(c.host_id, e); }
      const newer = (x) => !x || c.created_at > x.created_at;
      if (NF.ACTIVE.has(c.state) && c.kind !== "stop" && newer(e.active)) e.active = c;
      if (c.state === "dispatched" || c.state === "running") e.running = true; // not queued: as the API counts
      if (c.kind === "stop") return;
      if (newer(e.last)) e.last = c;
      if (NF.DEPLOY_KINDS.has(c.kind) && !NF.ACTIVE.has(c.state) && c.state !== "cancelled" && newer(e.lastDeploy)) e.lastDeploy = c;
    }

    // --- derived ------------------------------------------------------------------------
    active(id) { const e = this.byHost.get(id); return e ? e.active : null; }
    running(id) { const e = this.byHost.get(id); return !!e && e.running; }
    last(id) { const e = this.byHost.get(id); return e ? e.last : null; }
    deployState(h) {
      const e = this.byHost.get(h.id);
      const state = NF.deployState(h, e ? e.lastDeploy : null);
      return DEPLOY[state] ? state : "unknown";
    }

    counts() {
      const out = { total: this.hosts.size };
      for (const [key] of COUNTS) out[key] = 0;
      for (const h of this.hosts.values()) for (const [key, , test] of COUNTS) if (test(h, this)) out[key] += 1;
      return out;
    }

    matches(h) {
      if (this.filter) {
        const rule = COUNTS.find(([key]) => key === this.filter);
        if (rule && !rule[2](h, this)) return false;
      }
      if (!this.query) return true;
      const labels = h.labels && typeof h.labels === "object" ? Object.entries(h.labels).map(([k, v]) => `${k}=${v}`) : [];
      const hay = [h.id, h.location, h.device_type, (h.status || {}).os_kind, ...labels].join(" ").toLowerCase();
      return this.query.split(/\s+/).every((word) => hay.includes(word));
    }

    sortValue(h) {
      const st = h.status || {};
      switch (this.sortKey) {
        case "host": return h.id;
        case "status": return [h.online ? 1 : 0, -(h.last_seen || 0)];
        case "deploy": return DEPLOY[this.deployState(h)].rank;
        case "generation": return st.generation ?? -1;
        case "checks": return [NF.rebootNeeded(h) ? 0 : 1, h.last_test ? h.last_test.passed - h.last_test.total : 1];
        case "cpu": return -(Number(st.load1) || 0);
        case "ram": return -(NF.memFraction(st) ?? -1);
        case "activity": { const a = this.active(h.id); return a ? 0 : 1; }
        default: return [DEPLOY[this.deployState(h)].rank, h.online ? 1 : 0];
      }
    }

    // What decides where a host is drawn: shown or not, its sort value, its group.
    placeOf(h) {
      const group = this.groupBy ? String((GROUPS[this.groupBy] || ((x) => (x.labels || {})[this.groupBy.replace(/^label:/, "")]))(h, this)) : "";
      return [this.matches(h), this.sortValue(h), group];
    }

    // Return the rows to draw: [{group, count}] headers and host ids, in order.
    view() {
      const shown = [...this.hosts.values()].filter((h) => this.matches(h));
      const keyed = shown.map((h) => [this.sortValue(h), h.id, h]);
      keyed.sort((a, b) => this.sortDir * compare(a[0], b[0]) || compare(a[1], b[1]));
      if (!this.groupBy) return keyed.map(([, id]) => id);
      const groupOf = GROUPS[this.groupBy] || ((h) => {
        const key = this.groupBy.replace(/^label:/, "");
        return (h.labels && h.labels[key]) || `no ${key}`;
      });
      const groups = new Map();
      for (const [, id, h] of keyed) {
        const g = String(groupOf(h, this));
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g).push(id);
      }
      const out = [];
      for (const g of [...groups.keys()].sort(compare)) {
        out.push({ group: g, count: groups.get(g).length });
        out.push(...groups.get(g));
      }
      return out;
    }

    labelKeys() {
      const keys = new Set();
      for (const h of this.hosts.values()) if (h.labels && typeof h.labels === "object") for (const k of Object.keys(h.labels)) keys.add(k);
      return [...keys].sort().slice(0, 50);
    }
  }

  // One collator for every comparison: localeCompare with options builds one per call,
  // which made sorting 5,000 hosts take most of a second.
  const COLLATOR = new Intl.Collator(undefined, { numeric: true });
  function compare(a, b) {
    if (Array.isArray(a)) {
      for (let i = 0; i < a.length; i++) { const c = compare(a[i], b[i]); if (c) return c; }
      return 0;
    }
    if (typeof a === "string") return COLLATOR.compare(a, b);
    return a < b ? -1 : a > b ? 1 : 0;
  }

  const LIVE = ["queued", "dispatched", "running"];
  function rank(s) { const i = LIVE.indexOf(s); return i < 0 ? LIVE.length : i; }

  NF.Fleet = Fleet;
  NF.DEPLOY = DEPLOY;
  NF.COUNTS = COUNTS;
})(window.NF);

// Page-side half of bench/ui_render.py: a stand-in EventSource the benchmark drives, the
// hosts of a heartbeat round, and one measured round. Run as an init script (before the
// dashboard's own scripts).
window.__bench = {
  sources: [],
  host(i, now, round) {
    const id = `host-${String(i).padStart(5, "0")}`;
    return {
      id, online: true, last_seen: now - (i % 15), identity_state: "active",
      location: ["rack A", "rack B", "home office", "edge site"][i % 4],
      device_type: i % 3 ? "server" : "laptop", theme_color: "",
      drift: i % 17 === 0 ? "behind" : "current", reboot_needed: i % 23 === 0,
      lock_age_days: 12.3 + round / 1000,
      last_test: i % 5 ? { passed: 5, total: 5, at: now - 600 } : null,
      connection: { connected_since: now - 3600, reconnects_1h: 0, breaker: null, tls_failure: null },
      status: {
        hostname: id, os_kind: i % 3 === 1 ? "macos" : "nixos", os_version: "25.05",
        generation: 40 + (i % 7), commit: "3f9c2a1d0e", current_system: "/nix/store/a",
        booted_system: "/nix/store/a", load1: ((i * 7 + round * 13) % 400) / 100,
        mem_total: 16 * 2 ** 30, mem_available: (((i * 3 + round * 5) % 100) / 100) * 16 * 2 ** 30,
        uptime_s: 86400 + round * 15,
      },
    };
  },
  source() { return this.sources[this.sources.length - 1]; },
  snapshot(n) {
    const now = Date.now() / 1000, hosts = [];
    for (let i = 0; i < n; i++) hosts.push(this.host(i, now, 0));
    this.source().emit("snapshot", { type: "snapshot", target: "3f9c2a1d0e", branch: "main", hosts, commands: [] }, 1000);
  },
  // A heartbeat round's messages, encoded beforehand: building them is not the page's work.
  prepare(n, round, firstId) {
    const now = Date.now() / 1000;
    this.pending = [];
    for (let i = 0; i < n; i++) {
      this.pending.push({ data: JSON.stringify({ type: "host", host: this.host(i, now, round) }), id: firstId + i });
    }
  },
  // Deliver the prepared round; return the main thread's busy time for it (wall clock).
  async round() {
    const before = new Promise((r) => requestAnimationFrame(() => r(performance.now())));
    const t0 = performance.now();
    for (const m of this.pending) this.source().deliver("host", m.data, m.id);
    const t1 = performance.now();
    // Registered after the table's own frame callback (the first event asked for it), so
    // it runs right after the flush in the same frame: A, the table's flush, B.
    const after = new Promise((r) => requestAnimationFrame(() => {
      void document.body.offsetHeight; // style and layout of what the flush changed
      r(performance.now());
    }));
    const tA = await before;
    const tB = await after;
    return { events_ms: t1 - t0, frame_ms: tB - tA, busy_ms: t1 - t0 + (tB - tA) };
  },
};
window.EventSource = class {
  constructor(url) {
    this.url = url; this.readyState = 1; this.listeners = {};
    window.__bench.sources.push(this);
    setTimeout(() => this.onopen && this.onopen(), 0);
  }
  addEventListener(name, fn) { (this.listeners[name] = this.listeners[name] || []).push(fn); }
  close() { this.readyState = 2; }
  emit(name, data, id) { this.deliver(name, JSON.stringify(data), id); }
  deliver(name, text, id) {
    for (const fn of this.listeners[name] || []) fn({ data: text, lastEventId: String(id) });
  }
};

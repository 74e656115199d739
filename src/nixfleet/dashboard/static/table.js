// The fleet table: one compact row per host, only the rows in view are in the DOM (5,000
// hosts scroll like 50). A row is built once and then patched cell by cell, so a heartbeat
// never replaces the button or checkbox that has the keyboard focus.
"use strict";

window.NF = window.NF || {};

(function (NF) {
  const { el, setText, setAttr } = NF;
  const OVERSCAN = 12;
  const IDENTITY = { none: "not enrolled", revoked: "token revoked" };
  const COLUMNS = 10;

  class Table {
    constructor(fleet, { wrap, body, onRender }) {
      this.fleet = fleet; this.wrap = wrap; this.body = body; this.onRender = onRender;
      this.items = []; this.index = new Map(); // host id -> position in items
      this.rows = new Map(); // host id -> tr
      this.groups = new Map(); // group key -> tr
      this.rowH = 0; this.focusId = null;
      this.top = el("tr", { class: "spacer", "aria-hidden": "true" }, el("td", { colspan: String(COLUMNS) }));
      this.bottom = el("tr", { class: "spacer", "aria-hidden": "true" }, el("td", { colspan: String(COLUMNS) }));
      body.append(this.top, this.bottom);
      wrap.addEventListener("scroll", () => this.schedule(), { passive: true });
      window.addEventListener("scroll", () => this.schedule(), { passive: true });
      new ResizeObserver(() => { this.rowH = 0; this.schedule(); }).observe(wrap);
      window.addEventListener("resize", () => { this.rowH = 0; this.schedule(); });
      this.dirtyView = true; this.dirtyHosts = new Set();
      this.places = new Map(); // host id -> its last place key (see moved)
    }

    // --- scheduling: many events in one frame cost one render ---------------------------
    invalidate(hostId) {
      if (hostId === undefined) this.dirtyView = true; else this.dirtyHosts.add(hostId);
      this.schedule();
    }
    schedule() {
      if (this.frame) return;
      this.frame = requestAnimationFrame(() => { this.frame = null; this.flush(); });
    }
    flush() {
      // A host's change can move it (sort, filter, group): then the order is computed
      // again and the window reconciles what is on screen. A heartbeat usually moves
      // nothing, and at 5,000 hosts skipping the sort is most of the frame.
      if (this.dirtyView || this.moved()) this.setItems(this.fleet.view());
      this.dirtyView = false;
      this.renderWindow();
      for (const id of this.dirtyHosts) { const tr = this.rows.get(id); if (tr) this.patch(tr, id); }
      this.dirtyHosts.clear();
      if (this.onRender) this.onRender();
    }

    // Return true when a changed host's place in the view (shown, sort key, group) changed.
    moved() {
      let any = false;
      for (const id of this.dirtyHosts) {
        const h = this.fleet.hosts.get(id);
        const key = h ? JSON.stringify(this.fleet.placeOf(h)) : null;
        if (this.places.get(id) !== key) any = true;
        if (key === null) this.places.delete(id); else this.places.set(id, key);
      }
      return any;
    }

    setItems(items) {
      this.items = items;
      this.index = new Map();
      items.forEach((it, i) => { if (typeof it === "string") this.index.set(it, i); });
    }

    // --- the window -----------------------------------------------------------------------
    measure() {
      // Distance between two neighbours, so a card's margin counts too (phone layout).
      const rows = [...this.body.querySelectorAll("tr.host")];
      if (rows.length >= 2 && rows[1].offsetTop > rows[0].offsetTop) this.rowH = rows[1].offsetTop - rows[0].offsetTop;
      else if (rows.length && rows[0].offsetHeight) this.rowH = rows[0].offsetHeight;
      return this.rowH || 38;
    }

    // The part of the page the rows scroll in: the table's box, or on a phone the window.
    viewport() {
      const scrolls = getComputedStyle(this.wrap).overflowY !== "visible";
      const head = scrolls ? this.body.parentElement.tHead.offsetHeight : 0;
      return scrolls ? { top: this.wrap.getBoundingClientRect().top + head, height: this.wrap.clientHeight - head, scrolls }
        : { top: 0, height: window.innerHeight, scrolls };
    }

    range() {
      const h = this.rowH || this.measure(), v = this.viewport();
      const offset = v.top - this.body.getBoundingClientRect().top;
      const first = Math.max(0, Math.floor(offset / h) - OVERSCAN);
      const count = Math.ceil(v.height / h) + 2 * OVERSCAN;
      return [Math.min(first, Math.max(0, this.items.length - 1)), Math.min(this.items.length, first + count)];
    }

    renderWindow() {
      let [first, end] = this.range();
      const wanted = this.items.slice(first, end).map((it) => this.nodeFor(it));
      // The focused row stays in the DOM even when scrolled away, so focus is never lost.
      const focused = document.activeElement;
      const keep = focused && this.body.contains(focused) ? focused.closest("tr") : null;
      const nodes = [this.top, ...wanted];
      if (keep && !wanted.includes(keep) && keep !== this.top && keep !== this.bottom && this.index.has(keep.dataset.host)) {
        const pos = this.index.get(keep.dataset.host);
        if (pos < first) { nodes.splice(1, 0, keep); first -= 1; } else { nodes.push(keep); end += 1; }
      }
      nodes.push(this.bottom);
      this.place(nodes, focused);
      const h = this.rowH || this.measure();
      this.top.style.height = `${first * h}px`;
      this.bottom.style.height = `${Math.max(0, this.items.length - end) * h}px`;
      if (!this.rowH) this.measure();
    }

    // Move only the rows that are out of place: moving a node blurs it.
    place(nodes, focused) {
      const want = new Set(nodes);
      for (const child of [...this.body.children]) if (!want.has(child)) child.remove();
      let cursor = this.body.firstChild;
      for (const node of nodes) {
        if (node === cursor) { cursor = cursor.nextSibling; continue; }
        this.body.insertBefore(node, cursor);
      }
      if (focused && focused !== document.activeElement && this.body.contains(focused)) focused.focus({ preventScroll: true });
    }

    nodeFor(item) {
      if (typeof item !== "string") return this.groupRow(item);
      let tr = this.rows.get(item);
      if (!tr) { tr = this.build(item); this.rows.set(item, tr); this.patch(tr, item); }
      else if (this.dirtyView) this.patch(tr, item);
      return tr;
    }

    groupRow(g) {
      let tr = this.groups.get(g.group);
      if (!tr) {
        tr = el("tr", { class: "group" }, el("th", { colspan: String(COLUMNS), scope: "colgroup" },
          el("span", { class: "g-name" }), el("span", { class: "g-count muted" })));
        this.groups.set(g.group, tr);
      }
      setText(tr.querySelector(".g-name"), g.group);
      setText(tr.querySelector(".g-count"), `${g.count} host${g.count === 1 ? "" : "s"}`);
      return tr;
    }

    forget(hostId) { const tr = this.rows.get(hostId); if (tr) tr.remove(); this.rows.delete(hostId); }

    // --- one row ----------------------------------------------------------------------------
    build(id) {
      const c = {};
      c.box = el("input", { type: "checkbox", "data-select": id, "aria-label": `Select ${id}` });
      c.dot = el("span", { class: "swatch", "aria-hidden": "true" });
      c.name = el("a", { href: `/hosts/${encodeURIComponent(id)}`, class: "host-link", "data-host-link": id, text: id });
      c.sub = el("span", { class: "sub" });
      c.labels = el("span", { class: "sub labels", "data-labels": id });
      c.identity = el("span", { class: "badge bad", hidden: true });
      c.online = el("span", { class: "dot", "aria-hidden": "true" });
      c.word = el("span", { class: "word" });
      c.seen = el("span", { class: "sub seen" });
      c.deploy = el("span", { class: "badge" });
      c.commit = el("code", { class: "commit" });
      c.plan = el("span", { class: "badge info", "data-plan": id, hidden: true });
      c.gen = el("span");
      c.lock = el("span", { class: "badge", "data-check": "lock" });
      c.tests = el("span", { class: "badge", "data-check": "tests" });
      c.reboot = el("span", { class: "badge warn", "data-check": "reboot", text: "reboot" });
      c.link = el("span", { class: "badge warn", "data-check": "link" });
      c.load = el("span", { class: "num" });
      c.spark = NF.svg("polyline", { points: "" });
      c.sparkSvg = NF.svg("svg", { class: "spark", viewBox: "0 0 40 12", preserveAspectRatio: "none", "aria-hidden": "true" });
      c.sparkSvg.append(c.spark);
      c.memFill = el("span", { class: "fill" });
      c.mem = el("span", { class: "num" });
      c.none = el("span", { class: "muted", text: "—" });
      c.chipBadge = el("span", { class: "badge" });
      c.chip = el("button", { type: "button", class: "chip", hidden: true }, c.chipBadge);
      c.actSub = el("span", { class: "sub", hidden: true });
      c.primary = el("button", { type: "button", class: "primary", "data-action": "pull-switch", "data-host": id, text: "Deploy",
        title: `Pull the target commit and switch ${id} to it` });
      c.menu = el("button", { type: "button", class: "menu-btn", "data-menu": id, "aria-haspopup": "menu",
        "aria-expanded": "false", "aria-label": `More actions for ${id}`, text: "⋯" });
      const tr = el("tr", { class: "host", "data-host": id, tabindex: "-1" },
        el("td", { class: "c-sel" }, c.box),
        el("th", { scope: "row", class: "c-host" }, c.dot, el("span", { class: "name-line" }, c.name, c.identity), c.sub, c.labels),
        el("td", { "data-col": "status" }, c.online, c.word, c.seen),
        el("td", { "data-col": "deploy" }, c.deploy, c.commit, c.plan),
        el("td", { "data-col": "generation" }, c.gen),
        el("td", { "data-col": "checks" }, c.lock, c.tests, c.reboot, c.link),
        el("td", { "data-col": "cpu" }, c.load, c.sparkSvg),
        el("td", { "data-col": "ram" }, el("span", { class: "meter", "aria-hidden": "true" }, c.memFill), c.mem),
        el("td", { "data-col": "activity" }, c.none, c.chip, c.actSub),
        el("td", { class: "c-act" }, c.primary, c.menu));
      tr._c = c;
      return tr;
    }

    patch(tr, id) {
      const h = this.fleet.hosts.get(id);
      if (!h) return;
      const c = tr._c, st = h.status || {}, f = this.fleet;
      const now = Date.now() / 1000;
      setAttr(tr, "tabindex", this.focusId === id ? "0" : "-1");
      const sel = f.selected.has(id);
      if (c.box.checked !== sel) c.box.checked = sel;
      tr.classList.toggle("selected", sel);
      if (h.theme_color && c.dot.dataset.color !== h.theme_color) { c.dot.style.background = h.theme_color; c.dot.dataset.color = h.theme_color; }
      setText(c.sub, [h.location, h.device_type].filter(Boolean).join(" · ") || (st.os_kind && st.os_kind !== "unknown" ? st.os_kind : ""));
      const pairs = Object.entries(h.labels || {}).map(([k, v]) => `${k}=${v}`);
      setText(c.labels, pairs.length > 3 ? `${pairs.slice(0, 3).join(" ")} +${pairs.length - 3}` : pairs.join(" "));
      c.labels.hidden = !pairs.length;
      setAttr(c.labels, "title", pairs.length ? `Labels: ${pairs.join(", ")}` : null);
      const idWord = IDENTITY[h.identity_state];
      c.identity.hidden = !idWord; if (idWord) setText(c.identity, idWord);

      c.online.className = `dot ${h.online ? "on" : "off"}`;
      setText(c.word, h.online ? "online" : "offline");
      setText(c.seen, h.online ? NF.shortAgo(h.last_seen, now) : NF.shortAgo(h.last_seen, now));
      setAttr(tr.children[2], "title", this.statusTip(h, now));

      const ds = f.deployState(h), d = NF.DEPLOY[ds];
      c.deploy.className = `badge ${d.tone}`;
      setText(c.deploy, d.word);
      setAttr(c.deploy, "data-state", ds);
      const dep = h.deploy || {};
      // What runs, not what is checked out (issue 14).
      setText(c.commit, h.deploy ? (dep.deployed_commit ? NF.short(dep.deployed_commit) : "") : NF.short(st.commit));
      setAttr(tr.children[3], "title", this.deployTip(h, ds));
      const plan = h.plan;
      c.plan.hidden = !plan;
      if (plan) {
        setText(c.plan, plan.expired ? "plan expired" : plan.error ? "plan failed" : plan.changed === false ? "no change" : "plan");
        c.plan.className = `badge ${plan.expired ? "neutral" : "info"}`;
        setAttr(c.plan, "title", `Preview of ${NF.short(plan.target_commit)}: ${plan.summary || "no summary"}${plan.reboot ? " · needs a reboot" : ""}`);
      }
      setText(c.gen, dep.generation ?? st.generation ?? "—");

      this.patchChecks(c, h, now);
      const load = st.load1;
      setText(c.load, h.online && load !== undefined ? Number(load).toFixed(2) : "—");
      setAttr(c.spark, "points", sparkPoints(f.loads.get(id) || []));
      const mem = NF.memFraction(st);
      setText(c.mem, mem === null ? "—" : `${Math.round(mem * 100)}%`);
      const width = mem === null ? "0%" : `${Math.round(mem * 100)}%`;
      if (c.memFill.style.width !== width) c.memFill.style.width = width;
      c.memFill.classList.toggle("high", mem !== null && mem > 0.9);
      setAttr(tr.children[7], "title", mem === null ? "Memory: not reported" :
        `Memory: ${gib(st.mem_total - st.mem_available)} of ${gib(st.mem_total)} used`);
      setAttr(tr.children[6], "title", load === undefined ? "Load: not reported" : `Load average (1 min): ${Number(load).toFixed(2)}`);
      this.patchActivity(c, h, now);
    }

    patchChecks(c, h, now) {
      const days = h.lock_age_days;
      const lockDays = days === null || days === undefined ? null : Math.round(days);
      c.lock.hidden = lockDays === null;
      if (lockDays !== null) {
        setText(c.lock, `lock ${lockDays} d`);
        c.lock.className = `badge ${lockDays > 30 ? "warn" : "neutral"}`;
        setAttr(c.lock, "title", `flake.lock's nixpkgs is ${lockDays} days old`);
      }
      const t = h.last_test;
      c.tests.hidden = !t;
      if (t) {
        setText(c.tests, `tests ${t.passed}/${t.total}`);
        c.tests.className = `badge ${t.passed === t.total ? "ok" : "bad"}`;
        setAttr(c.tests, "title", `Last test run ${NF.ago(t.at, now)}: ${t.passed} of ${t.total} passed`);
      }
      const reboot = NF.rebootNeeded(h);
      c.reboot.hidden = reboot !== true;
      setAttr(c.reboot, "title", (h.reboot && h.reboot.reason) || "The running system differs from the booted one: reboot to finish");
      const link = linkTrouble(h, now);
      c.link.hidden = !link;
      if (link) { setText(c.link, link.word); setAttr(c.link, "title", link.tip); c.link.className = `badge ${link.tone}`; }
    }

    patchActivity(c, h, now) {
      const f = this.fleet, a = f.active(h.id), cmd = a || f.last(h.id);
      c.none.hidden = !!cmd; c.chip.hidden = !cmd;
      if (!cmd) { c.actSub.hidden = true; return; }
      const tone = { running: "info", dispatched: "info", queued: "neutral", succeeded: "ok", failed: "bad",
        lost: "bad", timed_out: "bad", rolled_back: "warn", cancelled: "neutral" }[cmd.state] || "neutral";
      setAttr(c.chip, "data-open-log", cmd.id);
      setAttr(c.chip, "title", `Show the output of ${cmd.kind} on ${h.id}`);
      c.chipBadge.className = `badge ${tone}`;
      setText(c.chipBadge, a ? `${cmd.kind} ${NF.stateLabel(cmd)}` : `${cmd.kind} ${NF.words(cmd.state)}`);
      const p = a ? f.tests.get(cmd.id) : null;
      const sub = p ? `${p.passed} passed, ${p.failed} failed` : a ? "" : NF.shortAgo(cmd.finished_at || cmd.created_at, now);
      c.actSub.hidden = !sub;
      setText(c.actSub, sub);
      setAttr(c.actSub, "data-test-progress", p ? "" : null);
    }

    statusTip(h, now) {
      const conn = h.connection || {};
      const parts = [`Last seen ${NF.ago(h.last_seen, now)}`];
      if (conn.connected_since) parts.push(`connected since ${NF.dateTime(conn.connected_since)}`);
      const n = conn.reconnects_1h || 0;
      parts.push(`${n} reconnect${n === 1 ? "" : "s"} in the last hour`);
      return parts.join(" · ");
    }

    deployTip(h, ds) {
      const dep = h.deploy || {}, st = h.status || {};
      const lines = [NF.DEPLOY[ds].tip];
      const commit = h.deploy ? dep.deployed_commit : st.commit;
      if (commit) lines.push(`deployed ${NF.short(commit)}`);
      if (dep.checked_out_commit && dep.checked_out_commit !== commit) lines.push(`checked out ${NF.short(dep.checked_out_commit)}`);
      const target = dep.target_commit || this.fleet.target;
      if (target) lines.push(`target ${NF.short(target)}`);
      if (dep.last) lines.push(`last ${dep.last.kind} ${NF.words(dep.last.result)} ${NF.ago(dep.last.finished_at)}`);
      if (h.plan) lines.push(`preview${h.plan.expired ? " (expired)" : ""}: ${h.plan.summary}`);
      return lines.join(" · ");
    }

    // --- keyboard ---------------------------------------------------------------------------
    focusRow(id, { scroll = true } = {}) {
      if (!id) return;
      const old = this.rows.get(this.focusId);
      if (old) old.setAttribute("tabindex", "-1");
      this.focusId = id;
      if (scroll && this.index.has(id)) {
        const h = this.rowH || this.measure(), v = this.viewport();
        const top = this.body.getBoundingClientRect().top + this.index.get(id) * h;
        let d = 0;
        if (top < v.top) d = top - v.top; else if (top + h > v.top + v.height) d = top + h - v.top - v.height;
        if (d) { if (v.scrolls) this.wrap.scrollTop += d; else window.scrollBy(0, d); }
        this.renderWindow();
      }
      const tr = this.rows.get(id);
      if (tr && tr.isConnected) { tr.setAttribute("tabindex", "0"); tr.focus({ preventScroll: true }); }
    }

    neighbour(id, step) {
      const hosts = this.items.filter((it) => typeof it === "string");
      if (!hosts.length) return null;
      const i = hosts.indexOf(id);
      if (i < 0) return hosts[step > 0 ? 0 : hosts.length - 1];
      return hosts[Math.max(0, Math.min(hosts.length - 1, i + step))];
    }
  }

  function linkTrouble(h, now) {
    const conn = h.connection || {};
    const t = conn.tls_failure;
    if (t) return { word: "TLS", tone: "bad", tip: `Last TLS failure: ${NF.words(t.kind)}, ${t.count} time${t.count === 1 ? "" : "s"}, ${NF.ago(t.at, now)}` };
    const n = conn.reconnects_1h || 0;
    if (n > 3) return { word: `${n}× drop`, tone: "warn", tip: `${n} reconnects in the last hour` };
    const b = conn.breaker;
    if (b && b.failed_attempts > 0 && h.online) {
      return { word: "flaky", tone: "warn", tip: `Back after ${b.failed_attempts} failed dials (${Math.round(b.down_s)} s)` };
    }
    return null;
  }

  function sparkPoints(pts) {
    if (pts.length < 2) return "";
    const max = Math.max(1, ...pts.map((p) => p[1]));
    return pts.map((p, i) => `${(i * 40 / (pts.length - 1)).toFixed(1)},${(11 - (p[1] / max) * 10).toFixed(1)}`).join(" ");
  }

  function gib(bytes) { return `${(bytes / 1024 ** 3).toFixed(1)} GiB`; }

  NF.Table = Table;
})(window.NF);

// The fleet page: wires the live stream to the model (fleet.js), the table (table.js) and
// the log dock (dock.js); header counts as filters, search, sort, group, selection, the
// row menu, bulk actions, keyboard navigation and the add-host dialog.
"use strict";

(function (NF) {
  const { $, el, setText } = NF;
  const fleet = new NF.Fleet();
  const table = new NF.Table(fleet, { wrap: $("#table-wrap"), body: $("#hosts tbody"), onRender: rendered });
  const dock = new NF.Dock(fleet, $("#dock"));
  const MENU = [["plan", "Preview"], ["pull", "Pull"], ["switch", "Switch"], ["pull-switch", "Deploy (pull + switch)"], ["test", "Test"], ["rollback", "Roll back to the previous generation"],
    ["stop", "Stop the running command"], ["restart", "Restart agent"]];
  let lastSummary = "";

  // --- after each render: header counts, empty state, selection ------------------------
  function rendered() {
    const n = fleet.counts();
    for (const [key] of NF.COUNTS) {
      const b = $(`[data-filter="${key}"]`);
      setText($(".n", b), String(n[key]));
      b.setAttribute("aria-pressed", String(fleet.filter === key));
    }
    setText($("#count-total"), String(n.total));
    const shown = table.items.filter((it) => typeof it === "string").length;
    $("#empty").hidden = n.total > 0;
    $("#no-match").hidden = n.total === 0 || shown > 0;
    setText($("#shown"), shown === n.total ? `${n.total} hosts` : `${shown} of ${n.total} hosts shown`);
    const hidden = [...fleet.selected].filter((id) => !table.index.has(id)).length;
    setText($("#sel-count"), String(fleet.selected.size));
    setText($("#sel-hidden"), hidden ? ` (${hidden} not shown)` : "");
    $("#bulk").classList.toggle("has-selection", fleet.selected.size > 0);
    const all = $("#select-all");
    const shownIds = table.items.filter((it) => typeof it === "string");
    all.checked = shownIds.length > 0 && shownIds.every((id) => fleet.selected.has(id));
    all.indeterminate = !all.checked && shownIds.some((id) => fleet.selected.has(id));
    setText($("#target"), NF.short(fleet.target) === "—" ? "unknown" : NF.short(fleet.target));
    setText($("#branch"), fleet.branch || "…");
    // One sentence for screen readers, said only when it changes (never per heartbeat).
    const summary = `${n.online} of ${n.total} online, ${n.failed} failed, ${n.behind} behind, ${n.running} running, ${n.reboot} need a reboot`;
    if (summary !== lastSummary) { lastSummary = summary; setText($("#summary"), summary); }
    refreshPreview();
  }

  // --- the stream -----------------------------------------------------------------------
  NF.connect({
    snapshot: (snap) => {
      const ids = new Set(snap.hosts.map((h) => h.id));
      for (const id of [...table.rows.keys()]) if (!ids.has(id)) table.forget(id);
      fleet.snapshot(snap); table.invalidate(); offerLabelKeys(snap.hosts);
      for (const id of dock.tabs.keys()) dock.describe(id);
    },
    host: (e) => { fleet.host(e.host); table.invalidate(e.host.id); offerLabelKeys([e.host]); },
    host_removed: (e) => { fleet.removeHost(e.host_id); table.forget(e.host_id); table.invalidate(); },
    target: (e) => { fleet.target = e.commit; table.invalidate(); },
    command: (e) => { fleet.command(e.command); table.invalidate(e.command.host_id); dock.onCommand(e.command); follow(e.command); },
    output: (e) => { if (fleet.output(e)) table.invalidate(e.host_id); dock.onOutput(e); },
    rollout: (e) => NF.rolloutEvent(e.rollout),
  }, $("#conn"));

  // --- actions ----------------------------------------------------------------------------
  function notice(text, bad = false) {
    const n = $("#notice");
    setText(n, text);
    n.classList.toggle("bad", bad);
  }

  // The notice follows the command it announced to its end: "queued" is only its first word.
  let watched = null;
  function follow(cmd) {
    if (!watched || cmd.id !== watched.id) return;
    const why = cmd.state === "rolled_back" && cmd.detail ? ` (${cmd.detail})` : "";
    notice(`${watched.label}: ${NF.words(cmd.state)}${why}`, ["failed", "timed_out", "lost", "rolled_back"].includes(cmd.state));
  }

  async function runAction(hostId, kind) {
    try {
      const res = await NF.command(hostId, kind);
      // A gated switch says so: it may still roll back after it looks done.
      watched = { id: res.command_id, label: `${kind} on ${hostId}${res.gate ? `, ${NF.gateWords(res.gate)}` : ""}` };
      const known = fleet.commands.get(res.command_id);
      if (known) follow(known); else notice(`${watched.label}: ${NF.words(res.state)}`);
      if (kind !== "stop" && kind !== "restart") dock.open(res.command_id);
    } catch (err) {
      notice(`${kind} on ${hostId}: ${err.message}`, true);
    }
  }

  function runBulk(kind) {
    const out = $("#bulk-result");
    if (!fleet.selected.size) { out.textContent = "Select hosts first (the boxes at the start of each row)."; return; }
    if (kind === "plan") { previewBulk(out); return; }
    NF.confirmRollout(kind, [...fleet.selected], out); // rollout-confirm.js
  }

  // A preview changes nothing, so it needs no rollout: every selected host builds at once,
  // and the line under the bulk bar says what a deploy would change across them.
  let preview = null;
  async function previewBulk(out) {
    const ids = [...fleet.selected];
    try {
      const res = await NF.post("/api/commands/bulk", { command: "plan", host_ids: ids });
      const byHost = new Map(res.results.filter((r) => r.command_id).map((r) => [r.host_id, r.command_id]));
      preview = { ids, out, byHost };
      setText(out, `Preview: building on ${byHost.size} hosts…`);
    } catch (err) { setText(out, `Preview: ${err.message}`); }
  }

  // Asked once, when every selected host has reported its plan (or its plan ended without one).
  function previewDone() {
    return [...preview.byHost].every(([host, cid]) => {
      const c = fleet.commands.get(cid), h = fleet.hosts.get(host);
      if (!c || NF.ACTIVE.has(c.state)) return false;
      return !["succeeded", "failed"].includes(c.state) || (h && h.plan && h.plan.command_id === cid);
    });
  }

  async function refreshPreview() {
    if (!preview || !previewDone()) return;
    const { ids, out } = preview;
    preview = null;
    try {
      const query = ids.map((id) => `host_id=${encodeURIComponent(id)}`).join("&");
      const data = await NF.api(`/api/hosts?${query}`);
      setText(out, `Preview: ${data.plan_summary || "no plan was made"}`);
    } catch (err) { setText(out, `Preview: ${err.message}`); }
  }

  // --- the row menu -------------------------------------------------------------------------
  const menu = $("#row-menu");
  let menuButton = null;

  function openMenu(button) {
    const id = button.dataset.menu, active = fleet.active(id), last = fleet.last(id);
    const h = fleet.hosts.get(id) || {};
    // Preview (a `plan` command) exists where the dashboard reports plans at all.
    const menuKinds = "plan" in h ? [["plan", "Preview (what a deploy would change)"], ...MENU] : MENU;
    const items = menuKinds.map(([kind, label]) => {
      const off = (kind === "stop" && !active) || (kind === "restart" && !h.online);
      return el("button", { type: "button", role: "menuitem", tabindex: "-1", "data-action": kind, "data-host": id,
        "aria-disabled": off ? "true" : null, text: label });
    });
    const log = active || last;
    if (log) items.push(el("button", { type: "button", role: "menuitem", tabindex: "-1", "data-open-log": log.id, text: "Show the last output" }));
    items.push(el("a", { role: "menuitem", tabindex: "-1", href: `/hosts/${encodeURIComponent(id)}`, text: "Open the host page" }));
    menu.replaceChildren(...items);
    menu.setAttribute("aria-label", `Actions for ${id}`);
    menu.hidden = false;
    const r = button.getBoundingClientRect();
    const top = Math.min(r.bottom + 2, window.innerHeight - menu.offsetHeight - 4);
    menu.style.top = `${Math.max(4, top)}px`;
    menu.style.left = `${Math.max(4, r.right - menu.offsetWidth)}px`;
    button.setAttribute("aria-expanded", "true");
    menuButton = button;
    items[0].focus();
  }

  function closeMenu(refocus = true) {
    if (menu.hidden) return;
    menu.hidden = true;
    if (menuButton) {
      menuButton.setAttribute("aria-expanded", "false");
      if (refocus && menuButton.isConnected) menuButton.focus();
    }
    menuButton = null;
  }

  menu.addEventListener("keydown", (ev) => {
    const items = [...menu.querySelectorAll("[role=menuitem]")];
    const i = items.indexOf(document.activeElement);
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      items[(i + (ev.key === "ArrowDown" ? 1 : -1) + items.length) % items.length].focus();
    } else if (ev.key === "Escape") { ev.preventDefault(); closeMenu(); }
    else if (ev.key === "Tab") closeMenu(false);
  });

  // --- clicks -------------------------------------------------------------------------------
  document.addEventListener("click", (ev) => {
    const t = ev.target.closest("[data-action],[data-bulk],[data-menu],[data-open-log],[data-filter],[data-sort],#open-add-host,#close-add-host");
    if (!menu.hidden && !(t && menu.contains(t)) && !(t && t === menuButton)) closeMenu(false);
    if (!t) return;
    if (t.dataset.menu) { if (menuButton === t) closeMenu(); else { closeMenu(false); openMenu(t); } return; }
    if (t.getAttribute("aria-disabled") === "true") return;
    if (menu.contains(t)) closeMenu(false);
    if (t.dataset.action) runAction(t.dataset.host, t.dataset.action);
    else if (t.dataset.bulk) runBulk(t.dataset.bulk);
    else if (t.dataset.openLog) dock.open(t.dataset.openLog);
    else if (t.dataset.filter) { fleet.filter = fleet.filter === t.dataset.filter ? null : t.dataset.filter; table.invalidate(); }
    else if (t.dataset.sort) sortBy(t.dataset.sort);
    else if (t.id === "open-add-host") $("#add-host").showModal();
    else if (t.id === "close-add-host") $("#add-host").close();
  });

  function sortBy(key, dir) {
    fleet.sortDir = dir || (fleet.sortKey === key ? -fleet.sortDir : 1);
    fleet.sortKey = key;
    for (const th of document.querySelectorAll("#hosts thead th[data-key]")) {
      const on = th.dataset.key === key;
      if (on) th.setAttribute("aria-sort", fleet.sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    $("#sort").value = key;
    table.invalidate();
  }

  document.addEventListener("change", (ev) => {
    const t = ev.target;
    if (t.id === "select-all") {
      const shown = table.items.filter((it) => typeof it === "string");
      for (const id of shown) if (t.checked) fleet.selected.add(id); else fleet.selected.delete(id);
      for (const id of shown) table.invalidate(id);
      table.invalidate();
    } else if (t.dataset && t.dataset.select) {
      if (t.checked) fleet.selected.add(t.dataset.select); else fleet.selected.delete(t.dataset.select);
      table.invalidate(t.dataset.select);
    } else if (t.id === "group-by") { fleet.groupBy = t.value; table.invalidate(); }
    else if (t.id === "sort") sortBy(t.value, 1);
  });

  $("#clear-selection").addEventListener("click", () => {
    const ids = [...fleet.selected];
    fleet.selected.clear();
    for (const id of ids) table.invalidate(id);
  });

  const search = $("#search");
  search.addEventListener("input", () => { fleet.query = search.value.trim().toLowerCase(); table.invalidate(); });
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { search.value = ""; fleet.query = ""; table.invalidate(); }
    if (ev.key === "ArrowDown" || ev.key === "Enter") {
      ev.preventDefault();
      const first = table.neighbour(null, 1);
      if (first) table.focusRow(first);
    }
  });
  // Group by any label key a host has: offered as soon as a host brings a new one (at
  // most 50 keys, so one odd fleet cannot grow the list without end).
  const offeredKeys = new Set();
  function offerLabelKeys(hosts) {
    const select = $("#group-by");
    for (const h of hosts) {
      for (const key of Object.keys(h.labels || {})) {
        if (offeredKeys.has(key) || offeredKeys.size >= 50) continue;
        offeredKeys.add(key);
        select.append(el("option", { value: `label:${key}`, text: `label ${key}` }));
      }
    }
  }

  // --- keyboard -------------------------------------------------------------------------------
  const typing = (t) => t.closest("input, select, textarea, dialog, [role=menu]");
  document.addEventListener("keydown", (ev) => {
    if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (ev.key === "/" && !typing(t)) { ev.preventDefault(); search.focus(); search.select(); return; }
    const tr = t.closest && t.closest("#hosts tr.host");
    if (!tr || typing(t)) return;
    const id = tr.dataset.host;
    if (ev.key === "ArrowDown" || ev.key === "j") { ev.preventDefault(); table.focusRow(table.neighbour(id, 1)); }
    else if (ev.key === "ArrowUp" || ev.key === "k") { ev.preventDefault(); table.focusRow(table.neighbour(id, -1)); }
    else if (ev.key === "Home") { ev.preventDefault(); table.focusRow(table.neighbour(null, 1)); }
    else if (ev.key === "End") { ev.preventDefault(); table.focusRow(table.neighbour(null, -1)); }
    else if (ev.key === "Enter" && t === tr) { ev.preventDefault(); window.location.assign(`/hosts/${encodeURIComponent(id)}`); }
    else if (ev.key === "x" && t === tr) {
      ev.preventDefault();
      if (fleet.selected.has(id)) fleet.selected.delete(id); else fleet.selected.add(id);
      table.invalidate(id);
    }
  });
  document.addEventListener("focusin", (ev) => {
    const tr = ev.target.closest && ev.target.closest("#hosts tr.host");
    if (tr && table.focusId !== tr.dataset.host) {
      const old = table.rows.get(table.focusId);
      if (old) old.setAttribute("tabindex", "-1");
      table.focusId = tr.dataset.host;
      tr.setAttribute("tabindex", "0");
    }
  });

  // --- add a host ---------------------------------------------------------------------------
  $("#add-host-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const out = $("#add-host-result");
    try {
      const body = Object.fromEntries(form.entries());
      body.labels = NF.parseLabels(body.labels || "");
      const res = await NF.post("/api/hosts", body);
      const until = new Date(res.enroll_expires_at * 1000).toLocaleTimeString();
      out.replaceChildren(`Added ${res.host.id}. Its one-time enrollment code, shown only now: `,
        el("span", { class: "token", text: res.enroll_code }),
        ` (until ${until}; start its agent with --enroll-code-file)`);
      ev.target.dispatchEvent(new CustomEvent("nixfleet:host-added", { bubbles: true, detail: res }));
      ev.target.reset();
    } catch (err) { out.textContent = err.message; }
  });

  setInterval(() => { for (const id of table.rows.keys()) table.invalidate(id); }, 15000); // ages move on
  sortBy("attention", 1);
})(window.NF);

// The docked log panel under the fleet table: a tab per opened command, the selected one's
// log viewer mounted, the others kept (with their lines) until closed.
"use strict";

window.NF = window.NF || {};

(function (NF) {
  const { el, setText } = NF;
  const MAX_TABS = 8;

  class Dock {
    constructor(fleet, root) {
      this.fleet = fleet; this.root = root;
      this.tabs = new Map(); // command id -> {view, tab}
      this.current = null;
      this.tabList = NF.$("#dock-tabs", root);
      this.mount = NF.$("#dock-view", root);
      this.title = NF.$("#output-title", root);
      this.meta = NF.$("#output-meta", root);
      this.empty = NF.$("#dock-empty", root);
      this.tabList.addEventListener("click", (ev) => {
        const tab = ev.target.closest("[data-tab]");
        if (tab) this.select(tab.dataset.tab);
      });
      NF.$("#dock-close", root).addEventListener("click", () => { if (this.current) this.close(this.current); });
      this.tabList.addEventListener("keydown", (ev) => {
        if (ev.key === "Delete" && this.current) { this.close(this.current); if (this.current) this.tabs.get(this.current).tab.focus(); return; }
        if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
        const ids = [...this.tabs.keys()], i = ids.indexOf(this.current);
        const next = ids[(i + (ev.key === "ArrowRight" ? 1 : -1) + ids.length) % ids.length];
        if (next) { this.select(next); this.tabs.get(next).tab.focus(); }
      });
    }

    open(commandId) {
      if (!this.tabs.has(commandId)) this.add(commandId);
      this.select(commandId);
    }

    add(commandId) {
      if (this.tabs.size >= MAX_TABS) this.close(this.tabs.keys().next().value);
      const view = new NF.LogView({ title: "Command output",
        download: `/api/commands/${encodeURIComponent(commandId)}/log.txt` });
      const label = el("span", { class: "tab-label" });
      const tab = el("button", { type: "button", role: "tab", class: "tab", "data-tab": commandId, id: `tab-${commandId}`,
        "aria-selected": "false", "aria-controls": "dock-view" }, label);
      this.tabList.append(tab);
      const entry = { view, tab, label };
      this.tabs.set(commandId, entry);
      this.label(commandId);
      NF.loadOutput(commandId, (lines) => view.add(lines), () => this.tabs.get(commandId) === entry)
        .then((cmd) => { if (cmd) { this.fleet.command({ ...cmd, output: undefined }); this.describe(commandId); } })
        .catch((err) => { if (this.current === commandId) setText(this.meta, err.message); });
    }

    select(commandId) {
      const entry = this.tabs.get(commandId);
      if (!entry) return;
      this.current = commandId;
      for (const [id, e] of this.tabs) {
        e.tab.setAttribute("aria-selected", String(id === commandId));
        e.tab.setAttribute("tabindex", id === commandId ? "0" : "-1");
      }
      this.mount.setAttribute("aria-labelledby", entry.tab.id);
      this.mount.replaceChildren(entry.view.root);
      entry.view.offsets = null; entry.view.schedule();
      this.root.classList.add("open");
      this.empty.hidden = true;
      this.describe(commandId);
    }

    close(commandId) {
      const entry = this.tabs.get(commandId);
      if (!entry) return;
      entry.tab.remove();
      this.tabs.delete(commandId);
      if (this.current !== commandId) return;
      const next = [...this.tabs.keys()].pop();
      if (next) { this.select(next); return; }
      this.current = null;
      this.mount.replaceChildren();
      this.root.classList.remove("open");
      this.empty.hidden = false;
      setText(this.title, "");
      setText(this.meta, "");
      delete this.meta.dataset.state;
    }

    label(commandId) {
      const c = this.fleet.commands.get(commandId), entry = this.tabs.get(commandId);
      if (!entry) return;
      setText(entry.label, c ? `${c.host_id} · ${c.kind}` : commandId.slice(0, 8));
      entry.tab.dataset.state = c ? c.state : "";
    }

    describe(commandId) {
      this.label(commandId);
      if (commandId !== this.current) return;
      const c = this.fleet.commands.get(commandId);
      if (!c) return;
      setText(this.title, `${NF.kindWords(c)} on ${c.host_id}`);
      const bits = [NF.stateLabel(c)];
      if (c.exit_code !== null && c.exit_code !== undefined) bits.push(`exit ${c.exit_code}`);
      if (c.detail) bits.push(c.detail);
      if (c.finished_at && c.started_at) bits.push(NF.duration(c.finished_at - c.started_at));
      if (NF.changeWords(c)) bits.push(NF.changeWords(c));
      if (c.state === "queued" && c.expires_at) {
        bits.push(`expires in ${Math.max(0, Math.round((c.expires_at - Date.now() / 1000) / 60))} min`);
      }
      setText(this.meta, bits.join(" · "));
      this.meta.dataset.state = c.state;
      this.tabs.get(commandId).view.describe(`${c.kind} on ${c.host_id} · ${NF.stateLabel(c)}`, NF.ACTIVE.has(c.state));
    }

    onCommand(c) { if (this.tabs.has(c.id)) this.describe(c.id); }
    onOutput(e) {
      const entry = this.tabs.get(e.command_id);
      if (!entry) return;
      const now = Date.now() / 1000; // a live line's arrival is its time, near enough
      entry.view.add(e.lines.map((ln) => ({ ...ln, ts: ln.ts ?? now })));
    }
  }

  NF.Dock = Dock;
})(window.NF);

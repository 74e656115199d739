// The rollout pages: the list of rollouts, or one rollout with its waves and each host's
// outcome, pause/resume/abort; both refreshed when the live stream announces a rollout.
"use strict";

(function (NF) {
  const { $, el, setText } = NF;
  const id = ($('meta[name="rollout-id"]') || {}).content || "";
  const OPEN = new Set(["running", "paused"]);
  let refreshing = null, again = false;

  function stateText(ro) {
    if (ro.state === "running" && ro.next_wave_at) return `running: wave ${ro.wave + 2} of ${ro.wave_count} starts at ${NF.clock(ro.next_wave_at)}`;
    if (ro.state === "running") return `running: wave ${ro.wave + 1} of ${ro.wave_count}`;
    if (ro.state === "paused") return `paused after wave ${ro.wave + 1} of ${ro.wave_count} (its running hosts finish)`;
    return `${ro.state} ${NF.ago(ro.finished_at)}`;
  }

  function drawOne(ro) {
    setText($("#ro-title"), `${ro.kind} on ${ro.counts.total} hosts`);
    const st = $("#ro-state");
    setText(st, stateText(ro));
    st.className = `ro-state state-${ro.state}`;
    setText($("#ro-report"), ro.report);
    const p = ro.policy;
    const facts = [["Started", `${NF.dateTime(ro.created_at)} by ${ro.actor}`], ["Target", NF.short(ro.target)],
      ["Policy", `canary ${p.canary_percent ? `${p.canary_percent} %` : p.canary}, waves of ` +
        `${p.wave_percent ? `${p.wave_percent} %` : (p.wave_size || "the rest")}, pause ${p.pause_s} s, ` +
        `failure budget ${p.failure_budget}${p.group_by ? `, grouped by ${NF.words(p.group_by)}` : ""}`]];
    $("#ro-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    for (const b of document.querySelectorAll("[data-ro-action]")) {
      const a = b.dataset.roAction;
      b.disabled = !OPEN.has(ro.state) || (a === "pause" && ro.state !== "running") || (a === "resume" && ro.state !== "paused");
    }
    $("#ro-waves").replaceChildren(...ro.waves.map(drawWave));
  }

  function drawWave(w) {
    const rows = w.hosts.map((h) => el("tr", {},
      el("td", {}, el("a", { href: `/hosts/${encodeURIComponent(h.host_id)}`, text: h.host_id })),
      el("td", { class: `outcome-${h.outcome}`, text: NF.words(h.outcome) }),
      el("td", { text: h.finished_at && h.started_at ? NF.duration(h.finished_at - h.started_at) : "—" }),
      el("td", { class: "detail", text: h.detail || "" })));
    const passed = w.hosts.filter((h) => h.outcome === "succeeded").length;
    return el("section", { class: "card ro-wave", "aria-label": `Wave ${w.index + 1}` },
      el("h3", {}, el("span", { text: w.index === 0 ? "Wave 1 (canary)" : `Wave ${w.index + 1}` }),
        el("span", { class: `wave-${w.state.replace(" ", "_")}`, text: w.state }),
        el("span", { class: "muted", text: `${passed} of ${w.hosts.length} succeeded` })),
      el("table", { class: "ro-table" },
        el("thead", {}, el("tr", {}, ...["Host", "Outcome", "Took", "Detail"].map((t) => el("th", { scope: "col", text: t })))),
        el("tbody", {}, ...rows)));
  }

  function drawList(list) {
    $("#ro-list tbody").replaceChildren(...list.map((ro) => el("tr", {},
      el("td", {}, el("a", { href: `/rollouts/${ro.id}`, text: NF.dateTime(ro.created_at) })),
      el("td", { text: `${ro.kind} · ${ro.counts.total} hosts` }),
      el("td", { class: `state-${ro.state}`, text: ro.state }),
      el("td", { text: `${Math.min(ro.wave + 1, ro.wave_count)} of ${ro.wave_count}` }),
      el("td", { class: "detail", text: ro.report }))));
  }

  // One request at a time; an event during one asks for one more afterwards.
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = (async () => {
      try {
        if (id) drawOne(await NF.api(`/api/rollouts/${encodeURIComponent(id)}`));
        else drawList((await NF.api("/api/rollouts")).rollouts);
      } catch (err) { setText($(id ? "#ro-report" : "#ro-list-title"), err.message); }
    })();
    await refreshing;
    refreshing = null;
    if (again) { again = false; refresh(); }
  }

  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-ro-action]");
    if (!b || b.disabled) return;
    const action = b.dataset.roAction;
    if (action === "abort" && !window.confirm("Abort this rollout? Queued hosts are cancelled; hosts already deploying finish.")) return;
    try {
      await NF.post(`/api/rollouts/${encodeURIComponent(id)}/${action}`);
      setText($("#ro-action-result"), `${action}: done`);
    } catch (err) { setText($("#ro-action-result"), err.message); }
    refresh();
  });

  NF.connect({
    snapshot: refresh,
    rollout: (e) => { if (!id || e.rollout.id === id) refresh(); },
  }, $("#conn"));
})(window.NF);

// A host's page: its state, metadata with where each value came from, a day of load and
// memory, identity and connection, the plan, every command, and the output viewer.
"use strict";

(function (NF) {
  const { $, el, setText } = NF;
  const hostId = document.querySelector('meta[name="host-id"]').content;
  const page = { host: null, commands: new Map(), target: null, shown: null, view: null };
  const IDENTITY = { none: "not enrolled", active: "own token", revoked: "revoked" };
  const TONE = { running: "info", dispatched: "info", queued: "neutral", succeeded: "ok", failed: "bad",
    lost: "bad", timed_out: "bad", rolled_back: "warn", cancelled: "neutral" };

  function facts(dl, pairs) {
    dl.replaceChildren(...pairs.filter(Boolean).flatMap(([k, v, source]) => {
      const dd = el("dd", { "data-fact": k }, v === null || v === undefined || v === "" ? "—" : v);
      if (source) dd.append(el("span", { class: "source", text: `from ${source}` }));
      return [el("dt", { text: k }), dd];
    }));
  }

  function lastDeploy() {
    return [...page.commands.values()].filter((c) => NF.DEPLOY_KINDS.has(c.kind) && !NF.ACTIVE.has(c.state) && c.state !== "cancelled")
      .sort((a, b) => b.created_at - a.created_at)[0] || null;
  }

  function renderHost() {
    const h = page.host;
    if (!h) return;
    const st = h.status || {}, dep = h.deploy || {}, conn = h.connection || {};
    const ds = NF.deployState(h, lastDeploy());
    $("#host-status").replaceChildren(el("span", { class: `dot ${h.online ? "on" : "off"}`, "aria-hidden": "true" }),
      h.online ? "online" : `offline, last seen ${NF.ago(h.last_seen)}`);
    $("#host-deploy").replaceChildren(el("span", { class: `badge ${({ current: "ok", behind: "warn", failed: "bad", diverged: "bad" })[ds] || "neutral"}`,
      "data-state": ds, text: NF.words(ds) }));
    const reboot = NF.rebootNeeded(h);
    $("#host-badges").replaceChildren(...(reboot ? [el("span", { class: "badge warn", text: "reboot needed",
      title: (h.reboot && h.reboot.reason) || "" })] : []));
    const mem = NF.memFraction(st);
    const last = dep.last;
    facts($("#state-facts"), [
      ["Deploy state", NF.words(ds)],
      ["Deployed commit", NF.short(dep.deployed_commit)],
      dep.checked_out_commit ? ["Checked out", NF.short(dep.checked_out_commit)] : null,
      ["Target", NF.short(dep.target_commit || page.target)],
      ["Generation", String(dep.generation ?? st.generation ?? "—")],
      ["System", dep.system || st.current_system || "—"],
      ["Health gate", dep.gate ? `${NF.gateWords(dep.gate)} (${dep.gate.source === "host" ? "this host's" : "the fleet's"} default)` : "none"],
      last ? ["Last deployment", `${last.kind} ${NF.words(last.result)} · ${NF.dateTime(last.finished_at)}${last.detail ? ` · ${last.detail}` : ""}`] : null,
      ["Reboot", reboot === null ? "not applicable" : reboot ? `needed${h.reboot && h.reboot.reason ? `: ${h.reboot.reason}` : ""}` : "not needed"],
      ["OS", `${st.os_kind || "unknown"} ${st.os_version || ""}`.trim()],
      ["nixpkgs", st.nixpkgs_version || "—"],
      ["flake.lock age", h.lock_age_days === null || h.lock_age_days === undefined ? "—" : `${Math.round(h.lock_age_days)} days`],
      ["Last test", h.last_test ? `${h.last_test.passed}/${h.last_test.total} passed · ${NF.dateTime(h.last_test.at)}` : "—"],
      ["Load (1 min)", st.load1 === undefined ? "—" : Number(st.load1).toFixed(2)],
      ["Memory", mem === null ? "—" : `${Math.round(mem * 100)}% of ${(st.mem_total / 1024 ** 3).toFixed(1)} GiB used`],
      ["Uptime", st.uptime_s ? NF.duration(st.uptime_s) : "—"],
    ]);
    const src = h.meta_sources || {};
    facts($("#meta-facts"), [
      ["Location", h.location, src.location], ["Device type", h.device_type, src.device_type],
      ["Colour", h.theme_color, src.theme_color], ["Hostname", st.hostname],
      ["Agent version", st.agent_version],
      ...(h.labels && typeof h.labels === "object" ? Object.entries(h.labels).slice(0, 30).map(([k, v]) => [`label ${k}`, String(v), src[`labels.${k}`]]) : []),
    ]);
    const used = h.token_used_at ? `${NF.ago(h.token_used_at)} from ${h.token_used_from || "?"}` : "never";
    const t = conn.tls_failure, b = conn.breaker;
    facts($("#identity-facts"), [
      ["Credential", IDENTITY[h.identity_state] || h.identity_state],
      ["Last used", used],
      ["Client certificate", h.cert_sha256 ? `SHA-256 ${h.cert_sha256.slice(0, 16)}…` : "not required"],
      ["Connected since", conn.connected_since ? NF.dateTime(conn.connected_since) : "not connected"],
      ["Reconnects (1 h)", String(conn.reconnects_1h || 0)],
      b && b.failed_attempts ? ["Last outage", `${b.failed_attempts} failed dials over ${Math.round(b.down_s)} s`] : null,
      t ? ["Last TLS failure", `${NF.words(t.kind)}, ${t.count} times, ${NF.ago(t.at)}`] : null,
    ]);
    renderPlan(h.plan);
    renderGenerations(st.generations || []);
    renderGateForm();
    const input = $("#labels-input");
    // The operator's own labels, for editing; not while someone is typing in the field.
    if (input && document.activeElement !== input && !input.dataset.edited) {
      input.value = Object.entries(h.admin_labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
    }
  }

  async function saveLabels(ev) {
    ev.preventDefault();
    const out = $("#labels-result"), input = $("#labels-input");
    try {
      const res = await NF.post(`/api/hosts/${encodeURIComponent(hostId)}/labels`, { labels: NF.parseLabels(input.value) }, "PUT");
      delete input.dataset.edited;
      const n = Object.keys(res.admin_labels).length;
      out.textContent = `Saved ${n} label${n === 1 ? "" : "s"}.`;
      if (page.host) { page.host = { ...page.host, ...res }; renderHost(); }
    } catch (err) { out.textContent = err.message; }
  }
  // The host's default health gate: what its switches carry unless one names its own.
  // Filled from the gate in force (the host's or the fleet's), not while it is being edited.
  function renderGateForm() {
    const f = $("#gate-form");
    if (!f || f.dataset.edited || !page.host) return;
    const g = (page.host.deploy || {}).gate;
    $("#gate-deadline").value = g ? String(g.deadline_s) : "120";
    $("#gate-confirm").checked = g ? Boolean(g.confirm) : true;
    $("#gate-tests").checked = Boolean(g && (g.checks || []).some((k) => k.kind === "tests"));
    $("#gate-fleet").disabled = !(g && g.source === "host");
  }

  async function putGate(gate, done) {
    const out = $("#gate-result");
    try {
      await NF.post(`/api/hosts/${encodeURIComponent(hostId)}/health-gate`, { gate }, "PUT");
      delete $("#gate-form").dataset.edited;
      out.textContent = done;
      renderGateForm(); // the host's live event may have come first, while it was edited
    } catch (err) { out.textContent = err.message; }
  }

  function saveGate(ev) {
    ev.preventDefault();
    const g = (page.host && page.host.deploy && page.host.deploy.gate) || null;
    const others = ((g && g.checks) || []).filter((k) => k.kind !== "tests");
    const checks = [...($("#gate-tests").checked ? [{ kind: "tests" }] : []), ...others];
    const gate = { deadline_s: Number($("#gate-deadline").value), confirm: $("#gate-confirm").checked, checks };
    putGate(gate, `Saved: ${hostId}'s switches carry ${NF.gateWords(gate)}.`);
  }
  const gateForm = $("#gate-form");
  if (gateForm) {
    gateForm.addEventListener("submit", saveGate);
    gateForm.addEventListener("input", () => { gateForm.dataset.edited = "1"; });
    $("#gate-fleet").addEventListener("click", () => putGate(null, `Saved: ${hostId}'s switches carry the fleet's default gate.`));
  }

  const labelsForm = $("#labels-form");
  if (labelsForm) {
    labelsForm.addEventListener("submit", saveLabels);
    $("#labels-input").addEventListener("input", (ev) => { ev.target.dataset.edited = "1"; });
  }

  function renderPlan(plan) {
    $("#plan-card").hidden = !plan;
    if (!plan) return;
    const bits = [plan.summary || "", plan.target_commit ? `for ${NF.short(plan.target_commit)}` : "",
      plan.expired ? "(expired: preview again)" : "", plan.reboot ? "· needs a reboot" : ""];
    setText($("#plan-summary"), bits.filter(Boolean).join(" "));
    const rows = (plan.changes || []).slice(0, 500).map((c) => el("tr", {},
      el("td", { text: c.name }), el("td", { text: c.from || "—" }), el("td", { text: c.to || "—" }),
      el("td", { class: "delta", text: c.size_delta ? size(c.size_delta) : "" })));
    $("#plan-changes tbody").replaceChildren(...rows);
  }

  // The profile's generations as the agent lists them; a commit shows only where the system
  // says it or the agent built it (a generation made by hand has none).
  // A generation older than the running one is a roll back; a newer one (left behind by a
  // rollback, or built and not kept) is a switch forward, and says so.
  function generationButton(g, gens) {
    const running = gens.find((x) => x.current);
    const verb = running && g.number > running.number ? "Switch" : "Roll back";
    return el("button", { type: "button", "data-rollback-to": String(g.number), "data-commit": g.commit || "",
      text: `${verb} to this`, "aria-label": `${verb} to generation ${g.number}` });
  }

  function renderGenerations(gens) {
    const rows = gens.map((g) => el("tr", { "aria-current": g.current ? "true" : null, "data-generation": String(g.number) },
      el("td", { text: g.current ? `${g.number} (running)` : String(g.number) }),
      el("td", { text: NF.dateTime(g.created) }),
      el("td", {}, el("code", { text: NF.short(g.commit) })),
      el("td", { class: "path", text: (g.system || "").replace(/^\/nix\/store\/[a-z0-9]{32}-/, "") || "—" }),
      el("td", {}, g.current ? "" : generationButton(g, gens))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "The agent reports no generations." })));
    $("#generations tbody").replaceChildren(...rows);
  }

  function size(bytes) {
    const sign = bytes < 0 ? "−" : "+", v = Math.abs(bytes);
    return v >= 1024 ** 2 ? `${sign}${(v / 1024 ** 2).toFixed(1)} MiB` : `${sign}${(v / 1024).toFixed(0)} KiB`;
  }

  function renderHistory() {
    const rows = [...page.commands.values()].sort((a, b) => b.created_at - a.created_at).slice(0, 200).map((c) => {
      const dur = c.finished_at && c.started_at ? NF.duration(c.finished_at - c.started_at)
        : c.started_at && NF.ACTIVE.has(c.state) ? `${NF.duration(Date.now() / 1000 - c.started_at)} so far` : "—";
      const commits = NF.changeWords(c) || "—";
      const detail = [c.exit_code !== null && c.exit_code !== undefined ? `exit ${c.exit_code}` : "",
        c.tests ? `${c.tests.filter((x) => x.ok).length}/${c.tests.length} tests passed` : "", NF.gateWords(c.gate), c.detail || ""].filter(Boolean).join(" · ");
      const tr = el("tr", { tabindex: "0", "data-show": c.id, "aria-current": c.id === page.shown ? "true" : null,
        title: "Show this command's output" },
        el("td", { text: NF.dateTime(c.created_at) }), el("td", { text: NF.kindWords(c) }),
        el("td", {}, el("span", { class: `badge ${TONE[c.state] || "neutral"}`, text: NF.stateLabel(c) })),
        el("td", { text: dur }), el("td", { text: c.actor || "—" }), el("td", { class: "change" }, el("code", { text: commits })),
        el("td", { text: detail }));
      return tr;
    });
    const body = $("#history tbody");
    const focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement.dataset.show : null;
    body.replaceChildren(...rows);
    if (focused) { const again = body.querySelector(`[data-show="${CSS.escape(focused)}"]`); if (again) again.focus({ preventScroll: true }); }
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "No commands yet." })));
  }

  function show(commandId) {
    page.shown = commandId;
    page.view = new NF.LogView({ title: "Command output", download: `/api/commands/${encodeURIComponent(commandId)}/log.txt` });
    $("#host-log").replaceChildren(page.view.root);
    describe();
    const view = page.view;
    NF.loadOutput(commandId, (lines) => view.add(lines), () => page.view === view)
      .then((cmd) => { if (cmd && page.view === view) { merge({ ...cmd, output: undefined }); describe(); } })
      .catch((err) => setText($("#output-meta"), err.message));
    renderHistory();
  }

  function describe() {
    const c = page.commands.get(page.shown);
    if (!c) return;
    setText($("#output-title"), `${NF.kindWords(c)} on ${c.host_id} · ${NF.dateTime(c.created_at)}`);
    const bits = [NF.stateLabel(c)];
    if (c.exit_code !== null && c.exit_code !== undefined) bits.push(`exit ${c.exit_code}`);
    if (c.detail) bits.push(c.detail);
    if (NF.changeWords(c)) bits.push(NF.changeWords(c));
    setText($("#output-meta"), bits.join(" · "));
    $("#output-meta").dataset.state = c.state;
    if (page.view) page.view.describe(`${c.kind} on ${c.host_id} · ${NF.stateLabel(c)}`, NF.ACTIVE.has(c.state));
  }

  const LIVE = ["queued", "dispatched", "running"];
  const rank = (s) => { const i = LIVE.indexOf(s); return i < 0 ? LIVE.length : i; };
  function merge(c) {
    const known = page.commands.get(c.id);
    if (known && rank(known.state) > rank(c.state)) return;
    page.commands.set(c.id, { ...(known || {}), ...c });
  }

  // --- state history -------------------------------------------------------------------
  const STATE_TONE = { online: "ok", offline: "bad", current: "ok", behind: "warn", failed: "bad", diverged: "bad",
    needed: "warn", "not needed": "ok" };
  const FIELD_WORDS = { connection: "agent", deploy: "deploy", reboot: "reboot" };
  let stateKey = null;
  async function loadStates() {
    try {
      const data = await NF.api(`/api/hosts/${encodeURIComponent(hostId)}/states?limit=100`);
      const items = data.states.map((s) => el("li", { "data-field": s.field },
        el("time", { text: NF.dateTime(s.at) }), el("span", { class: "field muted", text: FIELD_WORDS[s.field] || s.field }),
        el("span", { class: "state" },
          el("span", { class: `badge ${STATE_TONE[s.value] || "neutral"}`, text: NF.words(s.value) }),
          !s.detail ? "" : s.field === "deploy"
            ? el("code", { class: "muted detail commit", title: s.detail, text: NF.short(s.detail) })
            : el("span", { class: "muted detail", text: s.detail }))));
      if (!items.length) items.push(el("li", { class: "muted", text: "No state changes recorded yet." }));
      $("#states").replaceChildren(...items);
    } catch (err) { setText($("#states"), err.message); }
  }
  // Read again only when a followed field changed, not on every heartbeat. The deployed
  // commit counts: a deploy that keeps a host current is a row of its own.
  function statesMaybeChanged(h) {
    const d = h.deploy || {}, r = h.reboot || {};
    const key = JSON.stringify([h.online, d.state, d.deployed_commit, r.needed, r.reason]);
    if (key !== stateKey) { stateKey = key; setTimeout(loadStates, 300); }
  }

  // --- charts -------------------------------------------------------------------------
  async function loadSamples() {
    try {
      const data = await NF.api(`/api/hosts/${encodeURIComponent(hostId)}/samples`);
      drawCharts(data.samples || []);
    } catch (err) { setText($("#charts"), err.message); }
  }

  function chart(title, points, format, fixedMax) {
    const box = el("div", { class: "chart-box", "data-chart": title });
    const values = points.map((p) => p[1]);
    const max = fixedMax || Math.max(1, ...values);
    const now = Date.now() / 1000, span = 86400;
    const svg = NF.svg("svg", { class: "daychart", viewBox: "0 0 288 40", preserveAspectRatio: "none", role: "img",
      "aria-label": `${title} over the last 24 hours` });
    const xy = ([t, v]) => [(288 * (1 - (now - t) / span)).toFixed(1), (39 - (v / max) * 37).toFixed(1)];
    if (points.length > 1) svg.append(NF.svg("polyline", { points: points.map((p) => xy(p).join(",")).join(" ") }));
    else if (points.length === 1) {
      const [x, y] = xy(points[0]);
      svg.append(NF.svg("line", { x1: String(Math.max(0, x - 3)), y1: y, x2: x, y2: y, class: "one" }));
    }
    const latest = values.length ? format(values[values.length - 1]) : "no data yet";
    const peak = values.length ? `, peak ${format(Math.max(...values))}` : "";
    box.append(el("h3", { text: `${title}: ${latest}${peak}` }), svg);
    return box;
  }

  function drawCharts(samples) {
    const load = samples.map((s) => [s.at, s.load1]);
    const mem = samples.filter((s) => s.mem_used !== null && s.mem_used !== undefined).map((s) => [s.at, s.mem_used]);
    $("#charts").replaceChildren(chart("Load", load, (v) => v.toFixed(2)),
      chart("Memory used", mem, (v) => `${Math.round(v * 100)}%`, 1));
  }

  // --- actions --------------------------------------------------------------------------
  // The result line follows the command it announced to its end ("queued" is only its
  // first word), as the fleet page's notice does.
  let watched = null;
  function follow(c) {
    if (!watched || c.id !== watched.id) return;
    const why = ["failed", "timed_out", "lost", "rolled_back"].includes(c.state) && c.detail ? ` (${c.detail})` : "";
    setText($("#action-result"), `${watched.label}: ${NF.stateLabel(c)}${why}`);
  }
  function announce(label, res) {
    watched = { id: res.command_id, label: `${label}${res.gate ? `, ${NF.gateWords(res.gate)}` : ""}` };
    const known = page.commands.get(res.command_id);
    if (known) follow(known); else setText($("#action-result"), `${watched.label}: ${NF.words(res.state)}`);
  }

  async function runAction(kind) {
    const out = $("#action-result");
    try {
      const res = await NF.command(hostId, kind);
      announce(kind, res);
      if (kind !== "stop" && kind !== "restart") show(res.command_id);
    } catch (err) { out.textContent = `${kind}: ${err.message}`; }
  }

  // A chosen generation: asked first, since it becomes the running system at once.
  async function rollbackTo(number, commit) {
    const out = $("#action-result");
    const from = page.host && page.host.status ? page.host.status.generation : null;
    const what = `generation ${number}${commit ? ` (${NF.short(commit)})` : ""}`;
    const verb = from && number > from ? `Switch ${hostId} forward to` : `Roll ${hostId} back to`;
    if (!window.confirm(`${verb} ${what}${from ? `, from generation ${from}` : ""}? It is activated at once.`)) return;
    try {
      const res = await NF.post(`/api/hosts/${encodeURIComponent(hostId)}/command`, { command: "rollback", generation: number });
      announce(`rollback to gen ${number}`, res);
      show(res.command_id);
    } catch (err) { out.textContent = `rollback to gen ${number}: ${err.message}`; }
  }

  function shownOnce(prefix, secret, suffix = "") {
    return [prefix, el("span", { class: "token", text: secret }), suffix];
  }

  async function identityAction(kind) {
    const out = $("#identity-result");
    const url = `/api/hosts/${encodeURIComponent(hostId)}`;
    try {
      if (kind === "revoke") {
        if (!window.confirm(`Revoke the agent token of ${hostId}? Its agent is cut off at once.`)) return;
        await NF.post(`${url}/agent-token`, undefined, "DELETE");
        out.replaceChildren(`Revoked: ${hostId}'s agent was disconnected. Issue an enrollment code to let it back in.`);
      } else if (kind === "rotate") {
        const res = await NF.post(`${url}/agent-token`);
        out.replaceChildren(...shownOnce(`New agent token for ${hostId}, shown only now: `, res.agent_token,
          " (the old one stopped working; put this one in the agent's token file)"));
      } else {
        const res = await NF.post(`${url}/enroll-code`);
        const until = new Date(res.enroll_expires_at * 1000).toLocaleTimeString();
        out.replaceChildren(...shownOnce(`Enrollment code for ${hostId}, shown only now: `, res.enroll_code,
          ` (works once, until ${until}; start the agent with --enroll-code-file)`));
      }
    } catch (err) { out.textContent = err.message; }
  }

  document.addEventListener("click", (ev) => {
    const t = ev.target.closest("[data-action],[data-identity],[data-rollback-to],#history [data-show]");
    if (!t) return;
    if (t.dataset.rollbackTo) rollbackTo(Number(t.dataset.rollbackTo), t.dataset.commit);
    else if (t.dataset.action) runAction(t.dataset.action);
    else if (t.dataset.identity) identityAction(t.dataset.identity);
    else if (t.dataset.show) show(t.dataset.show);
  });
  document.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest && ev.target.closest("#history tr[data-show]");
    if (!tr) return;
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); show(tr.dataset.show); }
    else if (ev.key === "ArrowDown" || ev.key === "j") { ev.preventDefault(); if (tr.nextElementSibling) tr.nextElementSibling.focus(); }
    else if (ev.key === "ArrowUp" || ev.key === "k") { ev.preventDefault(); if (tr.previousElementSibling) tr.previousElementSibling.focus(); }
  });

  async function loadHistory() {
    try {
      const data = await NF.api(`/api/hosts/${encodeURIComponent(hostId)}/commands?limit=200`);
      for (const c of data.commands) merge(c);
      renderHistory(); renderHost();
      if (!page.shown && data.commands.length) show(data.commands[0].id);
    } catch (err) { setText($("#output-meta"), err.message); }
  }

  NF.connect({
    snapshot: (snap) => {
      page.target = snap.target;
      page.host = snap.hosts.find((h) => h.id === hostId) || null;
      for (const c of snap.commands) if (c.host_id === hostId) merge(c);
      if (!page.host) setText($("#host-status"), "This host was removed.");
      renderHost(); renderHistory();
      if (page.host) statesMaybeChanged(page.host);
    },
    host: (e) => {
      if (e.host.id !== hostId) return;
      const before = page.host && page.host.last_seen;
      page.host = e.host; renderHost(); statesMaybeChanged(e.host);
      if (e.host.last_seen !== before && Date.now() - lastSamples > 60000) { lastSamples = Date.now(); loadSamples(); }
    },
    host_removed: (e) => { if (e.host_id === hostId) { page.host = null; setText($("#host-status"), "This host was removed."); } },
    target: (e) => { page.target = e.commit; renderHost(); },
    command: (e) => {
      if (e.command.host_id !== hostId) return;
      merge(e.command); renderHistory(); renderHost(); follow(page.commands.get(e.command.id));
      if (e.command.id === page.shown) describe();
    },
    output: (e) => {
      if (e.command_id !== page.shown || !page.view) return;
      const now = Date.now() / 1000;
      page.view.add(e.lines.map((ln) => ({ ...ln, ts: ln.ts ?? now })));
    },
  }, $("#conn"));
  let lastSamples = Date.now();
  loadHistory();
  loadSamples();
})(window.NF);

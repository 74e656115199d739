// The fleet page's bulk actions as rollouts: a dialog that states what will happen (the
// dashboard's own plan, in words), then the rollout; its result line follows the rollout
// live ("wave 2 of 3: 3 succeeded, 2 running …"), never a count of what was queued.
"use strict";

(function (NF) {
  const { $, el, setText } = NF;
  let pending = null; // {kind, hostIds, out}
  let followed = null; // the rollout whose progress the result line shows
  let planSeq = 0;

  function dialog() {
    let d = $("#rollout-confirm");
    if (d) return d;
    const num = (name, label, value, attrs = {}) => el("label", {}, label,
      el("input", { name, type: "number", min: "0", step: "1", value: String(value), inputmode: "numeric", ...attrs }));
    const group = el("select", { name: "group_by" }, el("option", { value: "", text: "no grouping" }),
      el("option", { value: "location", text: "location" }), el("option", { value: "device_type", text: "device type" }));
    d = el("dialog", { id: "rollout-confirm", "aria-labelledby": "rollout-confirm-title" },
      el("h2", { id: "rollout-confirm-title", text: "Start a rollout" }),
      el("form", { method: "dialog", id: "rollout-form" },
        el("p", { id: "rollout-plan", role: "status", text: "Working out the waves…" }),
        el("div", { class: "ro-fields" },
          num("canary", "Canary hosts", 1), num("wave_size", "Hosts per later wave (0: all the rest)", 0),
          num("pause_s", "Pause between waves (s)", 0), num("failure_budget", "Failures a wave may have", 0),
          el("label", {}, "Waves never mix hosts of one", group)),
        el("div", { class: "row-buttons" },
          el("button", { type: "submit", class: "primary", id: "rollout-start", value: "start", text: "Start rollout" }),
          el("button", { type: "submit", value: "cancel", text: "Cancel" }))));
    document.body.append(d);
    d.querySelector("form").addEventListener("input", () => preview());
    d.addEventListener("close", () => { if (d.returnValue === "start") start(); else pending = null; });
    return d;
  }

  function policy() {
    const f = $("#rollout-form");
    const n = (name) => Math.max(0, Math.floor(Number(f.elements[name].value) || 0));
    return { canary: n("canary"), wave_size: n("wave_size"), pause_s: n("pause_s"),
      failure_budget: n("failure_budget"), group_by: f.elements.group_by.value };
  }

  async function preview() {
    const seq = ++planSeq;
    const start = $("#rollout-start");
    start.disabled = true;
    try {
      const plan = await NF.post("/api/rollouts", { command: pending.kind, host_ids: pending.hostIds, policy: policy(), dry_run: true });
      if (seq !== planSeq) return;
      const refused = plan.refused.length ? ` ${plan.refused.length} selected hosts are left out: ${plan.refused.map((r) => r.host_id).join(", ")}.` : "";
      setText($("#rollout-plan"), plan.summary + refused);
      start.disabled = plan.waves.length === 0;
    } catch (err) { if (seq === planSeq) setText($("#rollout-plan"), err.message); }
  }

  async function start() {
    const { kind, hostIds, out } = pending;
    pending = null;
    try {
      const ro = await NF.post("/api/rollouts", { command: kind, host_ids: hostIds, policy: policy() });
      followed = ro.id;
      show(out, ro);
    } catch (err) { out.replaceChildren(err.message); }
  }

  function show(out, ro) {
    const c = ro.counts, parts = [];
    for (const [key, word] of [["succeeded", "succeeded"], ["failed", "failed"], ["rolled_back", "rolled back"],
      ["timed_out", "timed out"], ["lost", "lost"], ["running", "running"], ["dispatched", "sent"],
      ["queued", "queued"], ["waiting", "waiting"], ["cancelled", "cancelled"], ["not_started", "not started"]]) {
      if (c[key]) parts.push(`${c[key]} ${word}`);
    }
    const where = ro.state === "running" || ro.state === "paused"
      ? `${ro.state}, wave ${Math.min(ro.wave + 1, ro.wave_count)} of ${ro.wave_count}` : ro.state;
    out.replaceChildren(`${ro.kind} rollout (${where}): ${parts.join(", ")} · `,
      el("a", { href: `/rollouts/${ro.id}`, text: "details" }));
  }

  // The fleet page asks for a rollout instead of queueing everything at once.
  NF.confirmRollout = function confirmRollout(kind, hostIds, out) {
    pending = { kind, hostIds, out };
    const d = dialog();
    const words = { "pull-switch": "deploy", plan: "preview" }[kind] || kind;
    setText($("#rollout-confirm-title"), `Start a rollout: ${words} on ${hostIds.length} selected host${hostIds.length === 1 ? "" : "s"}`);
    setText($("#rollout-plan"), "Working out the waves…");
    d.showModal();
    preview();
  };

  // Called by the fleet page's stream for every `rollout` event.
  NF.rolloutEvent = function rolloutEvent(ro) {
    if (ro.id === followed) show($("#bulk-result"), ro);
  };
})(window.NF);

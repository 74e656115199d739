// The tokens page: list the caller's tokens (an admin: every one), revoke one, create one
// (its secret is shown once here and never again: the dashboard keeps only its HMAC).
"use strict";

(function (NF) {
  const { $, el, setText } = NF;
  const isAdmin = ($('meta[name="is-admin"]') || {}).content === "yes";
  const EMPTY = "No tokens yet.";

  function when(ts) {
    return ts ? new Date(ts * 1000).toLocaleString() : "never";
  }

  function scopeText(s) {
    const parts = [];
    if (s.hosts.length) parts.push(`hosts ${s.hosts.join(", ")}`);
    if (s.labels) parts.push(`labels ${s.labels}`);
    if (s.kinds.length) parts.push(`only ${s.kinds.join(", ")}`);
    return parts.join("; ") || "any host, any command";
  }

  function stateOf(t) {
    if (t.revoked_at) return "revoked";
    if (t.expires_at * 1000 <= Date.now()) return "expired";
    return "";
  }

  async function revoke(t) {
    try {
      await NF.api(`/api/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
      setText($("#token-result"), `${t.name} (${t.id}) is revoked.`);
    } catch (err) {
      setText($("#token-result"), err.message);
    }
    await refresh();
  }

  function row(t) {
    const state = stateOf(t);
    const button = el("button", { type: "button", text: "Revoke" });
    button.disabled = Boolean(state);
    button.addEventListener("click", () => revoke(t));
    const used = t.last_used_at ? `${when(t.last_used_at)} from ${t.last_used_from}` : "never";
    return el("tr", {},
      el("td", { text: `${t.name} (${t.id})` }),
      el("td", { text: t.service ? "service" : t.owner }),
      el("td", { text: t.role }),
      el("td", { text: scopeText(t.scope) }),
      el("td", { class: state ? "outcome-failed" : "", text: state || new Date(t.expires_at * 1000).toLocaleDateString() }),
      el("td", { text: used }),
      el("td", {}, button));
  }

  async function refresh() {
    try {
      const { tokens } = await NF.api(isAdmin ? "/api/tokens?all=true" : "/api/tokens");
      $("#token-list tbody").replaceChildren(...tokens.map(row));
      const note = $("#token-result");
      if (!tokens.length) setText(note, EMPTY);
      else if (note.textContent === EMPTY) setText(note, "");
    } catch (err) {
      setText($("#token-result"), err.message);
    }
  }

  $("#new-token").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const body = {
      name: f.name.value,
      role: f.role.value,
      hosts: f.hosts.value.split(/[\s,]+/).filter(Boolean),
      labels: f.labels.value.trim(),
      kinds: [...f.querySelectorAll('input[name="kinds"]:checked')].map((i) => i.value),
      expires_in: f.expires_in.value,
      service: Boolean(f.service && f.service.checked),
    };
    const out = $("#new-result");
    try {
      const res = await NF.post("/api/tokens", body);
      out.replaceChildren(
        el("p", { text: `Created ${res.token.name} (${res.token.id}). Copy it now: it is shown only once.` }),
        el("code", { id: "new-secret", text: res.secret }));
      f.reset();
    } catch (err) {
      setText(out, err.message);
    }
    await refresh();
  });

  refresh();
})(window.NF);

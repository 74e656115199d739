// The users page: list users, change a role, disable or enable, add one (its TOTP
// secret, if asked for, is shown once here and never again).
"use strict";

(function (NF) {
  const { $, el, setText } = NF;
  const me = ($('meta[name="me"]') || {}).content || "";
  const ROLES = ["viewer", "operator", "admin"];

  async function change(name, body, what) {
    try {
      await NF.api(`/api/users/${encodeURIComponent(name)}`, { method: "PATCH", body });
      setText($("#user-result"), `${name}: ${what}.`);
    } catch (err) {
      setText($("#user-result"), err.message);
    }
    await refresh();
  }

  function row(u) {
    const role = el("select", { "aria-label": `Role of ${u.username}` },
      ...ROLES.map((r) => el("option", { value: r, text: r, ...(r === u.role ? { selected: "" } : {}) })));
    role.addEventListener("change", () => change(u.username, { role: role.value }, `now ${role.value}`));
    const toggle = el("button", { type: "button", text: u.disabled ? "Enable" : "Disable" });
    toggle.disabled = u.username === me;
    toggle.addEventListener("click", () => change(u.username, { disabled: !u.disabled }, u.disabled ? "enabled" : "disabled"));
    return el("tr", {},
      el("td", { text: u.username + (u.username === me ? " (you)" : "") }),
      el("td", {}, role),
      el("td", { text: u.source === "oidc" ? "single sign-on" : u.totp ? "password + TOTP" : "password" }),
      el("td", { class: u.disabled ? "outcome-failed" : "", text: u.disabled ? "disabled" : "active" }),
      el("td", {}, toggle));
  }

  async function refresh() {
    try {
      const { users } = await NF.api("/api/users");
      $("#user-list tbody").replaceChildren(...users.map(row));
    } catch (err) {
      setText($("#user-result"), err.message);
    }
  }

  $("#add-user").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const body = { username: f.username.value, password: f.password.value, role: f.role.value, totp: f.totp.checked };
    const out = $("#add-result");
    try {
      const res = await NF.post("/api/users", body);
      out.replaceChildren(el("span", { text: `Added ${res.user.username} as ${res.user.role}.` }));
      if (res.totp_secret) {
        out.append(el("br"), el("span", { text: "TOTP secret (shown once): " }), el("code", { text: res.totp_secret }));
      }
      f.reset();
    } catch (err) {
      setText(out, err.message);
    }
    await refresh();
  });

  refresh();
})(window.NF);

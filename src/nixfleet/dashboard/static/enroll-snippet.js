// "Add a host": what to paste on the new host, with its one-time enrollment code filled in:
// the command that stores the code, the NixOS module configuration, and the agent command
// line for hosts without Nix, each with a copy button. Self-contained: it listens for the
// "nixfleet:host-added" event the add-host form sends with the API's answer.
"use strict";

(function () {
  const STATE = "/var/lib/nixfleet-agent";
  const CODE_FILE = `${STATE}/enroll-code`;

  // POSIX shell single quotes: nothing inside is special, a quote is closed and escaped.
  const sh = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`;
  // A Nix double-quoted string: JSON's escapes are Nix's, and ${ would interpolate.
  const nix = (s) => JSON.stringify(String(s)).replaceAll("${", "\\${");

  function blocks({ hostId, code, until, url, repoUrl, insecure }) {
    const repo = repoUrl || "REPLACE-WITH-YOUR-CONFIG-REPO";
    const store = [`install -D -m 0600 /dev/stdin ${CODE_FILE} <<'EOF'`, code, "EOF"].join("\n");
    const module = [
      "services.nixfleet-agent = {",
      "  enable = true;",
      `  hostId = ${nix(hostId)};`,
      `  url = ${nix(url)};`,
      `  repoUrl = ${nix(repo)};`,
      `  enrollCodeFile = ${nix(CODE_FILE)};`,
      ...(insecure ? ["  allowInsecure = true; # this dashboard is plain http: a loopback demo only"] : []),
      "};",
    ].join("\n");
    const file = `${hostId}.code`;
    const agent = [
      `(umask 077; printf '%s\\n' ${sh(code)} > ${sh(file)})`,
      ["nixfleet agent", `--url ${sh(url)}`, `--host-id ${sh(hostId)}`,
        `--token-file ${STATE}/token`, `--enroll-code-file ${sh(file)}`,
        `--repo-dir ${STATE}/config`, `--repo-url ${sh(repo)}`, `--state-dir ${STATE}`,
        ...(insecure ? ["--allow-insecure"] : [])].join(" \\\n  "),
    ].join("\n");
    return [
      { name: "code", title: `On ${hostId}, as root: store the code outside the Nix store (it works once, until ${until})`, text: store },
      { name: "nixos", title: `NixOS: in ${hostId}'s configuration, with nixfleet.nixosModules.agent imported; then nixos-rebuild switch`, text: module },
      { name: "agent", title: "Without Nix: the agent command line", text: agent },
    ];
  }

  function node(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    e.append(...children);
    return e;
  }

  async function copy(button, pre) {
    try {
      await navigator.clipboard.writeText(pre.textContent);
    } catch {
      // No clipboard permission: select the text, so one keystroke copies it.
      getSelection().selectAllChildren(pre);
      button.textContent = "Selected: press Ctrl+C";
      return;
    }
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  }

  function render(box, detail) {
    const parts = blocks(detail).map(({ name, title, text }) => {
      const pre = node("pre", { class: "snippet", "data-snippet": name }, text);
      const button = node("button", { type: "button", class: "copy", "data-copy": name }, "Copy");
      button.addEventListener("click", () => copy(button, pre));
      return node("div", { class: "snippet-block" }, node("p", { class: "muted" }, title, " ", button), pre);
    });
    box.replaceChildren(...parts);
    box.hidden = false;
  }

  document.addEventListener("nixfleet:host-added", (ev) => {
    const box = document.getElementById("enroll-snippet");
    if (!box) return;
    const res = ev.detail;
    render(box, {
      hostId: res.host.id,
      code: res.enroll_code,
      until: new Date(res.enroll_expires_at * 1000).toLocaleTimeString(),
      url: location.origin,
      repoUrl: box.dataset.repoUrl || "",
      insecure: location.protocol === "http:",
    });
  });
  // A new attempt hides the last host's snippet (and its code) first.
  document.addEventListener("submit", (ev) => {
    const box = document.getElementById("enroll-snippet");
    if (box && ev.target.id === "add-host-form") { box.hidden = true; box.replaceChildren(); }
  }, true);
})();

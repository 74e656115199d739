# ExecStartPre for a private config repo: clone it with the credential configured in the
# clone's own .git/config (or add it to an existing clone). The agent then finds the clone,
# and every later fetch reads the credential from there, also in the transient units that
# run pulls, which do not inherit the agent's environment.
{
  lib,
  pkgs,
  cfg,
  gitConfig,
}:
let
  q = lib.escapeShellArg;
  repo = "${cfg.stateDir}/config";
  cloneFlags = lib.concatMapStringsSep " " (c: "-c ${q "${c.key}=${c.value}"}") gitConfig;
  setAll = lib.concatMapStringsSep "\n" (c: "  git -C ${q repo} config ${q c.key} ${q c.value}") gitConfig;
in
pkgs.writeShellScript "nixfleet-agent-clone" ''
  set -eu
  if [ -e ${q repo}/.git ]; then
  ${setAll}
  else
    git clone --branch ${q cfg.branch} ${cloneFlags} -- ${q cfg.repoUrl} ${q repo}
  fi
''

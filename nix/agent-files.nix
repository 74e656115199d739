# What every agent module (NixOS, nix-darwin, home-manager) derives from its options in the
# same way: the private repo's git configuration, the clone step that installs it, and the
# agent's TOML config file. `extra` holds the platform's own keys (os, macos_tool, …).
{
  lib,
  pkgs,
  cfg,
  extra,
}:
let
  cred = cfg.repoCredential;
  knownHosts =
    if cred.knownHosts == "" then null else pkgs.writeText "nixfleet-agent-known-hosts" cred.knownHosts;
in
rec {
  gitConfig = import ./git-credential.nix {
    inherit lib cred;
    keyPath = cred.sshKeyFile;
    tokenPath = cred.tokenFile;
    knownHostsFile = knownHosts;
  };
  clone = import ./agent-clone.nix { inherit lib pkgs cfg gitConfig; };
  configFile = (pkgs.formats.toml { }).generate "nixfleet-agent.toml" (
    import ./agent-config.nix { inherit lib cfg extra; }
  );
}

# NixOS module: services.nixfleet-agent, a root systemd service on every fleet host.
# Imported with lib.modules.importApply, which passes packageFor (pkgs -> the package).
{ packageFor }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.nixfleet-agent;
  nflib = import ../lib.nix { inherit lib; };
  stateDir = "/var/lib/nixfleet-agent";
  cred = cfg.repoCredential;
  knownHosts = if cred.knownHosts == "" then null else pkgs.writeText "nixfleet-agent-known-hosts" cred.knownHosts;
  gitConfig = import ../git-credential.nix {
    inherit lib cred;
    keyPath = cred.sshKeyFile;
    tokenPath = cred.tokenFile;
    knownHostsFile = knownHosts;
  };
  clone = import ../agent-clone.nix { inherit lib pkgs cfg gitConfig; };
in
{
  options.services.nixfleet-agent = import ../agent-options.nix {
    inherit lib stateDir;
    package = packageFor pkgs;
    hostName = config.networking.hostName;
    defaultTokenFile = "${stateDir}/token";
  };

  config = lib.mkIf cfg.enable {
    assertions = import ../agent-checks.nix { inherit lib cfg; };

    systemd.services.nixfleet-agent = {
      description = "NixFleet agent";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      # A switch must not stop the agent that runs it: the build lives in a transient unit
      # (systemd-run) and survives a restart, but the agent would drop its connection and
      # report the result late. The new agent takes over at the next restart (the
      # dashboard's "restart agent" command re-executes the same binary; a
      # `systemctl restart nixfleet-agent` or a reboot starts the new one).
      restartIfChanged = false;
      path = [
        pkgs.git
        pkgs.openssh
        config.nix.package
        config.system.build.nixos-rebuild
        pkgs.systemd
      ];
      environment.HOME = stateDir;
      serviceConfig = {
        ExecStartPre = lib.optional (gitConfig != [ ]) clone;
        ExecStart = nflib.escapeSystemdArgs (
          import ../agent-args.nix {
            inherit lib cfg;
            extra = [ "--os" "nixos" "--systemd-run" "yes" ];
            enrollCodeFile = if cfg.enrollCodeFile == null then null else { raw = "%d/enroll-code"; };
            clientKeyFile = if cfg.clientKeyFile == null then null else { raw = "%d/client-key"; };
          }
        );
        # Read by systemd as root and handed over under %d: the agent never needs to reach
        # the secret's own path. The token file is not one: the agent writes it.
        LoadCredential =
          lib.optional (cfg.enrollCodeFile != null) "enroll-code:${cfg.enrollCodeFile}"
          ++ lib.optional (cfg.clientKeyFile != null) "client-key:${cfg.clientKeyFile}";
        StateDirectory = "nixfleet-agent";
        StateDirectoryMode = "0700";
        UMask = "0077";
        Restart = "always";
        RestartSec = 5;
        # The agent stays root: nixos-rebuild switch needs it, and the build runs in a
        # transient unit that does not inherit this sandbox. What the agent process itself
        # never needs is still taken away.
        NoNewPrivileges = true;
        PrivateTmp = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        # AF_UNIX: systemd-run talks to PID 1 over D-Bus; AF_NETLINK: address lookups.
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
      };
    };
  };
}

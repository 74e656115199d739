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
  inherit (import ../agent-files.nix {
    inherit lib pkgs cfg;
    extra = {
      os = "nixos";
      systemd_run = "yes";
    };
  }) gitConfig clone configFile;
in
{
  options.services.nixfleet-agent = import ../agent-options.nix {
    inherit lib stateDir;
    package = packageFor pkgs;
    hostName = config.networking.hostName;
    defaultTokenFile = "${stateDir}/token";
  };

  config = lib.mkIf cfg.enable {
    services.nixfleet-agent.configFile = configFile;
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
        # The secrets' paths are flags (they beat the file): systemd expands %d only here.
        ExecStart = nflib.escapeSystemdArgs (
          [ "${cfg.package}/bin/nixfleet" "agent" "--config" configFile ]
          ++ lib.optionals (cfg.enrollCodeFile != null) [ "--enroll-code-file" { raw = "%d/enroll-code"; } ]
          ++ lib.optionals (cfg.clientKeyFile != null) [ "--client-key" { raw = "%d/client-key"; } ]
          ++ cfg.extraArgs
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
        # The agent stays root: nixos-rebuild switch needs it (and systemd-run asks PID 1
        # as root). Not set, on purpose: ProtectHome (a token file may live under /root),
        # CapabilityBoundingSet (root reading secrets owned by others needs DAC overrides).
        # Every command runs in a transient unit (--systemd-run yes): nixos-rebuild, git
        # pull and host tests are outside this sandbox, so the agent process can be held
        # to what it does itself: talk to the dashboard and PID 1, clone, read status.
        NoNewPrivileges = true;
        PrivateTmp = true;
        PrivateDevices = true;
        # Read-only /usr, /boot and /etc; the state directory and the token file's
        # directory (the agent writes a rotated token there) stay writable.
        ProtectSystem = "full";
        ReadWritePaths = [ "-${dirOf cfg.tokenFile}" ];
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        RestrictNamespaces = true;
        MemoryDenyWriteExecute = true;
        SystemCallFilter = [ "@system-service" ];
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

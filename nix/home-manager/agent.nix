# home-manager module: services.nixfleet-agent for one user; the agent switches that user's
# home-manager configuration. A systemd user service on Linux, a launchd agent on macOS.
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
  home = config.home.homeDirectory;
  stateDir = "${home}/.local/state/nixfleet-agent";
  isDarwin = pkgs.stdenv.hostPlatform.isDarwin;
  # The agent's "macos" executor is the one that runs `home-manager switch`; on Linux it is
  # used for the same reason (the host's own OS is not managed by this agent).
  inherit (import ../agent-files.nix {
    inherit lib pkgs cfg;
    extra = {
      os = "macos";
      macos_tool = "home-manager";
      enroll_code_file = cfg.enrollCodeFile;
      client_key = cfg.clientKeyFile;
    };
  }) gitConfig clone configFile;
  args = [ "${cfg.package}/bin/nixfleet" "agent" "--config" "${configFile}" ] ++ cfg.extraArgs;
  path = lib.concatStringsSep ":" [
    "${home}/.nix-profile/bin"
    "/etc/profiles/per-user/${config.home.username}/bin"
    "/run/current-system/sw/bin"
    "/nix/var/nix/profiles/default/bin"
    "/usr/local/bin"
    "/usr/bin"
    "/bin"
  ];
in
{
  options.services.nixfleet-agent = import ../agent-options.nix {
    inherit lib stateDir;
    package = packageFor pkgs;
    # home-manager has no host name of its own: hostId must be set.
    hostName = null;
    defaultTokenFile = "${stateDir}/token";
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        services.nixfleet-agent.configFile = configFile;
        assertions = import ../agent-checks.nix { inherit lib cfg; };
      }

      (lib.mkIf (!isDarwin) {
        systemd.user.services.nixfleet-agent = {
          Unit = {
            Description = "NixFleet agent (home-manager switch for ${config.home.username})";
            After = [ "network-online.target" ];
            # Like the NixOS agent: the switch this agent runs must not restart it.
            X-RestartIfChanged = false;
          };
          Service = {
            ExecStartPre = lib.optional (gitConfig != [ ]) "${clone}";
            ExecStart = nflib.escapeSystemdArgs args;
            Environment = [ "PATH=${path}" ];
            Restart = "always";
            RestartSec = 5;
            # Stopping the agent must not kill the detached runner (its own session, but
            # still in this unit's cgroup): the new agent re-attaches through the journal.
            KillMode = "process";
            UMask = "0077";
          };
          Install.WantedBy = [ "default.target" ];
        };
      })

      (lib.mkIf isDarwin {
        launchd.agents.nixfleet-agent = {
          enable = true;
          config = {
            ProgramArguments =
              if gitConfig == [ ] then args else [ "/bin/sh" "-c" "${clone} && exec \"$0\" \"$@\"" ] ++ args;
            KeepAlive = true;
            RunAtLoad = true;
            ProcessType = "Interactive";
            StandardOutPath = "${home}/Library/Logs/nixfleet-agent.log";
            StandardErrorPath = "${home}/Library/Logs/nixfleet-agent.log";
            EnvironmentVariables = {
              PATH = path;
              HOME = home;
            };
          };
        };
      })
    ]
  );
}

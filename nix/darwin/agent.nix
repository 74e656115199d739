# nix-darwin module: services.nixfleet-agent as a launchd daemon.
# Imported with lib.modules.importApply, which passes packageFor (pkgs -> the package).
{ packageFor }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.nixfleet-agent;
  asUser = cfg.user != null;
  home = if asUser then config.users.users.${cfg.user}.home else "/var/root";
  stateDir = if asUser then "${home}/.local/state/nixfleet-agent" else "/var/lib/nixfleet-agent";
  logFile = if asUser then "${home}/Library/Logs/nixfleet-agent.log" else "/var/log/nixfleet-agent.log";
  inherit (import ../agent-files.nix {
    inherit lib pkgs cfg;
    extra = {
      os = "macos";
      macos_tool = cfg.tool;
      enroll_code_file = cfg.enrollCodeFile;
      client_key = cfg.clientKeyFile;
    };
  }) gitConfig clone configFile;
  args = [ "${cfg.package}/bin/nixfleet" "agent" "--config" "${configFile}" ] ++ cfg.extraArgs;
  q = lib.escapeShellArg;
in
{
  options.services.nixfleet-agent =
    import ../agent-options.nix {
      inherit lib stateDir;
      package = packageFor pkgs;
      hostName = config.networking.hostName;
      defaultTokenFile = "${stateDir}/token";
    }
    // {
      tool = mkOption {
        type = types.enum [ "darwin-rebuild" "home-manager" ];
        default = "darwin-rebuild";
        description = ''
          What a switch runs: `darwin-rebuild switch --flake <repo>#<hostId>` (as root), or
          `home-manager switch --flake <repo>#<hostId>` as [](#opt-services.nixfleet-agent.user).
        '';
      };
      user = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "alice";
        description = ''
          Run the agent as this user rather than root, so a home-manager switch activates
          this user's profile. Required with `tool = "home-manager"`; state and log then live
          in the user's home.
        '';
      };
    };

  config = lib.mkIf cfg.enable {
    services.nixfleet-agent.configFile = configFile;
    assertions = import ../agent-checks.nix { inherit lib cfg; } ++ [
      {
        assertion = cfg.tool != "home-manager" || asUser;
        message = "services.nixfleet-agent.tool = \"home-manager\" needs services.nixfleet-agent.user: as root, the switch would activate root's profile.";
      }
    ];

    # launchd does not create directories: make the state directory before the daemon starts.
    system.activationScripts.postActivation.text = ''
      mkdir -p ${q stateDir}
      chmod 0700 ${q stateDir}
    ''
    + lib.optionalString asUser ''
      chown ${q cfg.user} ${q stateDir}
    '';

    launchd.daemons.nixfleet-agent.serviceConfig =
      {
        # A private repo is cloned with its credential first (see agent-clone.nix).
        ProgramArguments =
          if gitConfig == [ ] then args else [ "/bin/sh" "-c" "${clone} && exec \"$0\" \"$@\"" ] ++ args;
        KeepAlive = true;
        RunAtLoad = true;
        # The build runs in its own session, so launchd reloading this job does not kill it.
        ProcessType = "Interactive";
        # Both streams: launchd drops what has no path.
        StandardOutPath = logFile;
        StandardErrorPath = logFile;
        EnvironmentVariables = {
          PATH = lib.concatStringsSep ":" (
            lib.optionals asUser [ "${home}/.nix-profile/bin" "/etc/profiles/per-user/${cfg.user}/bin" ]
            ++ [ "/run/current-system/sw/bin" "/nix/var/nix/profiles/default/bin" "/usr/bin" "/bin" "/usr/sbin" "/sbin" ]
          );
          HOME = home;
        } // lib.optionalAttrs asUser { USER = cfg.user; };
      }
      // lib.optionalAttrs asUser { UserName = cfg.user; };
  };
}

# nix-darwin module: services.nixfleet-agent as a launchd daemon.
{ config, lib, pkgs, ... }:
with lib;
let
  agent = config.services.nixfleet-agent;
  stateDir = "/var/lib/nixfleet-agent";
in
{
  options.services.nixfleet-agent = (import ./agent-options.nix {
    inherit lib;
    defaultHostId = config.networking.hostName;
  }) // {
    tool = mkOption {
      type = types.enum [ "darwin-rebuild" "home-manager" ];
      default = "darwin-rebuild";
    };
  };

  config = mkIf agent.enable {
    launchd.daemons.nixfleet-agent = {
      # The build runs in its own session, so launchd reloading this job does not kill it.
      serviceConfig = {
        ProgramArguments = import ./agent-args.nix {
          inherit lib stateDir;
          cfg = agent;
          extra = [ "--os" "macos" "--macos-tool" agent.tool ];
        };
        KeepAlive = true;
        RunAtLoad = true;
        StandardErrorPath = "/var/log/nixfleet-agent.log";
        EnvironmentVariables.PATH = "/run/current-system/sw/bin:/usr/bin:/bin";
      };
    };
  };
}

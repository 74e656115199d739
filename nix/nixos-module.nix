# NixOS module: services.nixfleet-agent (on every host) and services.nixfleet (the dashboard).
{ config, lib, pkgs, ... }:
with lib;
let
  agent = config.services.nixfleet-agent;
  dash = config.services.nixfleet;
  stateDir = "/var/lib/nixfleet-agent";
in
{
  options.services.nixfleet-agent = import ./agent-options.nix {
    inherit lib;
    defaultHostId = config.networking.hostName;
  };

  options.services.nixfleet = {
    enable = mkEnableOption "the NixFleet dashboard";
    package = mkOption { type = types.package; };
    listenAddress = mkOption { type = types.str; default = "127.0.0.1"; };
    port = mkOption { type = types.port; default = 8000; };
    configRepo = mkOption { type = types.str; default = ""; };
    adminPasswordHashFile = mkOption { type = types.path; };
    agentTokenHashSecretFile = mkOption { type = types.path; };
    sessionSecretsFile = mkOption {
      type = types.path;
      description = "Session signing secrets, one a line; the first signs, all verify.";
    };
    totpSecretFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "TOTP secret from `nixfleet admin totp-setup`; when set, login requires a code.";
    };
    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      description = "Further NIXFLEET_* settings.";
    };
  };

  config = mkMerge [
    (mkIf agent.enable {
      systemd.services.nixfleet-agent = {
        description = "NixFleet agent";
        wantedBy = [ "multi-user.target" ];
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        # Builds run in transient units (systemd-run), so restarting the agent during a
        # switch does not kill the switch; the journal lets the new agent re-attach.
        path = [ pkgs.git config.nix.package config.system.build.nixos-rebuild pkgs.systemd ];
        serviceConfig = {
          ExecStart = escapeShellArgs (import ./agent-args.nix {
            inherit lib stateDir;
            cfg = agent;
            extra = [ "--os" "nixos" "--systemd-run" "yes" ];
          });
          StateDirectory = "nixfleet-agent";
          StateDirectoryMode = "0700";
          Restart = "always";
          RestartSec = 5;
        };
      };
    })
    (mkIf dash.enable {
      systemd.services.nixfleet = {
        description = "NixFleet dashboard";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        path = [ pkgs.git ];
        environment = {
          NIXFLEET_DATA_DIR = "/var/lib/nixfleet";
          NIXFLEET_HOST = dash.listenAddress;
          NIXFLEET_PORT = toString dash.port;
          NIXFLEET_CONFIG_REPO = dash.configRepo;
          NIXFLEET_ADMIN_PASSWORD_HASH_FILE = "%d/admin-hash";
          NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE = "%d/agent-secret";
          NIXFLEET_SESSION_SECRETS_FILE = "%d/session-secrets";
        } // optionalAttrs (dash.totpSecretFile != null) {
          NIXFLEET_TOTP_SECRET_FILE = "%d/totp-secret";
          NIXFLEET_REQUIRE_TOTP = "true";
        } // dash.environment;
        serviceConfig = {
          ExecStart = "${dash.package}/bin/nixfleet serve";
          LoadCredential = [
            "admin-hash:${toString dash.adminPasswordHashFile}"
            "agent-secret:${toString dash.agentTokenHashSecretFile}"
            "session-secrets:${toString dash.sessionSecretsFile}"
          ] ++ optional (dash.totpSecretFile != null) "totp-secret:${toString dash.totpSecretFile}";
          DynamicUser = true;
          StateDirectory = "nixfleet";
          Restart = "always";
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
        };
      };
    })
  ];
}

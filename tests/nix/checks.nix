# The module evaluations `nix flake check` runs (pure Nix, no Python): each name is true when
# the check holds. The pytest suite runs the same evaluations and also feeds the results to
# the real nixfleet parsers.
{ lib }:
let
  eval = platform: config: import ./eval.nix { inherit lib platform config; };
  evalDarwin = platform: config: import ./eval.nix { inherit lib platform config; darwin = true; };
  agent = extra: {
    services.nixfleet-agent = {
      enable = true;
      url = "https://fleet.example.org";
      repoUrl = "https://git.example.org/c.git";
    } // extra;
  };
  dashboard = extra: {
    services.nixfleet = {
      enable = true;
      adminPasswordHashFile = "/run/secrets/admin";
      agentTokenHashSecretFile = "/run/secrets/agent";
      sessionSecretsFile = "/run/secrets/sessions";
    } // extra;
  };
  fails = v: !(builtins.tryEval (builtins.deepSeq v v)).success;
  nixosAgent = (eval "nixos-agent" (agent { })).systemd.nixfleet-agent;
  nixosAgentConfig = (eval "nixos-agent" (agent { })).agentConfig;
  dash = eval "nixos-dashboard" (dashboard { openFirewall = true; });
  hm = eval "home-manager-agent" (agent { hostId = "alice"; });
  hmDarwin = evalDarwin "home-manager-agent" (agent { hostId = "alice"; });
  darwin = eval "darwin-agent" (agent { });
in
{
  agent-minimal-has-no-assertion = (eval "nixos-agent" (agent { })).assertions == [ ];
  agent-not-restarted-by-switch = nixosAgent.restartIfChanged == false;
  agent-runs-builds-via-systemd-run = nixosAgentConfig.systemd_run == "yes";
  agent-sends-no-unset-metadata = !(nixosAgentConfig ? location);
  agent-host-id-canonical =
    (import ./eval.nix {
      inherit lib;
      platform = "nixos-agent";
      config = agent { };
      hostName = "Web01";
    }).agentConfig.host_id == "web01";
  agent-bad-color-refused = fails (eval "nixos-agent" (agent { themeColor = "red"; })).systemd;
  agent-store-secret-refused = fails (eval "nixos-agent" (agent { tokenFile = ./eval.nix; })).systemd;
  agent-plain-http-asserted = (eval "nixos-agent" (agent { url = "http://x"; })).assertions != [ ];
  dashboard-minimal-has-no-assertion = dash.assertions == [ ];
  dashboard-firewall-opened = dash.firewall == [ 8000 ];
  dashboard-no-capabilities = dash.systemd.nixfleet.serviceConfig.CapabilityBoundingSet == [ "" ];
  dashboard-secret-setting-asserted =
    (eval "nixos-dashboard" (dashboard { settings.alert_urls = "json://x"; })).assertions != [ ];
  darwin-logs-both-streams =
    let
      job = darwin.launchdDaemons.nixfleet-agent.serviceConfig;
    in
    job.StandardOutPath == job.StandardErrorPath;
  darwin-home-manager-needs-user =
    (eval "darwin-agent" (agent { tool = "home-manager"; })).assertions != [ ];
  home-manager-linux-user-service = hm.userServices ? nixfleet-agent;
  home-manager-darwin-launchd-agent = hmDarwin.launchdAgents.nixfleet-agent.enable;
}

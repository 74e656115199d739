# Assertions shared by the agent modules: what a type alone cannot say.
{ lib, cfg }:
let
  kinds = [ "pull" "switch" "pull-switch" "test" ];
  plain = lib.hasPrefix "http://" cfg.url || lib.hasPrefix "ws://" cfg.url;
  cred = cfg.repoCredential;
in
[
  {
    assertion = !plain || cfg.allowInsecure;
    message = "services.nixfleet-agent.url is plain ${cfg.url}: the token would travel in clear text; use https:// or set services.nixfleet-agent.allowInsecure.";
  }
  {
    assertion = cfg.backoff.cap >= cfg.backoff.floor;
    message = "services.nixfleet-agent.backoff.cap must not be below services.nixfleet-agent.backoff.floor.";
  }
  {
    assertion = cred.sshKeyFile == null || cred.tokenFile == null;
    message = "services.nixfleet-agent.repoCredential: set sshKeyFile or tokenFile, not both.";
  }
  {
    assertion = cfg.clientKeyFile == null || cfg.clientCertFile != null;
    message = "services.nixfleet-agent.clientKeyFile needs services.nixfleet-agent.clientCertFile.";
  }
]
++ lib.mapAttrsToList (kind: t: {
  assertion = lib.elem kind kinds && t.warn < t.kill;
  message = "services.nixfleet-agent.timeouts.${kind}: the kind must be one of ${lib.concatStringsSep ", " kinds} and warn must be below kill.";
}) cfg.timeouts

# The agent's command line, built from the module options (an argv list, never a shell
# string). Metadata left null is not passed, so the dashboard's value stays (one owner each).
{
  lib,
  cfg,
  extra,
  enrollCodeFile ? cfg.enrollCodeFile,
  clientKeyFile ? cfg.clientKeyFile,
}:
let
  # { raw = "%d/…"; } is a systemd specifier the NixOS module means literally (kept as is).
  str = value: if value ? raw then value else toString value;
  opt = flag: value: lib.optionals (value != null) [ flag (str value) ];
in
[
  "${cfg.package}/bin/nixfleet"
  "agent"
  "--url"
  cfg.url
  "--host-id"
  cfg.hostId
  "--token-file"
  cfg.tokenFile
  "--repo-dir"
  "${cfg.stateDir}/config"
  "--repo-url"
  cfg.repoUrl
  "--branch"
  cfg.branch
  "--state-dir"
  cfg.stateDir
  "--min-tls"
  cfg.minTls
  "--command-rate"
  cfg.commandRate
  "--backoff-floor"
  (toString cfg.backoff.floor)
  "--backoff-cap"
  (toString cfg.backoff.cap)
  "--breaker-threshold"
  (toString cfg.breaker.threshold)
  "--probe-interval"
  (toString cfg.breaker.probeInterval)
  "--log-level"
  cfg.logLevel
]
++ opt "--location" cfg.location
++ opt "--device-type" cfg.deviceType
++ opt "--theme-color" cfg.themeColor
++ opt "--ca-file" cfg.caFile
++ lib.concatMap (pin: [ "--pin" pin ]) cfg.pins
++ lib.concatLists (
  lib.mapAttrsToList (kind: t: [
    "--timeout"
    "${kind}=${toString t.warn}:${toString t.kill}"
  ]) cfg.timeouts
)
++ opt "--client-cert" cfg.clientCertFile
++ opt "--client-key" clientKeyFile
++ opt "--enroll-code-file" enrollCodeFile
++ lib.optional cfg.allowInsecure "--allow-insecure"
++ extra
++ cfg.extraArgs

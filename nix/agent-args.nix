# The agent's command line, built from the module options (argv, never a shell string).
{ lib, cfg, stateDir, extra }:
[
  "${cfg.package}/bin/nixfleet" "agent"
  "--url" cfg.url
  "--host-id" cfg.hostId
  "--token-file" (toString cfg.tokenFile)
  "--repo-dir" "${stateDir}/config"
  "--repo-url" cfg.repoUrl
  "--branch" cfg.branch
  "--state-dir" stateDir
  "--location" cfg.location
  "--device-type" cfg.deviceType
  "--theme-color" cfg.themeColor
  "--min-tls" cfg.minTls
  "--command-rate" cfg.commandRate
]
++ lib.optionals (cfg.caFile != null) [ "--ca-file" (toString cfg.caFile) ]
++ lib.concatMap (pin: [ "--pin" pin ]) cfg.pins
++ extra
++ lib.optionals (cfg.clientCertFile != null) [ "--client-cert" (toString cfg.clientCertFile) ]
++ lib.optionals (cfg.clientKeyFile != null) [ "--client-key" (toString cfg.clientKeyFile) ]
++ lib.optionals (cfg.enrollCodeFile != null) [ "--enroll-code-file" (toString cfg.enrollCodeFile) ]
++ lib.optional cfg.allowInsecure "--allow-insecure"
++ cfg.extraArgs

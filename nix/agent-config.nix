# The agent's TOML configuration (`nixfleet agent --config FILE`, keys as in agent/options.py)
# built from the module options. Metadata left null is left out, so the dashboard's value
# stays (one owner per field). No secret is in it, only the paths of secrets.
{
  lib,
  cfg,
  extra,
}:
lib.filterAttrs (_: v: v != null && v != [ ] && v != { }) (
  {
    url = cfg.url;
    host_id = cfg.hostId;
    token_file = cfg.tokenFile;
    repo_dir = "${cfg.stateDir}/config";
    repo_url = cfg.repoUrl;
    branch = cfg.branch;
    state_dir = cfg.stateDir;
    allow_insecure = cfg.allowInsecure;
    ca_file = if cfg.caFile == null then null else toString cfg.caFile;
    pin = cfg.pins;
    min_tls = cfg.minTls;
    client_cert = if cfg.clientCertFile == null then null else toString cfg.clientCertFile;
    command_rate = cfg.commandRate;
    backoff_floor = cfg.backoff.floor;
    backoff_cap = cfg.backoff.cap;
    breaker_threshold = cfg.breaker.threshold;
    probe_interval = cfg.breaker.probeInterval;
    location = cfg.location;
    device_type = cfg.deviceType;
    theme_color = cfg.themeColor;
    label = cfg.labels;
    timeout = lib.mapAttrs (_: t: "${toString t.warn}:${toString t.kill}") cfg.timeouts;
    log_level = cfg.logLevel;
  }
  // extra
)

# Options of services.nixfleet-agent, shared by the NixOS, nix-darwin and home-manager modules.
{
  lib,
  package,
  hostName,
  stateDir,
  defaultTokenFile,
}:
let
  inherit (lib) mkOption mkEnableOption types literalExpression;
  nflib = import ./lib.nix { inherit lib; };
  timeout = types.submodule {
    options = {
      warn = mkOption {
        type = types.ints.positive;
        description = "Seconds after which the dashboard shows the command as slow.";
      };
      kill = mkOption {
        type = types.ints.positive;
        description = "Seconds after which the runner stops the command (SIGTERM, then SIGKILL).";
      };
    };
  };
in
{
  enable = mkEnableOption "the NixFleet agent, which connects this host to a NixFleet dashboard";

  package = mkOption {
    type = types.package;
    default = package;
    defaultText = literalExpression "nixfleet.packages.\${pkgs.stdenv.hostPlatform.system}.default";
    description = "The nixfleet package; its `nixfleet agent` command is run.";
  };

  url = mkOption {
    type = types.strMatching "(https|wss|http|ws)://[^[:space:]]+";
    example = "https://fleet.example.org";
    description = ''
      The dashboard's URL. Plain `http://` and `ws://` are refused unless
      [](#opt-services.nixfleet-agent.allowInsecure) is set.
    '';
  };

  hostId = mkOption {
    type = nflib.hostId;
    apply = nflib.canonicalHostId;
    example = "web-01";
    description = ''
      This host's id in the fleet, and the name of its output in the config repo's flake
      (`nixosConfigurations.<hostId>`). Lowered and trimmed as the dashboard does, so a host
      named `Web01` is `web01`.
    '';
  }
  // lib.optionalAttrs (hostName != null) {
    default = hostName;
    defaultText = literalExpression "config.networking.hostName";
  };

  tokenFile = mkOption {
    type = nflib.secretPath;
    default = defaultTokenFile;
    example = "/run/agenix/nixfleet-agent-token";
    description = ''
      File holding this host's agent token. When it is empty and
      [](#opt-services.nixfleet-agent.enrollCodeFile) is set, the agent enrolls and writes
      the token here (mode 0600); a token rotated from the dashboard is written here too, so
      the path must be writable by the agent. Never a store path (the store is world-readable).
    '';
  };

  enrollCodeFile = mkOption {
    type = types.nullOr nflib.secretPath;
    default = null;
    example = "/run/agenix/nixfleet-enroll-code";
    description = ''
      File with the one-time enrollment code from the dashboard's "Add a host" (or
      `nixfleet admin host add`). Used once, when the token file is empty.
    '';
  };

  repoUrl = mkOption {
    type = types.str;
    example = "git@git.example.org:me/nix-config.git";
    description = "The fleet's config repo (a flake). The agent keeps its own clone of it.";
  };

  branch = mkOption {
    type = nflib.branch;
    default = "main";
    description = "The branch of the config repo the agent pulls and switches to.";
  };

  repoCredential = {
    sshKeyFile = mkOption {
      type = types.nullOr nflib.secretPath;
      default = null;
      example = "/run/agenix/nixfleet-deploy-key";
      description = ''
        SSH private key (a read-only deploy key) git uses for a private config repo
        reached over SSH. Configured in the agent's clone, so the pulls that run in
        their own transient units use it too.
      '';
    };
    knownHosts = mkOption {
      type = types.lines;
      default = "";
      example = "git.example.org ssh-ed25519 AAAAC3Nza...";
      description = ''
        `known_hosts` lines for the config repo's SSH server. When set, only these keys are
        accepted; when empty, ssh's usual files decide.
      '';
    };
    tokenFile = mkOption {
      type = types.nullOr nflib.secretPath;
      default = null;
      example = "/run/agenix/nixfleet-repo-token";
      description = ''
        File with an access token git sends as the password for a private config repo
        reached over HTTPS (a git credential helper reads it; the token is not copied).
      '';
    };
    username = mkOption {
      type = types.str;
      default = "git";
      example = "x-access-token";
      description = "User name sent with [](#opt-services.nixfleet-agent.repoCredential.tokenFile).";
    };
  };

  location = mkOption {
    type = types.nullOr (types.strMatching ".{1,200}");
    default = null;
    example = "rack 3, Berlin";
    description = ''
      Where the host is, shown in the dashboard. When null, the dashboard keeps whatever an
      operator entered there; when set, this value wins at every connection.
    '';
  };

  deviceType = mkOption {
    type = types.nullOr (types.strMatching ".{1,40}");
    default = null;
    example = "server";
    description = ''
      Kind of machine (server, laptop, …) shown in the dashboard. Null leaves the
      dashboard's value alone; set, it wins.
    '';
  };

  themeColor = mkOption {
    type = types.nullOr nflib.color;
    default = null;
    example = "#3b82f6";
    description = ''
      Colour of the host's row in the dashboard. Null leaves the dashboard's value alone;
      set, it wins.
    '';
  };

  labels = mkOption {
    type = types.attrsOf (types.strMatching "[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?");
    default = { };
    example = {
      role = "web";
      site = "ams1";
    };
    description = ''
      Labels of this host (at most 16; keys of lower-case letters, digits, `.`, `-`, `_`),
      used in the dashboard to search, group and select hosts and by rollouts' `group=`.
      A key set here wins over the dashboard's label of that key; the dashboard's other
      labels stay.
    '';
  };

  allowInsecure = mkOption {
    type = types.bool;
    default = false;
    description = ''
      Accept a plain `http://` or `ws://` dashboard URL. The token and every command then
      travel in clear text: for loopback demos only.
    '';
  };

  caFile = mkOption {
    type = types.nullOr types.path;
    default = null;
    description = "PEM bundle of the CA(s) that may sign the dashboard's certificate; when set, the system roots are not trusted.";
  };

  pins = mkOption {
    type = types.listOf (types.strMatching "sha256/[A-Za-z0-9+/]{43}=");
    default = [ ];
    example = [ "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" ];
    description = ''
      SPKI pins of the dashboard's key (`nixfleet admin spki-pin`). A server matching none is
      refused before the token is sent. Add the backup key's pin before a rotation.
    '';
  };

  minTls = mkOption {
    type = types.enum [
      "1.2"
      "1.3"
    ];
    default = "1.2";
    description = "Lowest TLS version accepted from the dashboard.";
  };

  clientCertFile = mkOption {
    type = types.nullOr types.path;
    default = null;
    description = "Client certificate (PEM) presented to a dashboard that binds this host to one (mTLS).";
  };

  clientKeyFile = mkOption {
    type = types.nullOr nflib.secretPath;
    default = null;
    description = "Private key of [](#opt-services.nixfleet-agent.clientCertFile), when not in the same file. A secret: never a store path.";
  };

  commandRate = mkOption {
    type = types.strMatching "[1-9][0-9]*/[0-9]+(\\.[0-9]+)?";
    default = "6/600";
    description = "At most N commands started per SECONDS (`N/SECONDS`); more are answered `rejected: rate limited`.";
  };

  timeouts = mkOption {
    type = types.attrsOf timeout;
    default = { };
    example = literalExpression ''{ switch = { warn = 900; kill = 3600; }; }'';
    description = "Per command kind (pull, switch, pull-switch, test): when it is shown as slow, and when it is stopped.";
  };

  backoff = {
    floor = mkOption {
      type = types.numbers.between 0.01 3600;
      default = 1.0;
      description = "Shortest wait (seconds) between connection attempts.";
    };
    cap = mkOption {
      type = types.numbers.between 0.1 86400;
      default = 300.0;
      description = "Longest wait (seconds) between connection attempts.";
    };
  };

  breaker = {
    threshold = mkOption {
      type = types.ints.positive;
      default = 5;
      description = "Failed connection attempts in a row that open the circuit breaker.";
    };
    probeInterval = mkOption {
      type = types.numbers.between 0.1 86400;
      default = 60.0;
      description = "Seconds between probes while the breaker is open.";
    };
  };

  logLevel = mkOption {
    type = types.enum [
      "debug"
      "info"
      "warning"
      "error"
    ];
    default = "info";
    description = "Agent log level.";
  };

  stateDir = mkOption {
    type = types.str;
    default = stateDir;
    readOnly = true;
    description = "Where the agent keeps its journal, rate-limit state and its clone of the config repo (`config/`).";
  };

  configFile = mkOption {
    type = types.path;
    readOnly = true;
    description = "The TOML file the agent is started with (`nixfleet agent --config`), generated from these options; for inspection.";
  };

  extraArgs = mkOption {
    type = types.listOf types.str;
    default = [ ];
    example = [
      "--system-dir"
      "/run"
    ];
    description = "Further `nixfleet agent` arguments, passed last.";
  };
}

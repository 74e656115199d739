# NixOS module: services.nixfleet, the dashboard, as a sandboxed DynamicUser service.
# Imported with lib.modules.importApply, which passes packageFor (pkgs -> the package).
{ packageFor }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption mkEnableOption types literalExpression;
  cfg = config.services.nixfleet;
  nflib = import ../lib.nix { inherit lib; };
  stateDir = "/var/lib/nixfleet";
  cred = cfg.configRepoCredential;

  # Each secret: option name -> (credential name, setting it feeds through NIXFLEET_<X>_FILE).
  secrets = {
    adminPasswordHashFile = { name = "admin-password-hash"; setting = "admin_password_hash"; };
    agentTokenHashSecretFile = { name = "agent-token-hash-secret"; setting = "agent_token_hash_secret"; };
    sessionSecretsFile = { name = "session-secrets"; setting = "session_secrets"; };
    totpSecretFile = { name = "totp-secret"; setting = "totp_secret"; };
    metricsTokenFile = { name = "metrics-token"; setting = "metrics_token"; };
    alertUrlsFile = { name = "alert-urls"; setting = "alert_urls"; };
    sharedAgentTokenHashFile = { name = "shared-agent-token-hash"; setting = "shared_agent_token_hash"; };
    tlsKeyFile = { name = "tls-key"; setting = "tls_key"; };
  };
  secretSettings = lib.mapAttrsToList (_: s: s.setting) secrets;
  setSecrets = lib.filterAttrs (opt: _: cfg.${opt} != null) secrets;

  secretOption =
    description: required:
    mkOption {
      type = if required then nflib.secretPath else types.nullOr nflib.secretPath;
      example = "/run/agenix/nixfleet-secret";
      description = description + " Handed to the service as a systemd credential; never a store path.";
    }
    // lib.optionalAttrs (!required) { default = null; };

  knownHosts = if cred.knownHosts == "" then null else pkgs.writeText "nixfleet-known-hosts" cred.knownHosts;
  gitConfig = import ../git-credential.nix {
    inherit lib cred;
    keyPath = "%d/config-repo-ssh-key";
    tokenPath = "%d/config-repo-token";
    knownHostsFile = knownHosts;
  };
  gitEnv = lib.optionalAttrs (gitConfig != [ ]) (
    {
      GIT_CONFIG_COUNT = toString (lib.length gitConfig);
    }
    // lib.listToAttrs (
      lib.concatLists (
        lib.imap0 (i: c: [
          (lib.nameValuePair "GIT_CONFIG_KEY_${toString i}" c.key)
          (lib.nameValuePair "GIT_CONFIG_VALUE_${toString i}" c.value)
        ]) gitConfig
      )
    )
  );

  toEnv =
    v:
    if builtins.isBool v then lib.boolToString v
    else if builtins.isList v then lib.concatStringsSep "," (map toString v)
    else toString v;
  settingsEnv = lib.mapAttrs' (k: v: lib.nameValuePair "NIXFLEET_${lib.toUpper k}" (toEnv v)) (
    lib.filterAttrs (_: v: v != null) cfg.settings
  );
  secretEnv = lib.mapAttrs' (
    _: s: lib.nameValuePair "NIXFLEET_${lib.toUpper s.setting}_FILE" "%d/${s.name}"
  ) (lib.filterAttrs (opt: s: s.setting != "tls_key") setSecrets);
  privilegedPort = cfg.port < 1024;

  db = cfg.database;
  # createLocally: the local server's socket, as the service's own user (peer
  # authentication: no password exists, so none can leak).
  localName = "nixfleet";
  localUrl = "postgresql:///${localName}?host=/run/postgresql";
  databaseUrl = if db.createLocally then localUrl else db.url;
  # scheme://user:password@… : a password in a URL option would land in the store.
  urlHasPassword = db.url != null && builtins.match "[^:]+://[^/@:]*:[^/@]*@.*" db.url != null;
in
{
  options.services.nixfleet = {
    enable = mkEnableOption "the NixFleet dashboard";

    package = mkOption {
      type = types.package;
      default = packageFor pkgs;
      defaultText = literalExpression "nixfleet.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = "The nixfleet package; its `nixfleet serve` command is run.";
    };

    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address the dashboard listens on. Keep the loopback default behind a reverse proxy.";
    };

    port = mkOption {
      type = types.port;
      default = 8000;
      description = "TCP port the dashboard listens on (below 1024 grants the service CAP_NET_BIND_SERVICE).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open [](#opt-services.nixfleet.port) in the firewall, for agents and browsers that reach the dashboard directly.";
    };

    openFilesLimit = mkOption {
      type = types.ints.positive;
      default = 65536;
      description = "`LimitNOFILE` of the service: every agent holds one WebSocket, every browser one event stream.";
    };

    configRepo = mkOption {
      type = types.str;
      default = "";
      example = "git@git.example.org:me/nix-config.git";
      description = "The fleet's config repo; the head of [](#opt-services.nixfleet.configBranch) is the target commit every host is compared with. Empty: no target.";
    };

    configBranch = mkOption {
      type = nflib.branch;
      default = "main";
      description = "Branch of the config repo whose head is the fleet's target.";
    };

    configRepoCredential = {
      sshKeyFile = secretOption "SSH private key `git ls-remote` uses for a private config repo over SSH." false;
      knownHosts = mkOption {
        type = types.lines;
        default = "";
        example = "git.example.org ssh-ed25519 AAAAC3Nza...";
        description = "`known_hosts` lines for the config repo's SSH server. The service has no home directory, so set this when using an SSH key.";
      };
      tokenFile = secretOption "Access token `git ls-remote` sends as the password for a private config repo over HTTPS." false;
      username = mkOption {
        type = types.str;
        default = "git";
        description = "User name sent with [](#opt-services.nixfleet.configRepoCredential.tokenFile).";
      };
    };

    adminPasswordHashFile = secretOption "argon2id hash of the admin password (`nixfleet admin hash-password`)." true;
    agentTokenHashSecretFile = secretOption "Key (at least 32 characters) of the HMAC agent tokens are stored under (`nixfleet admin gen-secret`)." true;
    sessionSecretsFile = secretOption "Session signing secrets, one a line: the first signs, all verify." true;
    totpSecretFile = secretOption "TOTP secret from `nixfleet admin totp-setup`; when set, login requires a code." false;
    metricsTokenFile = secretOption "Bearer token that may read `/metrics`." false;
    alertUrlsFile = secretOption "Apprise URLs alerts are sent to, comma- or space-separated." false;
    sharedAgentTokenHashFile = secretOption "Hash of the old shared agent token, while migrating to per-host tokens." false;

    tlsCertFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Serve HTTPS with this certificate chain (PEM). Public: may be a store path.";
    };
    tlsKeyFile = secretOption "Private key of [](#opt-services.nixfleet.tlsCertFile)." false;
    clientCaFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Ask agents for client certificates issued by this CA (mTLS).";
    };

    database = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgresql://nixfleet@db.example.org/nixfleet?sslmode=verify-full";
        description = ''
          Database URL (`NIXFLEET_DATABASE_URL`): `postgresql://…` for several replicas on one
          PostgreSQL, `sqlite:///…` for a file elsewhere. Null: SQLite in the state directory.
          No password here (it would land in the world-readable store): use
          [](#opt-services.nixfleet.database.urlFile), a client certificate, or
          [](#opt-services.nixfleet.database.createLocally).
        '';
      };
      urlFile = secretOption "A file holding the database URL, for a URL with a password (`postgresql://nixfleet:…@db.example.org/nixfleet`)." false;
      createLocally = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Run PostgreSQL on this machine (`services.postgresql`) with a `${localName}` database
          owned by a `${localName}` role, and connect over its Unix socket with peer
          authentication as the service's own user: no password anywhere. Replicas on other
          machines need a server they reach over the network instead.
        '';
      };
    };

    settings = mkOption {
      type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.int types.float types.bool (types.listOf types.str) ]));
      default = { };
      example = literalExpression ''
        {
          trusted_proxies = [ "127.0.0.1" ];
          rate_limit_login = "10/minute";
          metrics_allow = [ "10.0.0.0/8" ];
        }
      '';
      description = ''
        Further settings, by their lower-case name in the README's settings table; each is
        passed as `NIXFLEET_<NAME>` (lists joined with commas). Secrets are refused here:
        use their `*File` options.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.intersectLists (lib.attrNames cfg.settings) secretSettings == [ ];
        message = "services.nixfleet.settings: ${lib.concatStringsSep ", " (lib.intersectLists (lib.attrNames cfg.settings) secretSettings)} is a secret and would land in the world-readable store; use its services.nixfleet.*File option.";
      }
      {
        assertion = (cfg.tlsCertFile == null) == (cfg.tlsKeyFile == null);
        message = "services.nixfleet.tlsCertFile and services.nixfleet.tlsKeyFile go together.";
      }
      {
        assertion = !(cfg.settings ? database_url);
        message = "services.nixfleet.settings: set the database with services.nixfleet.database.url (or urlFile, or createLocally), not settings.database_url.";
      }
      {
        assertion = !urlHasPassword;
        message = "services.nixfleet.database.url holds a password, which would land in the world-readable store; use services.nixfleet.database.urlFile.";
      }
      {
        assertion = lib.length (lib.filter (x: x) [ (db.url != null) (db.urlFile != null) db.createLocally ]) <= 1;
        message = "services.nixfleet.database: set one of url, urlFile and createLocally.";
      }
      {
        assertion = cred.sshKeyFile == null || cred.tokenFile == null;
        message = "services.nixfleet.configRepoCredential: set sshKeyFile or tokenFile, not both.";
      }
    ];

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;

    services.postgresql = lib.mkIf db.createLocally {
      enable = true;
      ensureDatabases = [ localName ];
      ensureUsers = [
        {
          name = localName;
          ensureDBOwnership = true;
        }
      ];
    };

    systemd.services.nixfleet = {
      description = "NixFleet dashboard";
      wantedBy = [ "multi-user.target" ];
      # postgresql.target: the server is up and its ensure* roles and databases exist.
      after = [ "network-online.target" ] ++ lib.optional db.createLocally "postgresql.target";
      wants = [ "network-online.target" ];
      requires = lib.optional db.createLocally "postgresql.target";
      path = [ pkgs.git pkgs.openssh ];
      environment =
        {
          HOME = stateDir;
          NIXFLEET_DATA_DIR = stateDir;
          NIXFLEET_HOST = cfg.listenAddress;
          NIXFLEET_PORT = toString cfg.port;
          NIXFLEET_CONFIG_REPO = cfg.configRepo;
          NIXFLEET_CONFIG_BRANCH = cfg.configBranch;
        }
        // lib.optionalAttrs (cfg.totpSecretFile != null) { NIXFLEET_REQUIRE_TOTP = "true"; }
        // lib.optionalAttrs (cfg.tlsCertFile != null) {
          NIXFLEET_TLS_CERT = toString cfg.tlsCertFile;
          NIXFLEET_TLS_KEY = "%d/tls-key";
        }
        // lib.optionalAttrs (cfg.clientCaFile != null) { NIXFLEET_CLIENT_CA = toString cfg.clientCaFile; }
        // lib.optionalAttrs (databaseUrl != null) { NIXFLEET_DATABASE_URL = databaseUrl; }
        // lib.optionalAttrs (db.urlFile != null) { NIXFLEET_DATABASE_URL_FILE = "%d/database-url"; }
        // settingsEnv
        // secretEnv
        // gitEnv;

      serviceConfig = {
        ExecStart = "${cfg.package}/bin/nixfleet serve";
        LoadCredential =
          lib.mapAttrsToList (opt: s: "${s.name}:${cfg.${opt}}") setSecrets
          ++ lib.optional (cred.sshKeyFile != null) "config-repo-ssh-key:${cred.sshKeyFile}"
          ++ lib.optional (cred.tokenFile != null) "config-repo-token:${cred.tokenFile}"
          ++ lib.optional (db.urlFile != null) "database-url:${db.urlFile}";
        DynamicUser = true;
        StateDirectory = "nixfleet";
        StateDirectoryMode = "0700";
        WorkingDirectory = stateDir;
        UMask = "0077";
        Restart = "on-failure";
        RestartSec = 5;
        LimitNOFILE = cfg.openFilesLimit;

        # Sandbox, to `systemd-analyze security nixfleet` "OK". Relaxations, each needed:
        CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = lib.optional privilegedPort "CAP_NET_BIND_SERVICE";
        NoNewPrivileges = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = !privilegedPort;
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        # AF_UNIX: journald and a local PostgreSQL socket; AF_INET*: browsers, agents, the
        # config repo and alert webhooks (so no IPAddressDeny: those can be anywhere).
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # CPython has no JIT here and cffi (argon2) is compiled ahead: no W+X pages needed.
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        PrivateMounts = true;
        DevicePolicy = "closed";
        SystemCallArchitectures = "native";
        # @system-service covers Python, uvicorn and git/ssh children; nothing privileged.
        SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
        SystemCallErrorNumber = "EPERM";
      }
      # The dynamic user's name is the role peer authentication maps it to.
      // lib.optionalAttrs db.createLocally { User = localName; };
    };
  };
}

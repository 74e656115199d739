# Evaluate one of the project's modules with nixpkgs' real module system (lib.evalModules),
# next to a small declaration of the NixOS / nix-darwin / home-manager options it sets.
# Returns the failed assertions and the parts of the configuration the module produces.
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --arg lib 'import …/nixpkgs-lib/lib' --argstr platform nixos-agent --arg config '{ … }'
{
  lib,
  platform,
  config ? { },
  hostName ? "web-01",
  darwin ? false,
}:
let
  inherit (lib) mkOption types;
  loose = mkOption {
    type = types.lazyAttrsOf types.anything;
    default = { };
  };
  list = mkOption {
    type = types.listOf types.anything;
    default = [ ];
  };
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgs = {
    git = fakePackage "git";
    openssh = fakePackage "openssh";
    systemd = fakePackage "systemd";
    nixfleet = fakePackage "nixfleet";
    # nix/nixos-module.nix builds the package with callPackage: the build itself is not evaluated.
    callPackage = _file: _args: fakePackage "nixfleet";
    writeText = name: text: builtins.toFile name text;
    # nixpkgs' formats.toml writes the value as JSON and converts it with remarshal's
    # json2toml; here the JSON is kept and the tests convert it (tests/nix/moduleeval.py).
    formats.toml = _: {
      type = types.attrsOf types.anything;
      # A derivation-like value that also keeps what it was made of, so checks.nix can read
      # it without reading a file (which pure evaluation, as in `nix flake check`, forbids).
      generate = name: value: {
        type = "derivation";
        inherit name value;
        outPath = builtins.toFile "${name}.json" (builtins.toJSON value);
      };
    };
    writeShellScript = name: text: builtins.toFile name "#!/bin/sh\n${text}";
    stdenv.hostPlatform = {
      system = if darwin then "aarch64-darwin" else "x86_64-linux";
      isDarwin = darwin;
    };
  };
  packageFor = p: p.nixfleet;
  module = file: lib.modules.importApply file { inherit packageFor; };

  # What each platform declares of the options the modules set, nothing more.
  common = {
    options.assertions = list;
    options.warnings = list;
  };
  nixos = {
    options = {
      networking.hostName = mkOption { type = types.str; };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      nix.package = mkOption { type = types.anything; };
      system.build = loose;
      # As nixpkgs' services.postgresql declares them (the parts a module may set).
      services.postgresql = {
        enable = mkOption { type = types.bool; default = false; };
        ensureDatabases = mkOption { type = types.listOf types.str; default = [ ]; };
        ensureUsers = mkOption {
          type = types.listOf (
            types.submodule {
              options.name = mkOption { type = types.str; };
              options.ensureDBOwnership = mkOption { type = types.bool; default = false; };
            }
          );
          default = [ ];
        };
      };
      systemd.services = mkOption {
        type = types.attrsOf (
          types.submodule {
            options = {
              description = mkOption { type = types.str; };
              wantedBy = list;
              after = list;
              wants = list;
              requires = list;
              path = list;
              restartIfChanged = mkOption {
                type = types.bool;
                default = true;
              };
              environment = mkOption {
                type = types.attrsOf types.str;
                default = { };
              };
              serviceConfig = loose;
            };
          }
        );
        default = { };
      };
    };
    config = {
      networking.hostName = lib.mkDefault hostName;
      nix.package = fakePackage "nix";
      system.build.nixos-rebuild = fakePackage "nixos-rebuild";
    };
  };
  nix-darwin = {
    options = {
      networking.hostName = mkOption { type = types.str; };
      users.users = mkOption {
        type = types.attrsOf (types.submodule { options.home = mkOption { type = types.str; }; });
        default = { };
      };
      system.activationScripts = mkOption {
        type = types.attrsOf (types.submodule { options.text = mkOption { type = types.lines; default = ""; }; });
        default = { };
      };
      launchd.daemons = mkOption {
        type = types.attrsOf (types.submodule { options.serviceConfig = loose; });
        default = { };
      };
    };
    config.networking.hostName = lib.mkDefault hostName;
  };
  home-manager = {
    options = {
      home.username = mkOption { type = types.str; };
      home.homeDirectory = mkOption { type = types.str; };
      systemd.user.services = mkOption {
        type = types.attrsOf (types.attrsOf (types.attrsOf types.anything));
        default = { };
      };
      launchd.agents = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.enable = mkOption { type = types.bool; default = false; };
            options.config = loose;
          }
        );
        default = { };
      };
    };
    config.home = {
      username = lib.mkDefault "alice";
      homeDirectory = lib.mkDefault (if darwin then "/Users/alice" else "/home/alice");
    };
  };

  setups = {
    nixos-agent = [ nixos (module ../../nix/nixos/agent.nix) ];
    nixos-dashboard = [ nixos (module ../../nix/nixos/dashboard.nix) ];
    nixos-compat = [ nixos ../../nix/nixos-module.nix ];
    darwin-agent = [ nix-darwin (module ../../nix/darwin/agent.nix) ];
    home-manager-agent = [ home-manager (module ../../nix/home-manager/agent.nix) ];
  };

  evaluated = lib.evalModules {
    modules = [ common config ] ++ setups.${platform};
    specialArgs.pkgs = pkgs;
  };
  cfg = evaluated.config;
  failed = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  pick = path: lib.attrByPath path null cfg;
in
{
  assertions = failed;
  systemd = pick [ "systemd" "services" ];
  userServices = pick [ "systemd" "user" "services" ];
  firewall = pick [ "networking" "firewall" "allowedTCPPorts" ];
  postgresql = pick [ "services" "postgresql" ];
  launchdDaemons = pick [ "launchd" "daemons" ];
  launchdAgents = pick [ "launchd" "agents" ];
  activation = pick [ "system" "activationScripts" ];
  # The agent's generated configuration (JSON here, TOML from nixpkgs' formats.toml).
  agentConfig =
    if cfg ? services.nixfleet-agent && cfg.services.nixfleet-agent.enable then
      cfg.services.nixfleet-agent.configFile.value
    else
      null;
  agentPackage = if cfg ? services.nixfleet-agent then cfg.services.nixfleet-agent.package.outPath else null;
  # The option set, for the description check (every option documented).
  options = lib.optionAttrSetToDocList evaluated.options;
}

# Options shared by the NixOS and nix-darwin agent modules.
{ lib, defaultHostId }:
with lib;
{
  enable = mkEnableOption "the NixFleet agent";
  package = mkOption {
    type = types.package;
    description = "The nixfleet package (provides the `nixfleet` command).";
  };
  url = mkOption {
    type = types.str;
    example = "https://fleet.example.org";
    description = "Dashboard URL. Plain http:// is refused unless allowInsecure is set.";
  };
  hostId = mkOption {
    type = types.strMatching "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
    default = defaultHostId;
    description = "This host's id in the fleet (lowercase RFC 1123 label).";
  };
  tokenFile = mkOption {
    type = types.path;
    description = ''
      File with this host's agent token (agenix/sops path; never in the store). With
      enrollCodeFile, or while migrating from the shared token, the agent writes its token
      here (mode 0600), so point it at a writable path such as /var/lib/nixfleet-agent/token.
    '';
  };
  clientCertFile = mkOption {
    type = types.nullOr types.path;
    default = null;
    description = "Client certificate (PEM) for a dashboard that binds this host to it (mTLS).";
  };
  clientKeyFile = mkOption {
    type = types.nullOr types.path;
    default = null;
    description = "Private key of clientCertFile, if not in the same file.";
  };
  enrollCodeFile = mkOption {
    type = types.nullOr types.path;
    default = null;
    description = "One-time enrollment code, exchanged for the token when tokenFile is empty.";
  };
  repoUrl = mkOption {
    type = types.str;
    description = "The fleet's config repo; the agent keeps its own clone.";
  };
  branch = mkOption {
    type = types.str;
    default = "main";
  };
  location = mkOption { type = types.str; default = ""; };
  deviceType = mkOption { type = types.str; default = ""; example = "server"; };
  themeColor = mkOption {
    type = types.strMatching "(#[0-9a-fA-F]{6})?";
    default = "";
    description = "Colour of the host's row in the dashboard.";
  };
  allowInsecure = mkOption { type = types.bool; default = false; };
  caFile = mkOption {
    type = types.nullOr types.path;
    default = null;
    description = "Trust only this CA bundle for the dashboard (no system roots).";
  };
  pins = mkOption {
    type = types.listOf (types.strMatching "sha256/[A-Za-z0-9+/]{43}=");
    default = [ ];
    description = "SPKI pins of the dashboard's key (nixfleet admin spki-pin); add the backup key's before a rotation.";
  };
  minTls = mkOption { type = types.enum [ "1.2" "1.3" ]; default = "1.2"; };
  commandRate = mkOption {
    type = types.strMatching "[0-9]+/[0-9.]+";
    default = "6/600";
    description = "At most N commands started per SECONDS.";
  };
  extraArgs = mkOption {
    type = types.listOf types.str;
    default = [ ];
    example = [ "--timeout" "switch=900:3600" ];
  };
}

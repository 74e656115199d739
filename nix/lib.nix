# Types and helpers the modules share. Each rule mirrors one in the Python code, so a value
# the agent or dashboard would refuse fails evaluation instead, naming the option.
{ lib }:
let
  inherit (lib) types;
  hostIdRule = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
in
rec {
  # core/hostid.py: trim and lowercase, so networking.hostName = "Web01" is host "web01".
  canonicalHostId = s: lib.toLower (lib.strings.trim s);

  hostId =
    types.addCheck types.str (s: builtins.match hostIdRule (canonicalHostId s) != null)
    // {
      name = "nixfleetHostId";
      description = "host id (1-63 of a-z, 0-9 and '-', not starting or ending with '-'; upper case is lowered)";
    };

  # A secret's path as a string outside the store. A path literal (./token) or "${./token}"
  # would copy the secret into the world-readable /nix/store, so both are refused here.
  secretPath =
    types.addCheck types.str (
      s: lib.hasPrefix "/" s && !(lib.hasPrefix "${builtins.storeDir}/" s) && !(lib.hasInfix "\n" s)
    )
    // {
      name = "nixfleetSecretPath";
      description = "absolute path outside the Nix store, as a string (e.g. an agenix or sops-nix secret)";
    };

  # core/protocol.py HostMeta.theme_color.
  color = types.strMatching "#[0-9a-fA-F]{6}" // {
    description = "colour as #rrggbb";
  };

  # core/branch.py, simplified: what git would read as an option or a range is refused.
  branch = types.strMatching "[A-Za-z0-9._/][A-Za-z0-9._/-]{0,199}" // {
    description = "git branch name";
  };

  # systemd expands %-specifiers and $VARIABLES inside ExecStart, even within quotes:
  # double them so every argument reaches the program as written.
  escapeSystemdArg =
    arg:
    if arg ? raw then
      arg.raw
    else
    let
      s = toString arg;
    in
    if builtins.match "[A-Za-z0-9_./:=@+-]+" s != null then
      lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] s
    else
      "\"" + lib.replaceStrings [ "\\" "\"" "%" "$" "\n" ] [ "\\\\" "\\\"" "%%" "$$" "\\n" ] s + "\"";

  escapeSystemdArgs = args: lib.concatMapStringsSep " " escapeSystemdArg args;
}

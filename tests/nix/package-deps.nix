# nix/package.nix evaluated with nixpkgs' python3Packages reduced to a name per attribute (the
# attribute names were checked against nixpkgs' pkgs/development/python-modules): returns the
# dependency names it lists.
{ lib, names }:
let
  fake = name: { pname = name; type = "derivation"; outPath = "/nix/store/x-${name}"; };
  py = lib.genAttrs names fake // {
    uvicorn = fake "uvicorn" // { optional-dependencies.standard = map fake [ "uvloop" "httptools" ]; };
    sqlalchemy = fake "sqlalchemy" // { optional-dependencies.asyncio = [ (fake "greenlet") ]; };
    buildPythonApplication = args: args;
  };
  pkg = import ../../nix/package.nix { inherit lib; python3Packages = py; git = fake "git"; };
in { inherit (pkg) pname version; deps = map (d: d.pname) pkg.dependencies; }

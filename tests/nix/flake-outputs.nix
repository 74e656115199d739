# The flake's outputs, with nixpkgs' real lib standing in for the nixpkgs input (which cannot
# be downloaded here) and a few fake packages.
{ lib }:
let
  fake = name: { type = "derivation"; inherit name; outPath = "/nix/store/x-${name}"; meta.mainProgram = name; };
  pkgsFor = system: {
    callPackage = _: _: fake "nixfleet";
    runCommand = name: _: _: fake name;
    stdenv.hostPlatform.system = system;
  };
  nixpkgs = { inherit lib; legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] pkgsFor; };
  flake = import ../../flake.nix;
  self = flake.outputs { inherit self nixpkgs; };
  sys = "x86_64-linux";
in {
  inputs = flake.inputs.nixpkgs.url;
  top = builtins.attrNames self;
  nixos = builtins.attrNames self.nixosModules;
  darwin = builtins.attrNames self.darwinModules;
  hm = builtins.attrNames self.homeManagerModules;
  packages = builtins.attrNames self.packages.${sys};
  app = self.apps.${sys}.default;
  checks = builtins.attrNames self.checks.${sys};
  modulesCheck = self.checks.${sys}.modules.name;
  overlay = (self.overlays.default (pkgsFor sys) { }).nixfleet.name;
}

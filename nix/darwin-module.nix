# Without flakes: `imports = [ "${nixfleet}/nix/darwin-module.nix" ];` (nix-darwin).
{ lib, ... }:
{
  imports = [
    (lib.modules.importApply ./darwin/agent.nix { packageFor = pkgs: pkgs.callPackage ./package.nix { }; })
  ];
}

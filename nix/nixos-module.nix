# Without flakes: `imports = [ "${nixfleet}/nix/nixos-module.nix" ];` gives both NixOS
# modules (services.nixfleet-agent, services.nixfleet), the package built from this checkout
# with the host's own nixpkgs.
{ lib, ... }:
let
  packageFor = pkgs: pkgs.callPackage ./package.nix { };
in
{
  imports = [
    (lib.modules.importApply ./nixos/agent.nix { inherit packageFor; })
    (lib.modules.importApply ./nixos/dashboard.nix { inherit packageFor; })
  ];
}

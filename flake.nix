{
  description = "NixFleet: fleet manager for NixOS and macOS hosts (dashboard, agent, modules)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The modules default `package` to this flake's build for the host's platform, and to
      # a build against the host's own nixpkgs on a platform the flake does not list.
      packageFor =
        pkgs:
        self.packages.${pkgs.stdenv.hostPlatform.system}.default or (pkgs.callPackage ./nix/package.nix { });
      module = file: lib.modules.importApply file { inherit packageFor; };
    in
    {
      packages = forAllSystems (pkgs: rec {
        nixfleet = pkgs.callPackage ./nix/package.nix { };
        default = nixfleet;
      });

      overlays.default = final: _prev: {
        nixfleet = final.callPackage ./nix/package.nix { };
      };

      nixosModules = {
        agent = module ./nix/nixos/agent.nix;
        dashboard = module ./nix/nixos/dashboard.nix;
        default = {
          imports = [
            self.nixosModules.agent
            self.nixosModules.dashboard
          ];
        };
      };

      darwinModules = {
        agent = module ./nix/darwin/agent.nix;
        default = self.darwinModules.agent;
      };

      homeManagerModules = {
        agent = module ./nix/home-manager/agent.nix;
        default = self.homeManagerModules.agent;
      };

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          meta.description = "The nixfleet command (serve, agent, admin, demo)";
        };
      });

      # `nix flake check`: the package builds, and every module evaluates with the real
      # module system (tests/nix/eval.nix; the same evaluations the pytest suite runs).
      checks = forAllSystems (
        pkgs:
        let
          results = import ./tests/nix/checks.nix { inherit lib; };
          failed = lib.filterAttrs (_: ok: !ok) results;
        in
        {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          modules =
            assert lib.assertMsg (failed == { }) "module checks failed: ${lib.concatStringsSep ", " (lib.attrNames failed)}";
            pkgs.runCommand "nixfleet-module-checks" { } ''
              echo ${lib.escapeShellArg (lib.concatStringsSep "\n" (lib.attrNames results))} > $out
            '';
        }
      );
    };
}

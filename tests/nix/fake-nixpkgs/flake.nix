# nixpkgs as far as this project's flake uses it, for `nix flake show` / `nix flake check
# --no-build` without network (tests/nix/test_flake_cli.py overrides the nixpkgs input with
# this): nixpkgs' real lib, and packages that are real but trivial derivations. The project's
# nix/package.nix is evaluated for real, over stand-ins of the Python packages it names.
{
  inputs.lib.url = "path:./lib-is-given-by-the-test";
  inputs.lib.flake = false;

  outputs =
    { self, lib }:
    let
      l = import "${lib}/lib";
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      # The nixpkgs attributes nix/package.nix names (docs/nix.md).
      pythonNames = [
        "fastapi" "uvicorn" "sqlalchemy" "aiosqlite" "psycopg" "alembic" "pydantic"
        "pydantic-settings" "typer" "jinja2" "argon2-cffi" "websockets" "msgspec" "httpx"
        "python-multipart" "cryptography" "limits" "itsdangerous" "pyotp" "segno"
        "prometheus-client" "apprise" "authlib" "joserfc" "setuptools" "uvloop" "httptools" "greenlet"
      ];
      pkgsFor =
        system:
        let
          drv =
            name: extra:
            derivation ({ inherit name system; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; } // extra)
            // { meta.mainProgram = name; };
          py = l.genAttrs pythonNames (n: drv n { }) // {
            uvicorn = drv "uvicorn" { } // { optional-dependencies.standard = [ (drv "uvloop" { }) (drv "httptools" { }) ]; };
            sqlalchemy = drv "sqlalchemy" { } // { optional-dependencies.asyncio = [ (drv "greenlet" { }) ]; };
            buildPythonApplication =
              a:
              drv "${a.pname}-${a.version}" { inherit (a) src; deps = a.dependencies; }
              // { inherit (a) meta; };
          };
        in
        {
          callPackage = f: args: import f ({ lib = l; python3Packages = py; git = drv "git" { }; } // args);
          runCommand = name: _env: script: drv name { inherit script; };
          stdenv.hostPlatform.system = system;
        };
    in
    {
      lib = l;
      legacyPackages = l.genAttrs systems pkgsFor;
    };
}

# The nixfleet package, built from this checkout over nixpkgs' own Python packages.
# `callPackage ./nix/package.nix { }` works with any nixpkgs that has them (>= 24.05);
# docs/nix.md lists every dependency, its nixpkgs attribute and the version range needed.
{
  lib,
  python3Packages,
  git,
}:
let
  project = (lib.importTOML ../pyproject.toml).project;
  py = python3Packages;
in
py.buildPythonApplication {
  pname = project.name;
  inherit (project) version;
  pyproject = true;

  # Only what the wheel is built from: a change to tests or docs does not rebuild it.
  # (cleanSourceWith rather than lib.fileset, which needs Nix >= 2.14.)
  src = lib.cleanSourceWith {
    name = "nixfleet-source";
    src = ../.;
    filter =
      path: type:
      let
        rel = lib.removePrefix (toString ../. + "/") (toString path);
      in
      lib.elem rel [ "pyproject.toml" "README.md" "src" ]
      || (lib.hasPrefix "src/" rel && builtins.baseNameOf rel != "__pycache__" && !(lib.hasSuffix ".egg-info" rel));
  };

  build-system = [ py.setuptools ];

  # One attribute per entry of pyproject.toml's `dependencies`, same order; the extra
  # (sqlalchemy[asyncio]) is nixpkgs' optional-dependencies.
  # pythonRuntimeDepsCheck fails the build if nixpkgs' version is outside pyproject's range.
  dependencies =
    (with py; [
      fastapi
      uvicorn
      httptools
      uvloop
      sqlalchemy
      aiosqlite
      # psycopg[binary] is pip's prebuilt wheel; nixpkgs' psycopg is built against its libpq
      # (pythonRuntimeDepsCheck compares names and versions, not extras).
      psycopg
      alembic
      pydantic
      pydantic-settings
      typer
      jinja2
      argon2-cffi
      websockets
      msgspec
      httpx
      python-multipart
      cryptography
      limits
      itsdangerous
      pyotp
      segno
      prometheus-client
      apprise
      authlib
      joserfc
    ])
    ++ py.sqlalchemy.optional-dependencies.asyncio;

  # The agent runs git (clone, fetch, rev-parse) and the dashboard `git ls-remote`.
  makeWrapperArgs = [
    "--suffix"
    "PATH"
    ":"
    (lib.makeBinPath [ git ])
  ];

  # The test suite starts real browsers, TLS servers and agent fleets: it runs in CI
  # (scripts/test), not in the sandbox. The import check still catches a missing module.
  doCheck = false;
  pythonImportsCheck = [
    "nixfleet.cli.main"
    "nixfleet.dashboard.app"
    "nixfleet.agent.daemon"
  ];

  meta = {
    inherit (project) description;
    license = lib.licenses.mit;
    mainProgram = "nixfleet";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}

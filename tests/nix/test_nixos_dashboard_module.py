"""The NixOS dashboard module, evaluated by the real module system: its unit's sandbox, and
its environment and credentials read by the dashboard's real settings loader."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.nix.moduleeval import (
    FAKE_STORE,
    EvalError,
    environment,
    evaluate,
    load_credentials,
    needs_lib,
)

from nixfleet.config import load_settings

pytestmark = needs_lib

SECRETS = {
    "adminPasswordHashFile": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    "agentTokenHashSecretFile": "k3J9xQ2mVb7LpW4zR8tN1yF6hD5sG0aE",
    "sessionSecretsFile": "Qm9wL3hKc2R6WnBxTmV3Y0F1dGhHdWFyZA1"
    + "\n"
    + "Zk1sT2hxV3JiY3ZwRGVtSWx5a3NOb3Rh2",
    "totpSecretFile": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    "metricsTokenFile": "Vn3qLr8sTz1wXc5yBm7kJd2hFg4pQa6e",
    "alertUrlsFile": "json://alerts.example.org/hook",
    "sharedAgentTokenHashFile": "0123456789abcdef" * 4,
    "tlsKeyFile": "-----BEGIN PRIVATE KEY-----",
}
REQUIRED = ("adminPasswordHashFile", "agentTokenHashSecretFile", "sessionSecretsFile")


def write_secrets(tmp: Path, names: tuple[str, ...]) -> str:
    lines = []
    for name in names:
        (tmp / name).write_text(SECRETS[name] + "\n")
        lines.append(f'{name} = "{tmp / name}";')
    return " ".join(lines)


def dashboard(config: str) -> dict:
    result = evaluate("nixos-dashboard", config)
    assert result["assertions"] == [], result["assertions"]
    return result


def settings_of(unit: dict, tmp: Path, monkeypatch: pytest.MonkeyPatch):
    """Return the Settings the service would start with, read by the real loader."""
    creds = load_credentials(unit, tmp / "creds")
    for key in list(__import__("os").environ):
        if key.startswith("NIXFLEET_"):
            monkeypatch.delenv(key)
    for key, value in environment(unit["environment"], creds).items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_a_minimal_dashboard_unit_is_sandboxed_and_loads_its_secrets(tmp_path, monkeypatch):
    result = dashboard(
        f"{{ services.nixfleet = {{ enable = true; {write_secrets(tmp_path, REQUIRED)} }}; }}"
    )
    unit = result["systemd"]["nixfleet"]
    cfg = unit["serviceConfig"]
    assert cfg["ExecStart"] == f"{FAKE_STORE}nixfleet/bin/nixfleet serve"
    settings = settings_of(unit, tmp_path, monkeypatch)
    assert settings.admin_password_hash.get_secret_value() == SECRETS["adminPasswordHashFile"]
    assert (
        settings.agent_token_hash_secret.get_secret_value() == SECRETS["agentTokenHashSecretFile"]
    )
    assert [s.get_secret_value() for s in settings.session_secrets] == SECRETS[
        "sessionSecretsFile"
    ].split("\n")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path("/var/lib/nixfleet")
    # No secret in the environment or the unit: only credential names.
    for value in [*unit["environment"].values(), *map(str, cfg.values())]:
        assert SECRETS["agentTokenHashSecretFile"] not in value and "$argon2id" not in value
    assert result["firewall"] == []
    assert cfg["LimitNOFILE"] == 65536
    assert cfg["DynamicUser"] is True and cfg["CapabilityBoundingSet"] == [""]
    for key in (
        "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "PrivateUsers", "ProtectHome",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
        "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute",
    ):  # fmt: skip
        assert cfg[key] is True, key
    assert cfg["ProtectSystem"] == "strict" and cfg["ProtectProc"] == "invisible"
    assert cfg["RestrictAddressFamilies"] == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert cfg["SystemCallFilter"][0] == "@system-service"
    assert "network-online.target" in unit["after"]


def test_every_dashboard_option_reaches_the_dashboard(tmp_path, monkeypatch):
    rules = tmp_path / "rules.toml"
    rules.write_text("")
    config = f"""{{ services.nixfleet = {{
      enable = true; {write_secrets(tmp_path, tuple(SECRETS))}
      listenAddress = "0.0.0.0"; port = 443; openFirewall = true; openFilesLimit = 200000;
      configRepo = "https://git.example.org/me/nix-config.git"; configBranch = "prod";
      tlsCertFile = "/etc/nixfleet/cert.pem"; clientCaFile = "/etc/nixfleet/ca.pem";
      settings = {{
        trusted_proxies = [ "10.0.0.1" "10.0.0.2" ]; rate_limit_login = "10/minute";
        secure_cookies = false; heartbeat_s = 7.5; sse_max_per_session = 3;
        alert_rules_file = "{rules}"; log_format = "json";
      }};
    }}; }}"""
    result = dashboard(config)
    unit = result["systemd"]["nixfleet"]
    s = settings_of(unit, tmp_path, monkeypatch)
    assert (s.host, s.port) == ("0.0.0.0", 443)
    assert (s.config_repo, s.config_branch) == ("https://git.example.org/me/nix-config.git", "prod")
    assert s.tls_cert == Path("/etc/nixfleet/cert.pem")
    assert s.tls_key is not None and s.tls_key.read_text().startswith("-----BEGIN PRIVATE KEY")
    assert s.client_ca == Path("/etc/nixfleet/ca.pem")
    assert s.totp_secret.get_secret_value() == SECRETS["totpSecretFile"] and s.require_totp
    assert s.metrics_token.get_secret_value() == SECRETS["metricsTokenFile"]
    assert s.alert_url_list == ["json://alerts.example.org/hook"]
    assert s.shared_agent_token_hash.get_secret_value() == "0123456789abcdef" * 4
    assert s.trusted_proxies == "10.0.0.1,10.0.0.2"
    assert (s.rate_limit_login, s.secure_cookies, s.heartbeat_s) == ("10/minute", False, 7.5)
    assert (s.sse_max_per_session, s.alert_rules_file, s.log_format) == (3, rules, "json")
    assert result["firewall"] == [443]
    cfg = unit["serviceConfig"]
    assert cfg["LimitNOFILE"] == 200000
    # Port 443 needs exactly one capability, and nothing else changes.
    assert cfg["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert cfg["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert len(cfg["LoadCredential"]) == len(SECRETS)


def test_a_secret_in_settings_is_refused(tmp_path):
    config = f"""{{ services.nixfleet = {{ enable = true; {write_secrets(tmp_path, REQUIRED)}
      settings.metrics_token = "m0000000000000000000000000000000000000"; }}; }}"""
    failed = evaluate("nixos-dashboard", config)["assertions"]
    assert len(failed) == 1 and "metrics_token is a secret" in failed[0]


@pytest.mark.parametrize(
    "setting",
    [
        "adminPasswordHashFile = ./tests/nix/moduleeval.py;",
        'sessionSecretsFile = "${./tests/nix/moduleeval.py}";',
        'tlsKeyFile = "/nix/store/abc-key.pem";',
    ],
)
def test_a_dashboard_secret_in_the_store_fails_evaluation_naming_the_option(tmp_path, setting):
    name = setting.split(" ")[0]
    names = tuple(n for n in REQUIRED if n != name)
    secrets = write_secrets(tmp_path, names)
    config = f"{{ services.nixfleet = {{ enable = true; {secrets} {setting} }}; }}"
    with pytest.raises(EvalError) as err:
        evaluate("nixos-dashboard", config)
    assert f"option `services.nixfleet.{name}" in str(err.value), str(err.value)


def test_a_missing_required_secret_fails_evaluation_naming_it(tmp_path):
    names = ("adminPasswordHashFile", "sessionSecretsFile")
    with pytest.raises(EvalError) as err:
        evaluate(
            "nixos-dashboard",
            f"{{ services.nixfleet = {{ enable = true; {write_secrets(tmp_path, names)} }}; }}",
        )
    assert "services.nixfleet.agentTokenHashSecretFile" in str(err.value)


def test_a_tls_certificate_without_its_key_fires_an_assertion(tmp_path):
    config = f"""{{ services.nixfleet = {{ enable = true; {write_secrets(tmp_path, REQUIRED)}
      tlsCertFile = "/etc/cert.pem"; }}; }}"""
    failed = evaluate("nixos-dashboard", config)["assertions"]
    assert len(failed) == 1 and "tlsKeyFile" in failed[0]


def test_create_locally_sets_up_postgresql_and_connects_over_its_socket_as_the_service(
    tmp_path, monkeypatch
):
    from nixfleet.storage.db import engine_url
    from nixfleet.storage.pgbus import listen_conninfo

    result = dashboard(
        f"""{{ services.nixfleet = {{ enable = true; {write_secrets(tmp_path, REQUIRED)}
          database.createLocally = true; }}; }}"""
    )
    pg = result["postgresql"]
    assert pg["enable"] is True
    assert pg["ensureDatabases"] == ["nixfleet"]
    assert pg["ensureUsers"] == [{"name": "nixfleet", "ensureDBOwnership": True}]
    unit = result["systemd"]["nixfleet"]
    # Started once the server is up and the role and database exist; stopped with it.
    assert "postgresql.target" in unit["after"] and unit["requires"] == ["postgresql.target"]
    # Peer authentication maps the service's user name to the role of the same name.
    assert unit["serviceConfig"]["User"] == "nixfleet"
    assert unit["serviceConfig"]["DynamicUser"] is True
    settings = settings_of(unit, tmp_path, monkeypatch)
    assert engine_url(settings.db_url) == "postgresql+psycopg:///nixfleet?host=%2Frun%2Fpostgresql"
    # The listener connects the same way: the socket directory, no user, no password.
    info = listen_conninfo(settings.db_url, "r1")
    assert "host=/run/postgresql" in info and "dbname=nixfleet" in info
    assert "user=" not in info and "password" not in info


def test_a_database_url_reaches_the_dashboard_and_starts_no_local_server(tmp_path, monkeypatch):
    url = "postgresql://nixfleet@db.example.org/nixfleet?sslmode=verify-full"
    result = dashboard(
        f"""{{ services.nixfleet = {{ enable = true; {write_secrets(tmp_path, REQUIRED)}
          database.url = "{url}"; }}; }}"""
    )
    assert result["postgresql"]["enable"] is False
    unit = result["systemd"]["nixfleet"]
    assert unit["requires"] == [] and "User" not in unit["serviceConfig"]
    assert settings_of(unit, tmp_path, monkeypatch).db_url == url


def test_a_database_url_with_a_password_comes_from_a_file_not_the_store(tmp_path, monkeypatch):
    secret_url = "postgresql://nixfleet:s3cret-pw@db.example.org/nixfleet"
    required = write_secrets(tmp_path, REQUIRED)
    failed = evaluate(
        "nixos-dashboard",
        f"""{{ services.nixfleet = {{ enable = true; {required}
          database.url = "{secret_url}"; }}; }}""",
    )["assertions"]
    assert failed == [
        "services.nixfleet.database.url holds a password, which would land in the "
        "world-readable store; use services.nixfleet.database.urlFile."
    ]
    (tmp_path / "db-url").write_text(secret_url + "\n")
    result = dashboard(
        f"""{{ services.nixfleet = {{ enable = true; {required}
          database.urlFile = "{tmp_path / "db-url"}"; }}; }}"""
    )
    unit = result["systemd"]["nixfleet"]
    assert f"database-url:{tmp_path / 'db-url'}" in unit["serviceConfig"]["LoadCredential"]
    assert "s3cret-pw" not in str(unit)
    assert settings_of(unit, tmp_path, monkeypatch).db_url == secret_url


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            'database.url = "postgresql://db/nixfleet"; database.createLocally = true;',
            "set one of url, urlFile and createLocally",
        ),
        ('settings.database_url = "postgresql://db/x";', "not settings.database_url"),
    ],
)
def test_contradicting_database_options_fire_an_assertion(tmp_path, extra, words):
    config = f"""{{ services.nixfleet = {{ enable = true; {write_secrets(tmp_path, REQUIRED)}
      {extra} }}; }}"""
    failed = evaluate("nixos-dashboard", config)["assertions"]
    assert len(failed) == 1 and words in failed[0], failed

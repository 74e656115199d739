"""The nixfleet command: fails fast on bad settings, reads secrets from files."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def _run(args, env=None, stdin=None, timeout=60):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "nixfleet", *args],
        env={**clean, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_without_an_admin_password_hash_fails_fast_with_one_line(tmp_path):
    res = _run(["serve"], {"NIXFLEET_DATA_DIR": str(tmp_path)})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "NIXFLEET_ADMIN_PASSWORD_HASH" in lines[0]
    assert "Traceback" not in res.stderr


def _hash(password: str) -> str:
    res = _run(["admin", "hash-password"], stdin=password + "\n")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_a_weak_agent_token_secret_is_refused(tmp_path):
    res = _run(
        ["serve"],
        {
            "NIXFLEET_DATA_DIR": str(tmp_path),
            "NIXFLEET_ADMIN_PASSWORD_HASH": _hash("correct horse"),
            "NIXFLEET_AGENT_TOKEN_HASH_SECRET": "short",
        },
    )
    assert res.returncode == 2
    assert "NIXFLEET_AGENT_TOKEN_HASH_SECRET" in res.stderr
    assert "at least 32" in res.stderr


def test_a_malformed_setting_names_the_key(tmp_path):
    res = _run(["db", "upgrade"], {"NIXFLEET_DEMO": "true", "NIXFLEET_PORT": "eighty"})
    assert res.returncode == 2
    assert "NIXFLEET_PORT" in res.stderr


def test_secrets_come_from_files_and_hosts_can_be_added_from_the_cli(tmp_path):
    secret = _run(["admin", "gen-secret"]).stdout.strip()
    assert len(secret) >= 32
    (tmp_path / "secret").write_text(secret + "\n")
    (tmp_path / "pw").write_text(_hash("correct horse") + "\n")
    (tmp_path / "session").write_text(_run(["admin", "gen-secret"]).stdout)
    env = {
        "NIXFLEET_DATA_DIR": str(tmp_path / "data"),
        "NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE": str(tmp_path / "secret"),
        "NIXFLEET_ADMIN_PASSWORD_HASH_FILE": str(tmp_path / "pw"),
        "NIXFLEET_SESSION_SECRETS_FILE": str(tmp_path / "session"),
    }
    added = _run(["admin", "host", "add", "web-01"], env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip().startswith("nfa_")
    again = _run(["admin", "host", "add", "WEB-01"], env)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    bad = _run(["admin", "host", "add", "web_01"], env)
    assert bad.returncode == 2
    assert "not valid" in bad.stderr


def test_a_missing_secret_file_is_named(tmp_path):
    res = _run(
        ["db", "upgrade"],
        {"NIXFLEET_DEMO": "true", "NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE": str(tmp_path / "nope")},
    )
    assert res.returncode == 2
    assert "NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE" in res.stderr


def test_settings_come_from_a_toml_file(tmp_path):
    (tmp_path / "nixfleet.toml").write_text('demo = true\nport = "not a port"\n')
    res = _run(["db", "upgrade"], {"NIXFLEET_CONFIG_FILE": str(tmp_path / "nixfleet.toml")})
    assert res.returncode == 2
    assert "NIXFLEET_PORT" in res.stderr


def _agent(tmp_path, url, *args):
    (tmp_path / "token").write_text("nfa_x")
    return _run(
        [
            "agent",
            "--url",
            url,
            "--host-id",
            "web-01",
            "--token-file",
            str(tmp_path / "token"),
            "--repo-dir",
            str(tmp_path / "repo"),
            "--state-dir",
            str(tmp_path / "state"),
            *args,
        ]
    )


@pytest.mark.parametrize("url", ["http://dash.example", "ws://dash.example"])
def test_the_agent_refuses_a_plain_text_url_without_allow_insecure(tmp_path, url):
    res = _agent(tmp_path, url)
    assert res.returncode == 2
    assert "plain-text" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "switch=10"], "KIND=WARN:KILL"),
        (["--timeout", "switch=20:10"], "0 < WARN < KILL"),
        (["--timeout", "reboot=1:2"], "unknown command"),
        (["--theme-color", "red"], "--theme-color"),
        (["--os", "windows"], "--os must be nixos or macos"),
        (["--branch", "--upload-pack=touch /tmp/pwned"], "is not accepted"),
        (["--branch", "main..evil"], "not accepted"),
        (["--host-id", "bad_host"], "not valid"),
    ],
)
def test_the_agent_refuses_bad_options_with_a_clear_message(tmp_path, args, message):
    res = _agent(tmp_path, "https://dash.example", *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_an_unsafe_config_branch_stops_the_dashboard(tmp_path):
    res = _run(["db", "upgrade"], {"NIXFLEET_DEMO": "true", "NIXFLEET_CONFIG_BRANCH": "-evil"})
    assert res.returncode == 2
    assert "NIXFLEET_CONFIG_BRANCH" in res.stderr


def test_serve_without_session_secrets_fails_fast_naming_them(tmp_path):
    res = _run(
        ["serve"],
        {
            "NIXFLEET_DATA_DIR": str(tmp_path),
            "NIXFLEET_ADMIN_PASSWORD_HASH": _hash("correct horse"),
            "NIXFLEET_AGENT_TOKEN_HASH_SECRET": _run(["admin", "gen-secret"]).stdout.strip(),
        },
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "NIXFLEET_SESSION_SECRETS is missing" in lines[0]


def test_totp_setup_prints_a_secret_a_uri_and_a_qr_code():
    res = _run(["admin", "totp-setup", "--account", "ops"])
    assert res.returncode == 0, res.stderr
    secret = next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("secret:"))
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert f"otpauth://totp/NixFleet:ops?secret={secret}" in res.stdout
    assert res.stdout.count("█") > 100  # the QR code, drawn with block characters
    again = _run(["admin", "totp-setup"]).stdout
    assert secret not in again


def test_admin_check_lists_what_is_weak_and_fails(tmp_path):
    res = _run(["admin", "check"], {"NIXFLEET_SECURE_COOKIES": "false"})
    assert res.returncode == 1
    weak = [line for line in res.stdout.splitlines() if line.startswith("WEAK")]
    assert any("NIXFLEET_SESSION_SECRETS is missing" in line for line in weak)
    assert any("NIXFLEET_ADMIN_PASSWORD_HASH" in line for line in weak)
    assert any("TOTP second factor: off" in line for line in weak)
    assert any("cookies: not Secure" in line for line in weak)


def test_admin_check_passes_a_strong_configuration_without_printing_secrets(tmp_path):
    secret = _run(["admin", "gen-secret"]).stdout.strip()
    session = _run(["admin", "gen-secret"]).stdout.strip()
    totp = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    res = _run(
        ["admin", "check"],
        {
            "NIXFLEET_ADMIN_PASSWORD_HASH": _hash("correct horse"),
            "NIXFLEET_AGENT_TOKEN_HASH_SECRET": secret,
            "NIXFLEET_SESSION_SECRETS": session,
            "NIXFLEET_TOTP_SECRET": totp,
            "NIXFLEET_REQUIRE_TOTP": "true",
        },
    )
    assert res.returncode == 0, res.stdout
    assert "WEAK" not in res.stdout
    assert "OK    TOTP second factor: on (required" in res.stdout
    for value in (secret, session, totp):
        assert value not in res.stdout

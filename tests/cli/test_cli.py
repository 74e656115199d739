"""The nixfleet command: fails fast on bad settings, reads secrets from files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli


def test_serve_without_an_admin_password_hash_fails_fast_with_one_line(tmp_path):
    res = run_cli(["serve"], {"NIXFLEET_DATA_DIR": str(tmp_path)})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "NIXFLEET_ADMIN_PASSWORD_HASH" in lines[0]
    assert "Traceback" not in res.stderr


def _hash(password: str) -> str:
    res = run_cli(["admin", "hash-password"], stdin=password + "\n")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_a_weak_agent_token_secret_is_refused(tmp_path):
    res = run_cli(
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
    res = run_cli(["db", "upgrade"], {"NIXFLEET_DEMO": "true", "NIXFLEET_PORT": "eighty"})
    assert res.returncode == 2
    assert "NIXFLEET_PORT" in res.stderr


def test_secrets_come_from_files_and_hosts_can_be_added_from_the_cli(tmp_path):
    secret = run_cli(["admin", "gen-secret"]).stdout.strip()
    assert len(secret) >= 32
    (tmp_path / "secret").write_text(secret + "\n")
    (tmp_path / "pw").write_text(_hash("correct horse") + "\n")
    (tmp_path / "session").write_text(run_cli(["admin", "gen-secret"]).stdout)
    env = {
        "NIXFLEET_DATA_DIR": str(tmp_path / "data"),
        "NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE": str(tmp_path / "secret"),
        "NIXFLEET_ADMIN_PASSWORD_HASH_FILE": str(tmp_path / "pw"),
        "NIXFLEET_SESSION_SECRETS_FILE": str(tmp_path / "session"),
    }
    added = run_cli(["admin", "host", "add", "web-01"], env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip().startswith("nfe_")
    with_token = run_cli(["admin", "host", "add", "web-02", "--token"], env)
    assert with_token.stdout.strip().startswith("nfa_")
    again = run_cli(["admin", "host", "add", "WEB-01"], env)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    bad = run_cli(["admin", "host", "add", "web_01"], env)
    assert bad.returncode == 2
    assert "not valid" in bad.stderr


def test_a_missing_secret_file_is_named(tmp_path):
    res = run_cli(
        ["db", "upgrade"],
        {"NIXFLEET_DEMO": "true", "NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE": str(tmp_path / "nope")},
    )
    assert res.returncode == 2
    assert "NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE" in res.stderr


def test_settings_come_from_a_toml_file(tmp_path):
    (tmp_path / "nixfleet.toml").write_text('demo = true\nport = "not a port"\n')
    res = run_cli(["db", "upgrade"], {"NIXFLEET_CONFIG_FILE": str(tmp_path / "nixfleet.toml")})
    assert res.returncode == 2
    assert "NIXFLEET_PORT" in res.stderr


def _agent(tmp_path, url, *args):
    (tmp_path / "token").write_text("nfa_x")
    return run_cli(
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


_WITHOUT_TYPER = """
import runpy, sys
sys.argv = ["nixfleet", "agent", "--url", "http://dash.example", "--host-id", "web-01",
            "--token-file", sys.argv[1], "--repo-dir", sys.argv[2], "--state-dir", sys.argv[2]]
try:
    runpy.run_module("nixfleet", run_name="__main__")
except SystemExit as exc:
    print("exit", exc.code, "typer" in sys.modules, "click" in sys.modules)
"""


def test_the_agent_command_runs_without_loading_typer_or_click(tmp_path):
    # The agent runs on every host: the CLI framework would cost it ~15 MiB of memory.
    (tmp_path / "token").write_text("nfa_x")
    res = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TYPER, str(tmp_path / "token"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "plain-text" in res.stderr  # it did parse and check the options
    assert res.stdout.split() == ["exit", "2", "False", "False"]


_SERVE_WITHOUT_TYPER = """
import os, runpy, sys
os.environ["NIXFLEET_DATA_DIR"] = sys.argv[1]
sys.argv = ["nixfleet", "serve", "--port", "0"]
try:
    runpy.run_module("nixfleet", run_name="__main__")
except SystemExit as exc:
    print("exit", exc.code, "typer" in sys.modules)
"""


def test_the_serve_command_reads_its_settings_without_loading_typer(tmp_path):
    # The dashboard runs for months: typer would hold ~1.5 MiB all along.
    res = subprocess.run(
        [sys.executable, "-c", _SERVE_WITHOUT_TYPER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "NIXFLEET_ADMIN_PASSWORD_HASH" in res.stderr  # it parsed and read the settings
    assert res.stdout.split() == ["exit", "2", "False"]


def test_serve_refuses_a_port_that_is_not_a_number_with_its_usage(tmp_path):
    res = run_cli(["serve", "--port", "eighty"], {"NIXFLEET_DATA_DIR": str(tmp_path)})
    assert res.returncode == 2
    assert "--port: invalid int value: 'eighty'" in res.stderr
    assert "usage: nixfleet serve" in res.stderr
    assert "Traceback" not in res.stderr


def test_nixfleet_help_still_lists_serve_with_its_own_flags():
    listed = run_cli(["--help"])
    assert listed.returncode == 0
    assert "Run the dashboard." in listed.stdout
    own = run_cli(["serve", "--help"])
    assert own.returncode == 0
    assert "--tls-cert PATH" in own.stdout and "--client-ca PATH" in own.stdout


def test_the_nixfleet_agent_command_takes_the_same_flags(tmp_path):
    script = Path(sys.executable).parent / "nixfleet-agent"
    (tmp_path / "token").write_text("nfa_x")
    base = ["--host-id", "web-01", "--token-file", str(tmp_path / "token")]
    base += ["--repo-dir", str(tmp_path / "repo"), "--state-dir", str(tmp_path / "state")]
    res = subprocess.run(
        [str(script), "--url", "http://dash.example", *base],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "plain-text" in res.stderr
    bad = subprocess.run(
        [str(script), "--url", "https://dash.example", "--min-tls", "1.1", *base],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--min-tls" in bad.stderr
    assert "before any byte (or the token) is sent" in " ".join(
        subprocess.run([str(script), "--help"], capture_output=True, text=True).stdout.split()
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
        (["--pin", "abc"], "sha256/<44 base64 chars>"),
        (["--pin", "sha1/" + "A" * 43 + "="], "sha256/"),
        (["--min-tls", "1.1"], "--min-tls must be one of 1.2, 1.3"),
        (["--command-rate", "fast"], "N/SECONDS"),
        (["--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
        (["--backoff-floor", "10", "--backoff-cap", "5"], "--backoff-cap"),
    ],
)
def test_the_agent_refuses_bad_options_with_a_clear_message(tmp_path, args, message):
    res = _agent(tmp_path, "https://dash.example", *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_an_unsafe_config_branch_stops_the_dashboard(tmp_path):
    res = run_cli(["db", "upgrade"], {"NIXFLEET_DEMO": "true", "NIXFLEET_CONFIG_BRANCH": "-evil"})
    assert res.returncode == 2
    assert "NIXFLEET_CONFIG_BRANCH" in res.stderr


def test_the_agent_refuses_a_pin_without_tls(tmp_path):
    res = _agent(
        tmp_path, "http://127.0.0.1:1", "--allow-insecure", "--pin", "sha256/" + "A" * 43 + "="
    )
    assert res.returncode == 2
    assert "need an https:// URL" in res.stderr


def test_agent_help_describes_every_transport_option():
    res = run_cli(["agent", "--help"], {"COLUMNS": "200"})
    for flag in (
        "--ca-file",
        "--pin",
        "--min-tls",
        "--allow-insecure",
        "--command-rate",
        "--backoff-floor",
        "--backoff-cap",
        "--breaker-threshold",
        "--probe-interval",
    ):
        assert flag in res.stdout
    text = " ".join(res.stdout.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())
    assert "the system roots are not used" in text
    assert "before any byte (or the token) is sent" in text


def test_spki_pin_prints_the_same_pin_for_a_file_and_a_live_server(tmp_path):
    import ssl
    import threading

    import trustme

    from nixfleet.security.tls import cert_der_from_file, spki_pin

    cert = trustme.CA().issue_cert("127.0.0.1")
    pem = tmp_path / "cert.pem"
    cert.cert_chain_pems[0].write_to_path(str(pem))
    expected = spki_pin(cert_der_from_file(pem.read_bytes()))
    from_file = run_cli(["admin", "spki-pin", str(pem)])
    assert from_file.stdout.strip() == expected

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    import socket

    server = socket.create_server(("127.0.0.1", 0))

    def serve_once():
        conn, _ = server.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except OSError:
            conn.close()

    threading.Thread(target=serve_once, daemon=True).start()
    live = run_cli(["admin", "spki-pin", f"127.0.0.1:{server.getsockname()[1]}"])
    server.close()
    assert live.stdout.strip() == expected
    assert "without verification" in live.stderr


@pytest.mark.parametrize("source", ["no-such-file-or-port", "localhost:notaport"])
def test_spki_pin_refuses_what_is_neither_a_file_nor_host_port(source):
    res = run_cli(["admin", "spki-pin", source])
    assert res.returncode == 2
    assert "Traceback" not in res.stderr


def test_the_shared_token_is_configured_only_as_its_hash(tmp_path):
    from nixfleet.security.tokens import hash_agent_token

    secret = "s" * 40
    env = {"NIXFLEET_DEMO": "true", "NIXFLEET_AGENT_TOKEN_HASH_SECRET": secret}
    shared = "nfa_" + "x" * 43
    res = run_cli(["admin", "hash-agent-token"], env, stdin=shared + "\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == hash_agent_token(secret, shared)
    assert shared not in res.stdout + res.stderr
    for extra, key in [
        ({"NIXFLEET_ALLOW_SHARED_TOKEN": "true"}, "NIXFLEET_ALLOW_SHARED_TOKEN"),
        ({"NIXFLEET_SHARED_AGENT_TOKEN_HASH": shared}, "NIXFLEET_SHARED_AGENT_TOKEN_HASH"),
        ({"NIXFLEET_AUTO_PROVISION": "true"}, "NIXFLEET_AUTO_PROVISION"),
        ({"NIXFLEET_CLIENT_CA": str(tmp_path / "ca.pem")}, "NIXFLEET_CLIENT_CA"),
    ]:
        bad = run_cli(["db", "upgrade"], {**env, "NIXFLEET_DATA_DIR": str(tmp_path), **extra})
        assert bad.returncode == 2, extra
        assert key in bad.stderr
        assert shared not in bad.stderr  # a token pasted by mistake is not echoed back


def test_serve_without_session_secrets_fails_fast_naming_them(tmp_path):
    res = run_cli(
        ["serve"],
        {
            "NIXFLEET_DATA_DIR": str(tmp_path),
            "NIXFLEET_ADMIN_PASSWORD_HASH": _hash("correct horse"),
            "NIXFLEET_AGENT_TOKEN_HASH_SECRET": run_cli(["admin", "gen-secret"]).stdout.strip(),
        },
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "NIXFLEET_SESSION_SECRETS is missing" in lines[0]


def test_totp_setup_prints_a_secret_a_uri_and_a_qr_code():
    res = run_cli(["admin", "totp-setup", "--account", "ops"])
    assert res.returncode == 0, res.stderr
    secret = next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("secret:"))
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert f"otpauth://totp/NixFleet:ops?secret={secret}" in res.stdout
    assert res.stdout.count("█") > 100  # the QR code, drawn with block characters
    again = run_cli(["admin", "totp-setup"]).stdout
    assert secret not in again


def test_admin_check_lists_what_is_weak_and_fails(tmp_path):
    res = run_cli(["admin", "check"], {"NIXFLEET_SECURE_COOKIES": "false"})
    assert res.returncode == 1
    weak = [line for line in res.stdout.splitlines() if line.startswith("WEAK")]
    assert any("NIXFLEET_SESSION_SECRETS is missing" in line for line in weak)
    assert any("NIXFLEET_ADMIN_PASSWORD_HASH" in line for line in weak)
    assert any("TOTP second factor: off" in line for line in weak)
    assert any("cookies: not Secure" in line for line in weak)


def test_admin_check_passes_a_strong_configuration_without_printing_secrets(tmp_path):
    secret = run_cli(["admin", "gen-secret"]).stdout.strip()
    session = run_cli(["admin", "gen-secret"]).stdout.strip()
    totp = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    res = run_cli(
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

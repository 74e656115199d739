"""Per-host agent identity: a token speaks for one host only; enrollment codes work once;
rotation and revocation stop the old token at once and cut the live agent off with a
close code that says why; no token is ever stored or logged in clear."""

from __future__ import annotations

import asyncio
import ssl
import stat
import time

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from conftest import run_cli, wait_for


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://").replace("https://", "wss://") + "/api/agent/ws"


def handshake(base: str, host_id: str, token: str, ssl=None) -> int:
    """Return the HTTP status of an agent handshake (101 when the WebSocket opened)."""

    async def attempt() -> int:
        headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id}
        try:
            ws = await websockets.connect(
                _ws_url(base), additional_headers=headers, open_timeout=5, ssl=ssl
            )
        except InvalidStatus as exc:
            return exc.response.status_code
        except (OSError, websockets.exceptions.WebSocketException):
            return -1  # refused below HTTP: the TLS handshake failed
        await ws.close()
        return 101

    return asyncio.run(attempt())


def dashboard_log(rf) -> str:
    return (rf.fleet.root / "dashboard.log").read_text(errors="replace")


def agent_log(rf, host_id: str) -> str:
    return (rf.host(host_id).root / "agent.log").read_text(errors="replace")


def assert_nowhere_in_clear(rf, secrets: list[str]) -> None:
    """The database file and every log of the fleet hold none of the secrets."""
    files = [rf.fleet.root / "dashboard" / "nixfleet.db", rf.fleet.root / "dashboard.log"]
    files += [h.root / "agent.log" for h in rf.fleet.hosts if (h.root / "agent.log").exists()]
    for path in files:
        raw = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in raw, f"a secret in clear in {path.name}"


INFO = ["--log-level", "info"]
# An agent refused a few times backs off up to its cap (30 s) before it tries a new token.
BACKOFF_CAP_WAIT = 90


@pytest.fixture(scope="module")
def idle(make_module_fleet):
    """One fleet for the tests that change no credential: refusals and reads."""
    return make_module_fleet(hosts=2, agents=False)


def test_a_token_presented_for_another_host_is_refused_and_counted_as_cross_host(idle):
    rf = idle
    atlas = rf.host("atlas").token_file.read_text().strip()
    assert handshake(rf.base, "borealis", atlas) == 401
    assert handshake(rf.base, "atlas", atlas) == 101
    wait_for(lambda: "cross_host" in dashboard_log(rf), 10, "the cross-host refusal logged")
    assert_nowhere_in_clear(rf, [atlas])


def test_enrollment_by_code_end_to_end_and_the_code_works_once(make_fleet):
    rf = make_fleet(hosts=2, agents=False)
    api = rf.api()
    res = api.http.delete("/api/hosts/atlas", headers={"X-CSRF-Token": api.csrf})
    assert res.status_code == 200
    added = api.post("/api/hosts", {"host_id": "atlas"}).json()
    code = added["enroll_code"]
    assert code.startswith("nfe_")
    assert added["host"]["identity_state"] == "none"
    host = rf.host("atlas")
    host.token_file.unlink()
    code_file = host.root / "enroll-code"
    code_file.write_text(code)
    # Debug logging on purpose: even then neither the code nor the token may appear.
    rf.start_agent("atlas", args=["--enroll-code-file", str(code_file), "--log-level", "debug"])
    api.wait_online(["atlas"])
    token = host.token_file.read_text().strip()
    assert token.startswith("nfa_")
    assert stat.S_IMODE(host.token_file.stat().st_mode) == 0o600
    shown = api.host("atlas")
    assert shown["identity_state"] == "active"
    assert shown["token_used_at"] is not None
    assert shown["token_used_from"] == "127.0.0.1"

    again = httpx.post(f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": code})
    assert again.status_code == 401
    assert again.json()["error"] == "unauthorized"
    wrong = httpx.post(
        f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": "nfe_guess"}
    )
    assert wrong.status_code == 401
    other = api.post("/api/hosts/borealis/enroll-code").json()["enroll_code"]
    cross = httpx.post(f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": other})
    assert cross.status_code == 401
    log = dashboard_log(rf)
    assert "used" in log and "wrong" in log
    # The agent kept its token: still online, and its token still opens a connection.
    assert api.host("atlas")["online"]
    assert_nowhere_in_clear(rf, [token, code, other])


def test_an_expired_enrollment_code_is_refused(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_ENROLL_CODE_TTL_S": "1"})
    api = rf.api()
    issued = api.post("/api/hosts/atlas/enroll-code").json()
    wait_for(lambda: time.time() > issued["enroll_expires_at"] + 0.2, 10, "the code to expire")
    res = httpx.post(
        f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": issued["enroll_code"]}
    )
    assert res.status_code == 401
    wait_for(lambda: "expired" in dashboard_log(rf), 10, "the expired refusal logged")


def test_a_malformed_enrollment_gets_a_clear_4xx(idle):
    rf = idle
    for body in [{}, {"host_id": "atlas"}, {"host_id": "Bad_Host", "code": "x"}, {"code": "x"}]:
        res = httpx.post(f"{rf.base}/api/agent/enroll", json=body)
        assert 400 <= res.status_code < 500, body
        assert set(res.json()) == {"error", "detail"}
    res = httpx.post(
        f"{rf.base}/api/agent/enroll",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert res.status_code == 400


def _closed_with(rf, host_id: str, code: int) -> bool:
    return f"connection closed ({code} " in agent_log(rf, host_id)


@pytest.mark.parametrize(
    ("how", "code", "factor"),
    [("api-revoke", 4403, "revoked_token"), ("api-rotate", 4410, "rotated_token")],
)
def test_a_revoked_or_rotated_token_is_refused_and_the_live_agent_cut_off(
    make_fleet, how, code, factor
):
    rf = make_fleet(hosts=2, agents=False)
    for h in ("atlas", "borealis"):
        rf.start_agent(h, args=INFO)
    api = rf.api()
    api.wait_online(["atlas", "borealis"])
    old = rf.host("atlas").token_file.read_text().strip()
    if how == "api-revoke":
        res = api.http.delete("/api/hosts/atlas/agent-token", headers={"X-CSRF-Token": api.csrf})
        assert res.status_code == 200
        new = None
    else:
        new = api.post("/api/hosts/atlas/agent-token").json()["agent_token"]
    wait_for(lambda: _closed_with(rf, "atlas", code), 20, f"the agent closed with {code}")
    wait_for(lambda: not api.host("atlas")["online"], 20, "atlas offline")
    assert handshake(rf.base, "atlas", old) == 401
    wait_for(lambda: factor in dashboard_log(rf), 10, f"{factor} logged")
    assert api.host("borealis")["online"]  # nobody else is touched
    if new is not None:
        # The operator installs the new token; the agent re-reads its file and is back.
        rf.host("atlas").token_file.write_text(new)
        api.wait_online(["atlas"], timeout=BACKOFF_CAP_WAIT)
    assert_nowhere_in_clear(rf, [old, *([new] if new else [])])


def test_revocation_from_the_cli_cuts_off_the_live_agent(make_fleet, backend):
    # The CLI writes the database from another process, off the dashboard's bus: only the
    # credential change counter tells the dashboard to look (SQLite and PostgreSQL).
    rf = make_fleet(hosts=1, agents=False)
    rf.start_agent("atlas", args=INFO)
    api = rf.api()
    api.wait_online(["atlas"])
    res = run_cli(["admin", "host", "revoke", "atlas"], rf.fleet.env)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: _closed_with(rf, "atlas", 4403), 20, "the agent closed with 4403")
    assert api.host("atlas")["identity_state"] == "revoked"


def test_a_rotation_with_overlap_keeps_the_old_token_working_until_cut(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    rf.start_agent("atlas", args=INFO)
    api = rf.api()
    api.wait_online(["atlas"])
    old = rf.host("atlas").token_file.read_text().strip()
    new = api.post("/api/hosts/atlas/agent-token", {"overlap_s": 3600}).json()["agent_token"]
    assert handshake(rf.base, "atlas", new) == 101
    assert handshake(rf.base, "atlas", old) == 101
    # The handshakes above replaced the agent's connection; it comes back with the old one.
    api.wait_online(["atlas"])
    # A rotation without overlap (from the CLI) ends the overlap of the previous token too.
    res = run_cli(["admin", "host", "rotate-token", "atlas", "--overlap", "0"], rf.fleet.env)
    assert res.returncode == 0, res.stderr
    newest = res.stdout.strip()
    wait_for(lambda: _closed_with(rf, "atlas", 4410), 20, "the agent closed with 4410")
    assert handshake(rf.base, "atlas", newest) == 101
    assert handshake(rf.base, "atlas", new) == 401


def test_an_overlap_that_runs_out_cuts_the_agent_still_on_the_old_token(make_fleet):
    # Nothing is written when an overlap ends: the dashboard must watch the clock for it.
    rf = make_fleet(hosts=2, agents=False)
    for h in ("atlas", "borealis"):
        rf.start_agent(h, args=INFO)
    api = rf.api()
    api.wait_online(["atlas", "borealis"])
    old = rf.host("atlas").token_file.read_text().strip()
    res = api.post("/api/hosts/atlas/agent-token", {"overlap_s": 3})
    new = res.json()["agent_token"]
    assert handshake(rf.base, "atlas", old) == 101  # still good during the overlap
    api.wait_online(["atlas"])  # the agent is back on its old token
    wait_for(lambda: _closed_with(rf, "atlas", 4410), 20, "the agent closed with 4410")
    assert handshake(rf.base, "atlas", old) == 401
    assert handshake(rf.base, "atlas", new) == 101
    assert api.host("borealis")["online"]  # nobody else is touched


def _shared_token_env(tmp_path, allow: bool, auto: bool = False) -> tuple[str, dict[str, str]]:
    """Return a shared token and the settings that know it only as a hash."""
    from nixfleet.security.tokens import hash_agent_token, new_agent_token, new_secret

    root = tmp_path / "fleet0"
    root.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    (root / "agent-token-secret").write_text(secret)
    shared = new_agent_token()
    env = {
        "NIXFLEET_SHARED_AGENT_TOKEN_HASH": hash_agent_token(secret, shared),
        "NIXFLEET_ALLOW_SHARED_TOKEN": "true" if allow else "false",
        "NIXFLEET_AUTO_PROVISION": "true" if auto else "false",
    }
    return shared, env


def _forget(api, host_id: str, re_add: bool) -> None:
    res = api.http.delete(f"/api/hosts/{host_id}", headers={"X-CSRF-Token": api.csrf})
    assert res.status_code == 200
    if re_add:
        assert api.post("/api/hosts", {"host_id": host_id}).status_code == 201


def _migrated_token(rf, host_id: str, shared: str) -> str:
    def saved() -> str:
        text = rf.host(host_id).token_file.read_text().strip()
        return text if text != shared else ""

    return str(wait_for(saved, 30, "the agent to save its own token"))


def test_an_agent_with_the_shared_token_migrates_to_its_own(make_fleet, tmp_path):
    shared, env = _shared_token_env(tmp_path, allow=True)
    rf = make_fleet(hosts=2, agents=False, env=env)
    api = rf.api()
    _forget(api, "atlas", re_add=True)  # a host with no token yet
    host = rf.host("atlas")
    host.token_file.write_text(shared)
    rf.start_agent("atlas", args=["--log-level", "debug"])
    own = _migrated_token(rf, "atlas", shared)
    assert own.startswith("nfa_")
    assert stat.S_IMODE(host.token_file.stat().st_mode) == 0o600
    wait_for(lambda: api.host("atlas")["identity_state"] == "active", 20, "atlas migrated")
    assert "DEPRECATED shared agent token" in dashboard_log(rf)
    # From now on the shared token speaks for neither this host nor one with its own token.
    assert handshake(rf.base, "atlas", shared) == 401
    assert handshake(rf.base, "borealis", shared) == 401
    assert handshake(rf.base, "ghost", shared) == 401  # auto-provisioning is off
    api.http.delete("/api/hosts/borealis/agent-token", headers={"X-CSRF-Token": api.csrf})
    assert handshake(rf.base, "borealis", shared) == 401  # revoked is not "no token yet"
    rf.kill_agent("atlas")
    rf.start_agent("atlas", args=INFO)
    api.wait_online(["atlas"])
    assert host.token_file.read_text().strip() == own
    assert_nowhere_in_clear(rf, [shared, own])


def test_auto_provisioning_adds_an_unknown_host_that_has_the_shared_token(make_fleet, tmp_path):
    shared, env = _shared_token_env(tmp_path, allow=True, auto=True)
    rf = make_fleet(hosts=1, agents=False, env=env)
    api = rf.api()
    _forget(api, "atlas", re_add=False)
    rf.host("atlas").token_file.write_text(shared)
    rf.start_agent("atlas")
    _migrated_token(rf, "atlas", shared)
    api.wait_online(["atlas"])
    assert api.host("atlas")["identity_state"] == "active"


def test_the_shared_token_is_refused_when_not_enabled(make_fleet, tmp_path):
    shared, env = _shared_token_env(tmp_path, allow=False)
    rf = make_fleet(hosts=1, agents=False, env=env)
    api = rf.api()
    _forget(api, "atlas", re_add=True)
    assert handshake(rf.base, "atlas", shared) == 401
    wait_for(lambda: "shared_token" in dashboard_log(rf), 10, "the refusal logged")
    assert api.host("atlas")["identity_state"] == "none"


@pytest.fixture
def tls_fleet(make_fleet, tmp_path):
    """Return (fleet, https base, server CA, client CA, make_client_ssl) with mTLS on."""
    trustme = pytest.importorskip("trustme")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    tls = tmp_path / "tls"
    tls.mkdir()
    leaf = server_ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tls / "server.key"))
    leaf.cert_chain_pems[0].write_to_path(str(tls / "server.pem"))
    client_ca.cert_pem.write_to_path(str(tls / "client-ca.pem"))
    server_ca.cert_pem.write_to_path(str(tls / "server-ca.pem"))
    env = {
        "NIXFLEET_TLS_CERT": str(tls / "server.pem"),
        "NIXFLEET_TLS_KEY": str(tls / "server.key"),
        "NIXFLEET_CLIENT_CA": str(tls / "client-ca.pem"),
    }
    rf = make_fleet(hosts=2, agents=False, env=env)

    def client_ssl(cert=None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        server_ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx

    return rf, f"https://127.0.0.1:{rf.port}", server_ca, client_ca, client_ssl, tls


def test_a_host_bound_to_a_client_certificate_needs_that_certificate(tls_fleet):
    rf, base, _, client_ca, client_ssl, tls = tls_fleet
    trustme = pytest.importorskip("trustme")
    right, other = client_ca.issue_cert("atlas"), client_ca.issue_cert("borealis")
    foreign = trustme.CA().issue_cert("atlas")
    right.cert_chain_pems[0].write_to_path(str(tls / "atlas.pem"))
    bound = run_cli(
        ["admin", "host", "bind-cert", "atlas", "--cert-file", str(tls / "atlas.pem")], rf.fleet.env
    )
    assert bound.returncode == 0, bound.stderr
    atlas = rf.host("atlas").token_file.read_text().strip()
    assert handshake(base, "atlas", atlas, ssl=client_ssl(right)) == 101
    assert handshake(base, "atlas", atlas, ssl=client_ssl()) == 403
    assert handshake(base, "atlas", atlas, ssl=client_ssl(other)) == 403
    assert handshake(base, "atlas", atlas, ssl=client_ssl(foreign)) == -1
    assert handshake(base, "atlas", "nfa_wrong", ssl=client_ssl(right)) == 401
    wait_for(lambda: "client_cert" in dashboard_log(rf), 10, "the refusal logged")
    # A host not bound to a certificate still works with its token alone, over TLS.
    borealis = rf.host("borealis").token_file.read_text().strip()
    assert handshake(base, "borealis", borealis, ssl=client_ssl()) == 101
    # The real agent, with its certificate, gets in.
    right.private_key_and_cert_chain_pem.write_to_path(str(tls / "atlas-client.pem"))
    rf.start_agent(
        "atlas",
        env={"SSL_CERT_FILE": str(tls / "server-ca.pem")},
        args=["--url", base, "--client-cert", str(tls / "atlas-client.pem"), *INFO],
    )
    wait_for(lambda: "connected to wss://" in agent_log(rf, "atlas"), 30, "atlas connected")


def test_a_real_agent_enrolls_and_connects_over_tls(tls_fleet):
    rf, base, _, _, _, tls = tls_fleet
    issued = run_cli(["admin", "host", "enroll-code", "borealis"], rf.fleet.env)
    assert issued.returncode == 0, issued.stderr
    host = rf.host("borealis")
    host.token_file.unlink()
    (host.root / "code").write_text(issued.stdout.strip())
    rf.start_agent(
        "borealis",
        env={"SSL_CERT_FILE": str(tls / "server-ca.pem")},
        args=["--url", base, "--enroll-code-file", str(host.root / "code")],
    )
    client = httpx.Client(
        base_url=base, verify=ssl.create_default_context(cafile=str(tls / "server-ca.pem"))
    )
    res = client.post("/login", data={"username": "admin", "password": rf.fleet.password})
    assert res.status_code == 303

    def online() -> bool:
        hosts = client.get("/api/hosts").json()["hosts"]
        return any(h["id"] == "borealis" and h["online"] for h in hosts)

    wait_for(online, 30, "borealis online over TLS")
    assert host.token_file.read_text().startswith("nfa_")


CREDENTIAL_CHANGES = [
    ("POST", "/api/hosts/atlas/agent-token", None),
    ("DELETE", "/api/hosts/atlas/agent-token", None),
    ("POST", "/api/hosts/atlas/enroll-code", None),
    ("PUT", "/api/hosts/atlas/client-cert", {"sha256": "ab" * 32}),
    ("DELETE", "/api/hosts/atlas/client-cert", None),
]


def test_credential_changes_need_the_csrf_token(idle):
    rf = idle
    api = rf.api()
    for method, path, body in CREDENTIAL_CHANGES:
        res = api.http.request(method, path, json=body)
        assert res.status_code == 403, (method, path)
        assert httpx.request(method, f"{rf.base}{path}", json=body).status_code == 401
    assert api.host("atlas")["identity_state"] == "active"
    assert api.host("atlas")["cert_sha256"] is None
    token = rf.host("atlas").token_file.read_text().strip()
    assert handshake(rf.base, "atlas", token) == 101


def test_bad_credential_requests_get_a_clear_4xx(idle):
    rf = idle
    api = rf.api()
    for method, path, body, status in [
        ("PUT", "/api/hosts/atlas/client-cert", {"sha256": "zz" * 32}, 422),
        ("PUT", "/api/hosts/ghost/client-cert", {"sha256": "ab" * 32}, 404),
        ("POST", "/api/hosts/atlas/agent-token", {"overlap_s": -1}, 422),
        ("POST", "/api/hosts/ghost/agent-token", None, 404),
        ("DELETE", "/api/hosts/ghost/agent-token", None, 404),
        ("POST", "/api/hosts/ghost/enroll-code", None, 404),
        ("POST", "/api/hosts/Bad_Id/enroll-code", None, 422),
    ]:
        res = api.http.request(method, path, json=body, headers={"X-CSRF-Token": api.csrf})
        assert res.status_code == status, (path, res.text)
        assert set(res.json()) == {"error", "detail"}


def test_a_fingerprint_in_openssl_form_binds_the_host(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    colons = ":".join(["AB"] * 32)
    res = api.http.put(
        "/api/hosts/atlas/client-cert",
        json={"sha256": colons},
        headers={"X-CSRF-Token": api.csrf},
    )
    assert res.json()["cert_sha256"] == "ab" * 32
    # Plain HTTP has no client certificate: the bound host's token alone is refused.
    token = rf.host("atlas").token_file.read_text().strip()
    assert handshake(rf.base, "atlas", token) == 403


def test_when_the_overlap_ends_the_agent_on_the_old_token_is_cut_off(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    rf.start_agent("atlas", args=INFO)
    api = rf.api()
    api.wait_online(["atlas"])
    new = api.post("/api/hosts/atlas/agent-token", {"overlap_s": 2}).json()["agent_token"]
    wait_for(lambda: _closed_with(rf, "atlas", 4410), 30, "the agent closed with 4410")
    rf.host("atlas").token_file.write_text(new)
    api.wait_online(["atlas"], timeout=BACKOFF_CAP_WAIT)


def _handshake_with(base: str, host_id: str, token: str, extra: dict[str, str]) -> int:
    async def attempt() -> int:
        headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id, **extra}
        try:
            ws = await websockets.connect(_ws_url(base), additional_headers=headers)
        except InvalidStatus as exc:
            return exc.response.status_code
        await ws.close()
        return 101

    return asyncio.run(attempt())


@pytest.mark.parametrize("trusted", [True, False])
def test_a_forwarded_client_certificate_counts_only_from_a_trusted_proxy(make_fleet, trusted):
    """Behind a TLS-terminating proxy the verified certificate arrives in a header; from a
    peer that is not a trusted proxy the same header is a forgery and is ignored."""
    from urllib.parse import quote

    from nixfleet.security.clientcert import fingerprint_of_pem

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    right = ca.issue_cert("atlas").cert_chain_pems[0].bytes().decode()
    other = ca.issue_cert("borealis").cert_chain_pems[0].bytes().decode()
    env = {"NIXFLEET_CLIENT_CERT_HEADER": "X-SSL-Client-Cert"}
    if trusted:
        env["NIXFLEET_TRUSTED_PROXIES"] = "127.0.0.1"
    rf = make_fleet(hosts=1, agents=False, env=env)
    api = rf.api()
    res = api.http.put(
        "/api/hosts/atlas/client-cert",
        json={"sha256": fingerprint_of_pem(right)},
        headers={"X-CSRF-Token": api.csrf},
    )
    assert res.status_code == 200, res.text
    token = rf.host("atlas").token_file.read_text().strip()
    nginx_form = {"X-SSL-Client-Cert": quote(right)}  # $ssl_client_escaped_cert
    assert _handshake_with(rf.base, "atlas", token, nginx_form) == (101 if trusted else 403)
    assert _handshake_with(rf.base, "atlas", token, {"X-SSL-Client-Cert": quote(other)}) == 403
    assert _handshake_with(rf.base, "atlas", token, {}) == 403
    if trusted:  # Traefik's form: base64 DER without PEM armour
        der_b64 = "".join(right.strip().splitlines()[1:-1])
        assert _handshake_with(rf.base, "atlas", token, {"X-SSL-Client-Cert": der_b64}) == 101

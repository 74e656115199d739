"""API tokens: Bearer requests without CSRF, held to their role and scope, revocable and
expiring, rate-limited per token, refused with a security event that never holds them."""

from __future__ import annotations

import sqlite3
import time
import uuid

import httpx
import pytest

from conftest import Api, RunningFleet, run_cli, wait_for
from nixfleet.demo.run import prepare
from rawagent import db_rows
from ssestream import sse_frames

PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def rf(tmp_path_factory):
    """One dashboard, three hosts without agents (commands to them stay queued)."""
    root = tmp_path_factory.mktemp("tokens")
    env = {
        "NIXFLEET_RATE_LIMIT_API": "1000/second",
        "NIXFLEET_RATE_LIMIT_TOKEN": "40/minute",
        "NIXFLEET_SSE_KEEPALIVE_S": "1",
    }
    fleet = RunningFleet(prepare(root, 3, extra_env=env), uuid.uuid4().hex, 1.0)
    fleet.start_dashboard(log_level="debug")
    for name, role in (("otto", "operator"), ("vera", "viewer")):
        res = run_cli(["admin", "user", "add", name, "--role", role], fleet.fleet.env, PASSWORD)
        assert res.returncode == 0, res.stderr
    yield fleet
    fleet.stop()
    log = (fleet.fleet.root / "dashboard.log").read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log


@pytest.fixture(scope="module")
def admin(rf) -> Api:
    return rf.api()


def login(rf: RunningFleet, user: str) -> Api:
    api = Api.__new__(Api)
    api.http = httpx.Client(base_url=rf.base, timeout=10, follow_redirects=False)
    res = api.http.post("/login", data={"username": user, "password": PASSWORD})
    assert res.status_code == 303, res.text
    api.csrf = api.http.get("/").text.split('name="csrf-token" content="')[1].split('"')[0]
    return api


def new_token(api: Api, **fields) -> tuple[str, str]:
    """Return (id, secret) of a token made through the API by api's user."""
    res = api.post("/api/tokens", {"name": f"t-{uuid.uuid4().hex[:8]}", **fields})
    assert res.status_code == 201, res.text
    return res.json()["token"]["id"], res.json()["secret"]


def bearer(rf: RunningFleet, secret: str) -> httpx.Client:
    """Return a client that speaks with the token alone: no cookie, no CSRF, no Origin."""
    return httpx.Client(base_url=rf.base, timeout=10, headers={"Authorization": f"Bearer {secret}"})


def events(rf: RunningFleet, kind: str, user: str) -> list[tuple[str, str]]:
    return db_rows(
        rf.fleet.root,
        "SELECT detail, user FROM security_events WHERE kind = ? AND user = ?",
        kind,
        user,
    )


def queued(rf: RunningFleet, host: str, kind: str) -> int:
    rows = db_rows(
        rf.fleet.root,
        "SELECT count(*) FROM commands WHERE host_id = ? AND kind = ? AND state = 'queued'",
        host,
        kind,
    )
    return int(rows[0][0])


def test_a_token_for_one_host_cannot_switch_another_and_its_refusal_names_the_token(rf, admin):
    tid, secret = new_token(admin, role="operator", hosts=["atlas"])
    with bearer(rf, secret) as http:
        refused = http.post("/api/hosts/borealis/command", json={"command": "switch"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "This token's scope does not cover borealis."
        whole = http.post(
            "/api/commands/bulk", json={"command": "pull", "host_ids": ["atlas", "borealis"]}
        )
        assert whole.status_code == 403
        assert queued(rf, "atlas", "pull") == 0, "a refused bulk request queued nothing"
        assert http.post("/api/hosts/atlas/command", json={"command": "switch"}).status_code == 202
        rollout = {"command": "switch", "host_ids": ["atlas", "cirrus"]}
        assert http.post("/api/rollouts", json=rollout).status_code == 403
    wait_for(lambda: events(rf, "access_denied", f"token:{tid} of admin"), 10, "the event")
    actors = db_rows(rf.fleet.root, "SELECT actor FROM commands WHERE host_id = 'atlas'")
    assert (f"token:{tid} of admin",) in actors

    def audited() -> list[tuple[str, str, str]]:
        sql = "SELECT actor, action, result FROM audit_log WHERE actor LIKE 'token:%'"
        return db_rows(rf.fleet.root, sql)

    me = f"token:{tid} of admin"
    wanted = {(me, "bulk_command", "forbidden"), (me, "rollout_start", "forbidden")}
    wait_for(lambda: wanted <= set(audited()), 10, "the refusals' audit entries")
    assert (me, "command", "accepted") in audited()


def set_labels(admin: Api, host: str, labels: dict[str, str]) -> None:
    res = admin.http.put(
        f"/api/hosts/{host}/labels", json={"labels": labels}, headers={"X-CSRF-Token": admin.csrf}
    )
    assert res.status_code == 200, res.text


def test_a_token_for_label_web_cannot_switch_a_db_host(rf, admin):
    set_labels(admin, "atlas", {"role": "web"})
    set_labels(admin, "borealis", {"role": "db"})
    _, secret = new_token(admin, role="operator", labels="role=web")
    with bearer(rf, secret) as http:
        refused = http.post("/api/hosts/borealis/command", json={"command": "switch"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "This token's scope does not cover borealis."
        assert http.post("/api/hosts/atlas/command", json={"command": "switch"}).status_code == 202
        by_label = {"command": "pull", "label": "role=db"}
        assert http.post("/api/commands/bulk", json=by_label).status_code == 403
        # Labels decide the scope: a scoped token cannot relabel a host into it.
        relabel = http.put("/api/hosts/borealis/labels", json={"labels": {"role": "web"}})
        assert relabel.status_code == 403
    assert queued(rf, "borealis", "switch") == 0 and queued(rf, "borealis", "pull") == 0
    set_labels(admin, "borealis", {"role": "web"})
    with bearer(rf, secret) as http:
        moved = http.post("/api/hosts/borealis/command", json={"command": "test"})
        assert moved.status_code == 202, "the scope follows the host's labels as they are now"


def test_a_plan_only_token_can_plan_but_not_switch(rf, admin):
    _, secret = new_token(admin, role="operator", kinds=["plan"])
    with bearer(rf, secret) as http:
        assert http.post("/api/hosts/cirrus/command", json={"command": "plan"}).status_code == 202
        refused = http.post("/api/hosts/cirrus/command", json={"command": "switch"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "This token may not switch."
    assert queued(rf, "cirrus", "switch") == 0


def test_a_viewer_token_reads_the_fleet_but_cannot_queue(rf, admin):
    _, secret = new_token(admin, role="viewer")
    with bearer(rf, secret) as http:
        hosts = http.get("/api/hosts")
        assert hosts.status_code == 200
        assert {h["id"] for h in hosts.json()["hosts"]} == {"atlas", "borealis", "cirrus"}
        refused = http.post("/api/hosts/atlas/command", json={"command": "test"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "This needs the operator role."
    assert queued(rf, "atlas", "test") == 0


def test_a_host_scoped_admin_token_cannot_touch_a_host_outside_it(rf, admin):
    _, secret = new_token(admin, role="admin", hosts=["atlas"])
    with bearer(rf, secret) as http:
        assert http.post("/api/hosts/borealis/enroll-code").status_code == 403
        assert http.delete("/api/hosts/borealis").status_code == 403
        add = {"host_id": "elsewhere"}
        assert http.post("/api/hosts", json=add).status_code == 403, "adding is beyond a scope"
        assert http.post("/api/hosts/atlas/enroll-code").status_code == 200
    assert db_rows(rf.fleet.root, "SELECT id FROM hosts WHERE id = 'borealis'")


def test_a_token_never_holds_a_role_above_its_creator_and_follows_its_owner_down(rf, admin):
    otto = login(rf, "otto")
    res = otto.post("/api/tokens", {"name": "too-high", "role": "admin"})
    assert res.status_code == 403
    assert res.json()["detail"] == "A token cannot hold a role above operator, its creator's role."
    res = otto.post("/api/tokens", {"name": "svc", "role": "viewer", "service": True})
    assert res.status_code == 403, "only admins make service tokens"
    _, secret = new_token(otto, role="operator")
    with bearer(rf, secret) as http:
        assert http.post("/api/hosts/atlas/command", json={"command": "pull"}).status_code == 202
        assert admin.http.patch(
            "/api/users/otto", json={"role": "viewer"}, headers={"X-CSRF-Token": admin.csrf}
        ).is_success
        again = http.post("/api/hosts/atlas/command", json={"command": "pull"})
        assert again.status_code == 403, "the owner's new role caps the token at once"
        assert admin.http.patch(
            "/api/users/otto", json={"disabled": True}, headers={"X-CSRF-Token": admin.csrf}
        ).is_success
        assert http.get("/api/hosts").status_code == 401, "a disabled owner's token is dead"
    assert admin.http.patch(
        "/api/users/otto",
        json={"disabled": False, "role": "operator"},
        headers={"X-CSRF-Token": admin.csrf},
    ).is_success


def test_revoking_a_token_refuses_its_next_request_and_ends_its_event_stream(rf, admin):
    tid, secret = new_token(admin, role="viewer")
    with bearer(rf, secret) as http:
        with http.stream("GET", "/api/events") as stream:
            assert stream.status_code == 200
            frames = sse_frames(stream.iter_lines())
            assert next(frames)["event"] == "snapshot"
            res = admin.http.delete(f"/api/tokens/{tid}", headers={"X-CSRF-Token": admin.csrf})
            assert res.status_code == 200 and res.json()["token"]["revoked_at"]
            names = [f["event"] for f in frames]
            assert names[-1] == "session_ended"
        refused = http.get("/api/hosts")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "This API token is revoked."
    wait_for(lambda: events(rf, "auth_failure", f"token:{tid}"), 10, "the refusal event")
    assert events(rf, "auth_failure", f"token:{tid}")[0][0] == "revoked_api_token"


def test_an_expired_token_is_refused(rf, admin):
    tid, secret = new_token(admin, role="viewer", expires_in="1d")
    with bearer(rf, secret) as http:
        assert http.get("/api/hosts").status_code == 200
        with sqlite3.connect(rf.fleet.root / "dashboard" / "nixfleet.db") as conn:
            conn.execute("UPDATE api_tokens SET expires_at = ? WHERE id = ?", (time.time(), tid))
        refused = http.get("/api/hosts")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "This API token is expired."
    wait_for(lambda: events(rf, "auth_failure", f"token:{tid}"), 10, "the refusal event")


def test_a_bad_bearer_token_is_refused_with_an_event_and_is_in_no_log(rf, admin):
    forged = "nft_" + uuid.uuid4().hex + uuid.uuid4().hex[:11]
    with bearer(rf, forged) as http:
        res = http.post("/api/hosts/atlas/command", json={"command": "switch"})
        assert res.status_code == 401
        assert res.json()["detail"] == "Not a valid API token."
    # A browser's cookie does not rescue a request that names a bad token.
    res = admin.http.get("/api/hosts", headers={"Authorization": f"Bearer {forged}"})
    assert res.status_code == 401
    wait_for(
        lambda: db_rows(
            rf.fleet.root,
            "SELECT 1 FROM security_events WHERE kind='auth_failure' AND detail='api_token'",
        ),
        10,
        "the refusal event",
    )
    _, good = new_token(admin, role="viewer")
    with bearer(rf, good) as http:
        assert http.get("/api/hosts").status_code == 200
    log = (rf.fleet.root / "dashboard.log").read_text(errors="replace")
    database = (rf.fleet.root / "dashboard" / "nixfleet.db").read_bytes()
    for secret in (forged, good):
        assert secret not in log and secret[4:] not in log
        assert secret.encode() not in database and secret[4:].encode() not in database


def test_a_bearer_request_needs_no_csrf_but_a_cookie_session_still_does(rf, admin):
    _, secret = new_token(admin, role="operator")
    with bearer(rf, secret) as http:
        res = http.post(
            "/api/hosts/cirrus/command",
            json={"command": "test"},
            headers={"Origin": "https://evil.example"},
        )
        assert res.status_code == 202, "no cookie, no ambient authority: Origin is moot"
    no_csrf = admin.http.post("/api/hosts/cirrus/command", json={"command": "test"})
    assert no_csrf.status_code == 403
    elsewhere = admin.post(
        "/api/hosts/cirrus/command",
        {"command": "test"},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403


def test_a_token_cannot_make_tokens_or_log_out(rf, admin):
    _, secret = new_token(admin, role="admin")
    with bearer(rf, secret) as http:
        res = http.post("/api/tokens", json={"name": "successor", "role": "admin"})
        assert res.status_code == 403
        assert res.json()["detail"] == "This needs a logged-in session, not an API token."
        assert http.get("/api/tokens").status_code == 403
        assert http.post("/logout").status_code == 403


def test_tokens_are_listed_with_their_last_use_and_never_their_secret(rf, admin):
    vera = login(rf, "vera")
    tid, secret = new_token(vera, role="viewer", expires_in="7d")
    with bearer(rf, secret) as http:
        assert http.get("/api/hosts").status_code == 200
    mine = vera.get("/api/tokens")
    assert mine.status_code == 200
    assert [t["id"] for t in mine.json()["tokens"]] == [tid], "a user sees only their own"
    row = mine.json()["tokens"][0]
    assert row["last_used_from"] == "127.0.0.1" and row["last_used_at"]
    assert secret not in mine.text and "token_hash" not in mine.text
    assert vera.get("/api/tokens?all=true").status_code == 403
    everyone = admin.get("/api/tokens?all=true").json()["tokens"]
    assert tid in {t["id"] for t in everyone}
    other = admin.http.delete(f"/api/tokens/{tid}", headers={"X-CSRF-Token": admin.csrf})
    assert other.status_code == 200, "an admin revokes anyone's token"
    theirs = new_token(admin, role="viewer")[0]
    res = vera.http.delete(f"/api/tokens/{theirs}", headers={"X-CSRF-Token": vera.csrf})
    assert res.status_code == 404, "a user cannot revoke another user's token"


def test_a_token_is_rate_limited_on_its_own(rf, admin):
    _, busy = new_token(admin, role="viewer")
    _, calm = new_token(admin, role="viewer")
    with bearer(rf, busy) as http:
        codes = [http.get("/api/security/summary").status_code for _ in range(45)]
    assert codes.count(429) >= 5 and codes[0] == 200
    with bearer(rf, calm) as http:
        assert http.get("/api/security/summary").status_code == 200, "another token is unhurt"
    assert admin.get("/api/security/summary").status_code == 200


def test_admin_token_create_prints_a_working_token_and_revoke_stops_it(rf):
    env = rf.fleet.env
    made = run_cli(
        ["admin", "token", "create", "ci", "--service", "--role", "operator", "--kind", "plan"],
        env,
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("nft_") and len(secret) == 47
    with bearer(rf, secret) as http:
        assert http.post("/api/hosts/atlas/command", json={"command": "plan"}).status_code == 202
        assert http.post("/api/hosts/atlas/command", json={"command": "pull"}).status_code == 403
    listing = run_cli(["admin", "token", "list"], env)
    assert "ci" in listing.stdout and "service" in listing.stdout and secret not in listing.stdout
    token_id = made.stderr.split("created ")[1].split(" ")[0]
    assert run_cli(["admin", "token", "revoke", token_id], env).returncode == 0
    with bearer(rf, secret) as http:
        assert http.get("/api/hosts").status_code == 401
    too_high = run_cli(
        ["admin", "token", "create", "x", "--user", "vera", "--role", "operator"], env
    )
    assert too_high.returncode == 2
    assert "above viewer, its creator's role" in too_high.stderr
    audit = db_rows(rf.fleet.root, "SELECT action FROM audit_log WHERE actor LIKE 'cli:%'")
    assert ("api_token_add",) in audit and ("api_token_revoke",) in audit

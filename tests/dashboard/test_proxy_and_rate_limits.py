"""Rate limits follow the real client: forwarded headers count only from trusted proxies,
a forged left-most X-Forwarded-For cannot pick an address, and a 429 says when to retry."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import wait_for
from rawagent import hello

# Yearly windows: at a minute boundary the sliding-window counter lets one more through.
LIMITED = {"NIXFLEET_RATE_LIMIT_API": "5/year"}


def _access_lines(rf) -> list[str]:
    log = (rf.fleet.root / "dashboard.log").read_text()
    return [line for line in log.splitlines() if "nixfleet.access" in line]


def _hosts(api, forwarded_for: str) -> httpx.Response:
    return api.http.get("/api/hosts", headers={"X-Forwarded-For": forwarded_for})


def _assert_rate_limited(res: httpx.Response) -> None:
    assert res.status_code == 429
    assert res.json()["error"] == "rate_limited"
    assert int(res.headers["Retry-After"]) >= 1


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env=LIMITED)
    api = rf.api()
    # Each request claims another address; without trusted proxies they all count as ours.
    for i in range(5):
        assert _hosts(api, f"198.51.100.{i}").status_code == 200
    _assert_rate_limited(_hosts(api, "198.51.100.99"))
    lines = wait_for(lambda: [ln for ln in _access_lines(rf) if "status=429" in ln])
    assert "address=127.0.0.1 " in lines[0]
    assert not any("198.51.100." in ln for ln in _access_lines(rf))


def test_behind_a_trusted_proxy_two_clients_are_limited_separately(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={**LIMITED, "NIXFLEET_TRUSTED_PROXIES": "127.0.0.1"})
    api = rf.api()
    for _ in range(5):
        assert _hosts(api, "198.51.100.1").status_code == 200
    res = _hosts(api, "198.51.100.1")
    _assert_rate_limited(res)
    assert _hosts(api, "198.51.100.2").status_code == 200  # another client, its own budget
    request_id = res.headers["X-Request-ID"]
    line = wait_for(lambda: [ln for ln in _access_lines(rf) if request_id in ln])[0]
    assert "address=198.51.100.1 " in line
    assert "path=/api/hosts " in line


def test_a_forged_left_most_entry_in_a_proxy_chain_does_not_choose_the_address(make_fleet):
    rf = make_fleet(
        hosts=1,
        agents=False,
        env={**LIMITED, "NIXFLEET_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"},
    )
    api = rf.api()
    # The client forges a new left-most entry every time; the edge proxy appends what it
    # saw (203.0.113.9) and an inner trusted proxy appends the edge proxy (10.0.0.9).
    for i in range(5):
        assert _hosts(api, f"192.0.2.{i}, 203.0.113.9, 10.0.0.9").status_code == 200
    _assert_rate_limited(_hosts(api, "192.0.2.200, 203.0.113.9, 10.0.0.9"))
    assert _hosts(api, "192.0.2.1, 203.0.113.10, 10.0.0.9").status_code == 200


def test_login_attempts_per_address_are_capped(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_RATE_LIMIT_LOGIN": "3/year"})
    with httpx.Client(base_url=rf.base) as client:
        for _ in range(3):
            res = client.post("/login", data={"username": "admin", "password": "guess"})
            assert res.status_code != 429
        res = client.post("/login", data={"username": "admin", "password": rf.fleet.password})
        _assert_rate_limited(res)  # even the right password waits: no guessing oracle
        assert client.get("/login").status_code == 200  # the page itself stays reachable


def test_refused_agent_handshakes_are_limited_per_address(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_RATE_LIMIT_AGENT_WS": "2/year"})
    url = rf.base.replace("http://", "ws://") + "/api/agent/ws"
    headers = {"Authorization": "Bearer nfa_wrong", "X-NixFleet-Host": "atlas"}
    statuses = []
    for _ in range(3):
        with pytest.raises(InvalidStatus) as err:
            connect(url, additional_headers=headers, open_timeout=10)
        statuses.append(err.value.response)
    assert [r.status_code for r in statuses] == [401, 401, 429]
    assert int(statuses[2].headers["Retry-After"]) >= 1
    assert json.loads(statuses[2].body)["error"] == "rate_limited"


def test_a_good_agent_behind_a_flooded_address_still_connects(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_RATE_LIMIT_AGENT_WS": "3/year"})
    url = rf.base.replace("http://", "ws://") + "/api/agent/ws"
    headers = {"Authorization": "Bearer nfa_wrong", "X-NixFleet-Host": "atlas"}
    statuses = []
    for _ in range(10):  # the flood, from the address the good agent also uses
        with pytest.raises(InvalidStatus) as err:
            connect(url, additional_headers=headers, open_timeout=10)
        statuses.append(err.value.response.status_code)
    assert statuses.count(429) == 7
    rf.start_agent("atlas")
    api = rf.api()
    api.wait_online(["atlas"])
    with pytest.raises(InvalidStatus) as err:  # and the flood is still refused
        connect(url, additional_headers=headers, open_timeout=10)
    assert err.value.response.status_code == 429


def test_open_event_streams_per_session_are_capped(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_SSE_MAX_PER_SESSION": "2"})
    api = rf.api()
    with httpx.Client(base_url=rf.base, cookies=api.http.cookies, timeout=10) as client:
        with client.stream("GET", "/api/events") as one, client.stream("GET", "/api/events") as two:
            # Keep the line iterators: dropping one closes its connection.
            readers = [res.iter_lines() for res in (one, two)]
            for res, reader in zip((one, two), readers, strict=True):
                assert res.status_code == 200
                next(reader)  # the stream is open and counted
            third = client.get("/api/events")
            _assert_rate_limited(third)
            assert "2 open event streams" in third.json()["detail"]
        # Closing them frees the slots (once the dashboard notices the closed connections).
        wait_for(lambda: client.get("/api/hosts").status_code == 200)

        def reopened() -> bool:
            with client.stream("GET", "/api/events") as again:
                return again.status_code == 200

        wait_for(reopened, 40, "a stream slot to be free again")


def test_the_access_log_never_holds_cookies_tokens_or_query_strings(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    api.http.get("/api/hosts?token=sekrit-in-query")
    api.post("/api/hosts", {"host_id": "newbie"})
    cookie = api.http.cookies["nixfleet_session"]
    wait_for(
        lambda: any(
            "path=/api/hosts " in ln and "method=POST" in ln and "user=admin" in ln
            for ln in _access_lines(rf)
        ),
        10,
        "the access log line of the POST",
    )
    log = (rf.fleet.root / "dashboard.log").read_text()
    for secret in (cookie, api.csrf, rf.fleet.password, "sekrit-in-query"):
        assert secret not in log


def test_hsts_follows_the_scheme_only_a_trusted_proxy_reports(make_fleet):
    rf = make_fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_TRUSTED_PROXIES": "127.0.0.1", "NIXFLEET_SECURE_COOKIES": "true"},
    )

    def hsts(source: str, headers: dict) -> bool:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(base_url=rf.base, transport=transport) as client:
            res = client.get("/login", headers=headers)
        assert res.status_code == 200
        return "strict-transport-security" in res.headers

    assert hsts("127.0.0.1", {"X-Forwarded-Proto": "https"})
    assert hsts("127.0.0.1", {"Forwarded": "for=192.0.2.1;proto=https"})
    assert not hsts("127.0.0.1", {})  # plain HTTP straight to the dashboard
    # Anyone else claiming HTTPS is not believed.
    assert not hsts("127.0.0.2", {"X-Forwarded-Proto": "https"})


def test_logs_can_be_one_json_object_a_line(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_LOG_FORMAT": "json"})
    api = rf.api()
    request_id = api.get("/api/hosts").headers["X-Request-ID"]

    def entry() -> dict | None:
        for line in (rf.fleet.root / "dashboard.log").read_text().splitlines():
            if line.startswith("{") and request_id in line:
                return json.loads(line)
        return None

    found = wait_for(entry, 10, "the JSON access line")
    assert found["logger"] == "nixfleet.access"
    assert found["event"] == "access"
    assert (found["method"], found["path"], found["status"]) == ("GET", "/api/hosts", 200)
    assert (found["address"], found["user"]) == ("127.0.0.1", "admin")
    assert isinstance(found["duration_ms"], float)


def test_open_event_streams_per_address_are_capped_across_sessions(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_SSE_MAX_PER_ADDRESS": "1"})
    first, second = rf.api(), rf.api()
    with (
        httpx.Client(base_url=rf.base, cookies=first.http.cookies, timeout=10) as one,
        one.stream("GET", "/api/events") as res,
    ):
        lines = res.iter_lines()
        next(lines)  # open and counted
        refused = second.get("/api/events")
        _assert_rate_limited(refused)
        assert refused.json()["detail"] == "This address already has 1 open event streams."


def test_behind_a_trusted_proxy_an_agents_link_is_logged_with_the_agents_address(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_TRUSTED_PROXIES": "127.0.0.1"})
    url = rf.base.replace("http://", "ws://") + "/api/agent/ws"
    token = rf.host("atlas").token_file.read_text().strip()
    headers = {
        "Authorization": f"Bearer {token}",
        "X-NixFleet-Host": "atlas",
        "X-Forwarded-For": "198.51.100.7",
    }
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        ws.send(json.dumps(hello("atlas")))
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
    # The line is written when the link ends, long after its handshake's headers were read.
    line = wait_for(lambda: [ln for ln in _access_lines(rf) if "method=WS" in ln])[0]
    assert "address=198.51.100.7 " in line and "host=atlas" in line and "status=101" in line
    assert token not in (rf.fleet.root / "dashboard.log").read_text()

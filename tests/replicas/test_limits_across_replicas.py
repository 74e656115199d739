"""Limits that hold across replicas: request rates and event-stream caps are counted in
PostgreSQL, so spreading requests or streams over replicas buys nothing."""

from __future__ import annotations

import httpx

from conftest import wait_for
from replicas.replicaset import LEASE_S


def _open(api) -> httpx.Response:
    """Return the answer to opening a stream, read no further than its status."""
    with api.http.stream("GET", "/api/events") as res:
        if res.status_code != 200:
            res.read()
        return res


def test_rates_and_stream_caps_count_what_every_replica_serves(pair):
    # One pair of replicas for both limits (starting two dashboards is the slow part).
    p = pair(
        hosts=1,
        env={
            "NIXFLEET_RATE_LIMIT_API": "6/minute",
            "NIXFLEET_RATE_LIMIT_EVENTS": "1000/minute",
            "NIXFLEET_SSE_MAX_PER_SESSION": "1",
        },
    )
    on_a = p.login("a")
    on_b = p.acting_on(on_a, "b")

    # Requests alternating between the replicas: six pass, the rest wait, on either one.
    answers = [(on_a, on_b)[i % 2].get("/api/hosts") for i in range(8)]
    assert [r.status_code for r in answers] == [200] * 6 + [429, 429]
    refused = answers[7].json()
    assert refused["error"] == "rate_limited"
    assert "too many requests to api from this address" in refused["detail"]
    assert 1 <= int(answers[7].headers["Retry-After"]) <= 60

    # One stream per session: held on a, refused on b.
    held_on_a = p.stream(on_a)
    refused_stream = _open(on_b)
    assert refused_stream.status_code == 429
    assert refused_stream.json()["detail"] == "This session already has 1 open event streams."
    # The stream on a closes: its seat is given back, and b admits one.
    held_on_a.close()
    wait_for(lambda: _open(on_b).status_code == 200, 10, "b to admit a stream")

    # A stream held on b, then b dies with it (kill -9: nothing gives the seat back);
    # its seat lapses with b's lease.
    p.stream(on_b)
    assert _open(on_a).status_code == 429
    p.b.kill()
    wait_for(lambda: _open(on_a).status_code == 200, LEASE_S * 2 + 5, "b's seat to lapse")

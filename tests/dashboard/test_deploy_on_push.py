"""Deploy on push through real forge deliveries: a signed push to the configured branch
moves the target and starts a rollout; a wrong signature, a replayed delivery (by id or
by body), another branch, a forge that is not configured and a bad payload are refused,
counted as security events and, once past the signature, audited with the delivery id."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from conftest import RunningFleet, wait_for
from nixfleet.demo.configrepo import commit_change
from nixfleet.security.webhooks import Forge, sign

SECRET = "hook-secret-" + "x" * 24
GITLAB = "gitlab-token-" + "y" * 24


def push_body(ref: str, after: str) -> bytes:
    return json.dumps({"ref": ref, "before": "0" * 40, "after": after, "commits": []}).encode()


def deliver(
    rf: RunningFleet,
    forge: Forge,
    body: bytes,
    secret: str = SECRET,
    delivery: str | None = None,
    event: str = "push",
) -> httpx.Response:
    delivery = delivery or uuid.uuid4().hex
    names = {
        Forge.GITHUB: ("X-GitHub-Event", "X-GitHub-Delivery"),
        Forge.GITLAB: ("X-Gitlab-Event", "X-Gitlab-Event-UUID"),
        Forge.FORGEJO: ("X-Forgejo-Event", "X-Forgejo-Delivery"),
    }[forge]
    headers = {
        **sign(forge, body, secret),
        names[0]: event,
        names[1]: delivery,
        "Content-Type": "application/json",
    }
    return httpx.post(f"{rf.base}/api/hooks/{forge.value}", content=body, headers=headers)


def hook_events(api: Any) -> list[str]:
    recent = api.get("/api/security/summary").json()["recent"]
    return sorted(e["detail"] for e in recent if e["kind"] == "hook")


def test_a_signed_push_moves_the_target_and_starts_the_configured_rollout(make_fleet):
    rf: RunningFleet = make_fleet(
        hosts=2,
        build_seconds=0.3,
        failing=(),
        env={
            "NIXFLEET_HOOK_GITHUB_SECRET": SECRET,
            "NIXFLEET_HOOK_ACTION": "rollout",
            "NIXFLEET_HOOK_ROLLOUT_POLICY": "canary=1 budget=0",
            "NIXFLEET_TARGET_CACHE_S": "3600",
        },
    )
    api = rf.api()
    head = commit_change(rf.fleet.root / "config", "a change to deploy")
    res = deliver(rf, Forge.GITHUB, push_body("refs/heads/main", head), delivery="gh-1")
    assert res.status_code == 202, res.text
    assert res.json()["target"] == head
    rid = res.json()["rollout_id"]
    ro = wait_for(
        lambda: (r := api.get(f"/api/rollouts/{rid}").json())["state"] == "completed" and r,
        60,
        "the push's rollout to complete",
    )
    assert ro["kind"] == "pull-switch" and ro["actor"] == "hook:github"
    assert ro["source"] == "github:gh-1" and ro["report"] == "2 succeeded"
    for host in ("atlas", "borealis"):  # the next heartbeat reports the new commit
        wait_for(lambda h=host: api.host(h)["drift"] == "current", 40, f"{host} to be current")
    audit = api.get("/api/audit?action=hook_push").json()["entries"]
    assert [(e["result"], e["detail"]["delivery"]) for e in audit] == [("accepted", "gh-1")]
    assert audit[0]["detail"]["rollout_id"] == rid


def test_forged_replayed_and_off_branch_deliveries_are_refused_and_counted(make_fleet):
    rf: RunningFleet = make_fleet(
        hosts=1,
        agents=False,
        env={
            "NIXFLEET_HOOK_GITHUB_SECRET": SECRET,
            "NIXFLEET_HOOK_FORGEJO_SECRET": SECRET,
            "NIXFLEET_HOOK_GITLAB_TOKEN": GITLAB,
            "NIXFLEET_HOOK_ACTION": "rollout",
        },
    )
    api = rf.api()
    head = commit_change(rf.fleet.root / "config", "pushed")
    body = push_body("refs/heads/main", head)

    forged = deliver(rf, Forge.GITHUB, body, secret="not-the-secret-" + "z" * 20)
    assert forged.status_code == 401 and forged.json()["error"] == "bad_signature"
    tampered = sign(Forge.GITHUB, body, SECRET)  # a valid signature, over another body
    res = httpx.post(
        f"{rf.base}/api/hooks/github",
        content=body.replace(b"main", b"mail"),
        headers={**tampered, "X-GitHub-Event": "push", "X-GitHub-Delivery": "t"},
    )
    assert res.status_code == 401
    wrong_token = deliver(rf, Forge.GITLAB, body, secret="guess-" + "g" * 20, event="Push Hook")
    assert wrong_token.status_code == 401

    first = deliver(rf, Forge.FORGEJO, body, delivery="fj-1")
    assert first.status_code == 202 and first.json()["result"] == "accepted"
    again = deliver(rf, Forge.FORGEJO, body, delivery="fj-1")
    assert again.status_code == 409 and again.json()["error"] == "replay"
    renamed = deliver(rf, Forge.FORGEJO, body, delivery="fj-2")  # same body, new id
    assert renamed.status_code == 409

    other = deliver(
        rf,
        Forge.GITLAB,
        push_body("refs/heads/dev", head),
        secret=GITLAB,
        delivery="gl-1",
        event="Push Hook",
    )
    assert other.status_code == 202 and other.json()["result"] == "other_branch"
    tag = deliver(rf, Forge.GITHUB, push_body("refs/tags/main", head), delivery="gh-tag")
    assert tag.json()["result"] == "other_branch"
    bad = deliver(rf, Forge.GITHUB, b'{"ref": "refs/heads/main", "after": "; rm -rf /"}')
    assert bad.status_code == 400 and "after" in bad.json()["detail"]
    assert httpx.post(f"{rf.base}/api/hooks/bitbucket", content=b"{}").status_code == 404

    rollouts = api.get("/api/rollouts").json()["rollouts"]
    assert [r["source"] for r in rollouts] == ["forgejo:fj-1"]  # only the accepted one
    wait_for(lambda: len(hook_events(api)) == 9, 10, "every delivery to be counted")
    assert hook_events(api) == sorted(
        ["bad_signature"] * 3
        + ["accepted", "replay", "replay"]
        + ["other_branch"] * 2
        + ["bad_payload"]
    )
    audit = api.get("/api/audit?action=hook_push").json()["entries"]
    results = sorted((e["result"], e["detail"]["delivery"]) for e in audit)
    assert ("replay", "fj-2") in results and ("other_branch", "gl-1") in results
    assert not any(r == "bad_signature" for r, _ in results)


def test_a_forge_without_a_secret_is_off(make_fleet):
    rf: RunningFleet = make_fleet(hosts=1, agents=False)
    res = deliver(rf, Forge.GITHUB, push_body("refs/heads/main", "a" * 40))
    assert res.status_code == 404 and res.json()["error"] == "disabled"

"""Host labels: set by an operator (API, CLI) and by the host's own configuration (the
agent), bounded, shown with their source, and used to select and group hosts."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import RunningFleet, run_cli, wait_for
from nixfleet.core.errors import for_people


def put_labels(api, host_id: str, labels: dict[str, str]):
    return api.http.put(
        f"/api/hosts/{host_id}/labels",
        json={"labels": labels},
        headers={"X-CSRF-Token": api.csrf},
    )


def cli(rf: RunningFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixfleet", "admin", "host", *args],
        env={**os.environ, **rf.fleet.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_labels_out_of_bounds_are_refused_with_words_and_change_nothing(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    assert put_labels(api, "atlas", {"role": "web"}).status_code == 200
    too_many = {f"k{i}": "v" for i in range(17)}
    cases = {
        "too many": (too_many, "17 labels is too many; a host may have at most 16"),
        "capital key": ({"Role": "web"}, "'Role' is not a label key"),
        "reserved key": ({"location": "x"}, "'location' is a host field of its own"),
        "space in value": ({"role": "web server"}, "The value of 'role' ('web server')"),
        "empty value": ({"role": ""}, "The value of 'role' ('')"),
        "long value": ({"role": "x" * 64}, "is not allowed"),
    }
    for name, (labels, words) in cases.items():
        res = put_labels(api, "atlas", labels)
        assert res.status_code == 422, (name, res.text)
        assert words in res.json()["detail"], (name, res.json())
        assert not res.json()["detail"].startswith("labels:"), name
    # A body far over the bound is cut off by the schema before any rule runs.
    assert put_labels(api, "atlas", {f"k{i}": "v" for i in range(100)}).status_code == 422
    assert api.host("atlas")["labels"] == {"role": "web"}
    res = api.post("/api/hosts", {"host_id": "web-9", "labels": {"Bad Key": "x"}})
    assert res.status_code == 422
    assert res.json()["detail"] == for_people(
        "labels: 'Bad Key' is not a label key: use 1 to 32 lower-case letters, digits, "
        "'.', '-' or '_', starting and ending with a letter or digit"
    )
    assert "web-9" not in {h["id"] for h in api.get("/api/hosts").json()["hosts"]}


def test_the_hosts_configuration_wins_per_key_and_the_source_is_shown(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    assert put_labels(api, "atlas", {"role": "db", "tier": "2"}).status_code == 200
    rf.start_agent("atlas", args=["--label", "role=web", "--label", "site=ams1"])
    api.wait_online(["atlas"])
    host = wait_for(lambda: (h := api.host("atlas"))["labels"].get("site") and h, 10, "labels")
    assert host["labels"] == {"role": "web", "site": "ams1", "tier": "2"}
    assert host["label_sources"] == {
        "role": "host configuration",
        "site": "host configuration",
        "tier": "dashboard",
    }
    assert host["meta_sources"]["labels.tier"] == "dashboard"
    # The operator's own value is kept underneath: it shows again once the host drops it.
    assert host["admin_labels"] == {"role": "db", "tier": "2"}
    rf.kill_agent("atlas")
    rf.start_agent("atlas", args=["--label", "site=ams1"])
    wait_for(lambda: api.host("atlas")["labels"].get("role") == "db", 15, "role back to db")


def test_an_agent_with_a_bad_label_does_not_start(tmp_path):
    args = ["--url", "http://127.0.0.1:1", "--host-id", "atlas", "--repo-dir", str(tmp_path)]
    res = run_cli(["agent", *args, "--token-file", __file__, "--label", "Role=web"])
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "agent: --label: 'Role' is not a label key: use 1 to 32 lower-case letters, digits, "
        "'.', '-' or '_', starting and ending with a letter or digit"
    ]


def test_hosts_are_selected_and_rolled_out_by_label(make_fleet):
    rf = make_fleet(hosts=4, agents=False)
    api = rf.api()
    ids = [h.host_id for h in rf.fleet.hosts]
    roles = {ids[0]: "web", ids[1]: "web", ids[2]: "db", ids[3]: "web"}
    sites = {ids[0]: "ams", ids[1]: "fra", ids[2]: "ams", ids[3]: "ams"}
    for host_id in ids:
        labels = {"role": roles[host_id], "site": sites[host_id]}
        assert put_labels(api, host_id, labels).status_code == 200
    web = sorted(h for h, r in roles.items() if r == "web")
    listed = api.get("/api/hosts?label=role=web").json()["hosts"]
    assert sorted(h["id"] for h in listed) == web
    both = api.get("/api/hosts?label=role=web,site=ams").json()["hosts"]
    assert sorted(h["id"] for h in both) == sorted(h for h in web if sites[h] == "ams")
    assert api.get("/api/hosts?label=Role").status_code == 422

    plan = api.post(
        "/api/rollouts",
        {
            "command": "pull",
            "label": "role=web",
            "policy": {"canary": 1, "group_by": "site"},
            "dry_run": True,
        },
    ).json()
    assert sorted(h for wave in plan["waves"] for h in wave) == web
    for wave in plan["waves"][1:]:
        assert len({sites[h] for h in wave}) == 1, plan["waves"]
    assert "Waves never mix hosts of two values of the label site." in plan["summary"]

    none = api.post("/api/commands/bulk", {"command": "pull", "label": "role=cache"})
    assert none.status_code == 404
    assert none.json()["detail"] == "No host has the labels 'role=cache'."
    both_ways = api.post(
        "/api/commands/bulk", {"command": "pull", "label": "role=web", "host_ids": ["x"]}
    )
    assert both_ways.status_code == 422
    res = api.post("/api/commands/bulk", {"command": "pull", "label": "role=db"})
    assert res.status_code == 202
    assert [r["host_id"] for r in res.json()["results"]] == [ids[2]]


def test_the_cli_sets_removes_and_lists_labels(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    done = cli(rf, "label", "atlas", "role=web", "tier=1")
    assert done.returncode == 0, done.stderr
    assert "role=web\t(from dashboard)" in done.stdout
    assert cli(rf, "label", "atlas", "tier-").returncode == 0
    wait_for(lambda: api.host("atlas")["labels"] == {"role": "web"}, 10, "tier removed")
    bad = cli(rf, "label", "atlas", "Tier=1")
    assert bad.returncode == 2
    assert "'Tier' is not a label key" in bad.stderr
    added = cli(rf, "add", "web-07", "--label", "role=web")
    assert added.returncode == 0, added.stderr
    wait_for(lambda: api.host("web-07")["labels"] == {"role": "web"}, 10, "the new host's labels")
    audit = api.get("/api/audit?action=host_labels").json()
    assert any(e["host"] == "atlas" for e in audit["entries"])

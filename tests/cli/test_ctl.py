"""`nixfleet ctl` drives a real dashboard and real agents on real Nix with an API token:
plan, switch --wait, logs, a rollout, and exit codes a CI job can act on."""

from __future__ import annotations

import json

from conftest import RunningFleet, run_cli


def ctl(rf: RunningFleet, token: str, *args: str, timeout: float = 120):
    env = {"NIXFLEET_URL": rf.base, "NIXFLEET_TOKEN": token}
    return run_cli(["ctl", *args], env, timeout=timeout)


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_ctl_plans_switches_waits_and_fails_the_job_when_a_deploy_fails(make_fleet, tmp_path):
    rf: RunningFleet = make_fleet(hosts=4, agents=False, build_seconds=0.5)
    for host in ("atlas", "dune"):  # dune's configuration does not build
        rf.start_agent(host)
    rf.api().wait_online(["atlas", "dune"])
    made = run_cli(
        ["admin", "token", "create", "ci", "--service", "--role", "operator"], rf.fleet.env
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()

    listed = ctl(rf, token, "hosts", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {h["id"] for h in lines(listed.stdout)} == {"atlas", "borealis", "cirrus", "dune"}
    assert ctl(rf, token, "hosts", "--search", "bor").stdout.split()[0] == "borealis"

    planned = ctl(rf, token, "plan", "atlas", "--wait", "--json")
    assert planned.returncode == 0, planned.stderr
    assert [(c["host_id"], c["state"]) for c in lines(planned.stdout)] == [("atlas", "succeeded")]

    switched = ctl(rf, token, "switch", "atlas", "--wait", "--json")
    assert switched.returncode == 0, switched.stderr
    (done,) = lines(switched.stdout)
    assert done["state"] == "succeeded" and done["actor"].startswith("token:")
    logs = ctl(rf, token, "logs", done["id"])
    assert logs.returncode == 0 and logs.stdout.strip(), "the switch's output is printed"

    broken = ctl(rf, token, "switch", "dune", "--wait", "--json")
    assert broken.returncode == 1, "a failed deploy fails the CI job"
    assert lines(broken.stdout)[0]["state"] == "failed"
    followed = ctl(rf, token, "logs", lines(broken.stdout)[0]["id"], "--follow")
    assert followed.returncode == 1 and "failed" in followed.stderr

    shown = ctl(rf, token, "host", "atlas", "--json")
    assert lines(shown.stdout)[0]["deploy"]["state"] == "current"
    audit = ctl(rf, token, "audit", "--json", "--action", "bulk_command")
    assert any(e["actor"].startswith("token:") for e in lines(audit.stdout))


def test_ctl_follows_live_and_reports_auth_usage_and_timeouts_apart(make_fleet, tmp_path):
    rf: RunningFleet = make_fleet(hosts=2, agents=False, build_seconds=0.5)
    rf.start_agent("atlas")
    rf.api().wait_online(["atlas"])
    env = rf.fleet.env
    viewer = run_cli(["admin", "token", "create", "v", "--service", "--role", "viewer"], env)
    op = run_cli(["admin", "token", "create", "o", "--service", "--role", "operator"], env)
    viewer_token, op_token = viewer.stdout.strip(), op.stdout.strip()

    refused = ctl(rf, viewer_token, "switch", "atlas")
    assert refused.returncode == 3 and "operator role" in refused.stderr
    assert ctl(rf, "nft_" + "x" * 43, "hosts").returncode == 3
    assert ctl(rf, op_token, "switch").returncode == 2, "no hosts named: usage"
    assert ctl(rf, op_token, "host", "nowhere").returncode == 2

    # borealis has no agent: its switch stays queued, and --wait gives up in time.
    late = ctl(rf, op_token, "switch", "borealis", "--wait", "--timeout", "2")
    assert late.returncode == 5, late.stderr

    token_file = tmp_path / "token"
    token_file.write_text(op_token + "\n")
    started = run_cli(
        ["ctl", "--url", rf.base, "--token-file", str(token_file), "switch", "atlas", "--json"],
        {},
    )
    assert started.returncode == 0, started.stderr
    (queued,) = lines(started.stdout)
    followed = ctl(rf, op_token, "logs", queued["command_id"], "--follow", "--json")
    assert followed.returncode == 0, followed.stderr
    seqs = [line["seq"] for line in lines(followed.stdout)]
    assert seqs and seqs == sorted(set(seqs)), "each line once, in order"

    ro = ctl(rf, op_token, "rollout", "start", "atlas", "--wait", "--json")
    assert ro.returncode == 0, ro.stderr
    assert lines(ro.stdout)[-1]["state"] == "completed"
    status = ctl(rf, op_token, "rollout", "status", lines(ro.stdout)[-1]["id"])
    assert status.returncode == 0 and "completed" in status.stdout

    unreachable = run_cli(
        ["ctl", "--url", "http://127.0.0.1:9", "hosts"], {"NIXFLEET_TOKEN": op_token}
    )
    assert unreachable.returncode == 4


def test_ctl_verifies_the_dashboards_certificate_and_trusts_a_ca_given_with_ca(
    make_fleet, tmp_path
):
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {
        "NIXFLEET_TLS_CERT": str(tmp_path / "server.pem"),
        "NIXFLEET_TLS_KEY": str(tmp_path / "server.key"),
    }
    rf: RunningFleet = make_fleet(hosts=1, agents=False, env=env)
    made = run_cli(["admin", "token", "create", "r", "--service"], rf.fleet.env)
    token = made.stdout.strip()
    url = f"https://127.0.0.1:{rf.port}"
    untrusted = run_cli(["ctl", "--url", url, "hosts"], {"NIXFLEET_TOKEN": token})
    assert untrusted.returncode == 4 and "certificate" in untrusted.stderr.lower()
    trusted = run_cli(
        ["ctl", "--url", url, "--ca", str(tmp_path / "ca.pem"), "hosts"], {"NIXFLEET_TOKEN": token}
    )
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.split()[0] == "atlas"

"""Each metadata field has one owner: what the host's configuration sets wins at every
connection; what it leaves unset stays as the operator entered it in the dashboard."""

from __future__ import annotations


def _meta(api, host_id):
    host = api.host(host_id)
    return host["location"], host["device_type"], host["theme_color"]


def test_an_agent_that_sets_one_field_keeps_the_operators_other_fields(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    location, device_type, _ = _meta(api, "atlas")  # entered in the dashboard (the demo's)
    assert location and device_type
    rf.start_agent("atlas", args=["--theme-color", "#112233"])
    api.wait_online(["atlas"])
    assert _meta(api, "atlas") == (location, device_type, "#112233")


def test_an_agent_passing_empty_fields_blanks_nothing(make_fleet):
    # Modules before this change always passed all three, empty when unset.
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    before = _meta(api, "atlas")
    rf.start_agent("atlas", args=["--location", "", "--device-type", "router", "--theme-color", ""])
    api.wait_online(["atlas"])
    assert _meta(api, "atlas") == (before[0], "router", before[2])

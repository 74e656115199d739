"""A token's scope only ever narrows: hosts, labels and kinds each shut out the rest."""

from __future__ import annotations

import pytest

from nixfleet.core.apitokens import lifetime_s, scope_from, scope_of
from nixfleet.core.commands import CommandKind
from nixfleet.core.errors import ValidationError


def test_a_label_scope_covers_only_hosts_matching_every_term():
    web = scope_from(labels="role=web,site")
    assert web.covers_host("db-01", {"role": "web", "site": "fra", "tier": "1"})
    assert not web.covers_host("web-01", {"role": "db", "site": "fra"})
    assert not web.covers_host("web-01", {"role": "web"}), "every term must match"
    assert not web.covers_host("web-01"), "a host without labels is outside a label scope"


def test_hosts_and_labels_together_need_both():
    both = scope_from(hosts=["web-01"], labels="role=web")
    assert both.covers_host("web-01", {"role": "web"})
    assert not both.covers_host("web-02", {"role": "web"})
    assert not both.covers_host("web-01", {})


def test_a_kind_scope_allows_only_its_kinds_and_an_empty_scope_allows_all():
    plan = scope_from(kinds=["plan"])
    assert plan.allows_kind(CommandKind.PLAN) and not plan.allows_kind(CommandKind.SWITCH)
    assert scope_from().allows_kind(CommandKind.SWITCH) and not scope_from().narrowed


def test_a_stored_scope_reads_back_the_same():
    scope = scope_from(["Web-01 ", "db-01"], "tier=1,role=web", ["switch", "plan"])
    assert scope_of(scope.stored()) == scope
    assert scope.stored() == {
        "hosts": ["db-01", "web-01"],
        "labels": "role=web,tier=1",
        "kinds": ["plan", "switch"],
    }


@pytest.mark.parametrize("bad", ["0d", "367d", "5s", "d", "1e3d", ""])
def test_a_lifetime_is_bounded_and_spelled_with_a_unit(bad):
    with pytest.raises(ValidationError):
        lifetime_s(bad)


def test_lifetimes_in_minutes_hours_and_days():
    assert [lifetime_s(t) for t in ("90m", "12h", "30d")] == [5400, 43200, 30 * 86400]


def test_bad_hosts_kinds_and_labels_are_refused():
    for parts in ({"hosts": ["-bad-"]}, {"kinds": ["format-disk"]}, {"labels": "a b"}):
        with pytest.raises(ValidationError):
            scope_from(**parts)

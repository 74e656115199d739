"""Which address a request comes from: forwarded headers count only from trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest

from nixfleet.config import load_settings
from nixfleet.core.errors import ConfigError
from nixfleet.security.clientip import client_address, resolve

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_without_trusted_proxies_every_forwarded_header_is_ignored():
    headers = {"x-forwarded-for": "1.2.3.4", "x-real-ip": "5.6.7.8", "forwarded": "for=9.9.9.9"}
    assert client_address("10.1.1.1", headers) == "10.1.1.1"


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored():
    headers = {"x-forwarded-for": "10.0.0.5", "x-forwarded-proto": "https"}
    origin = resolve("203.0.113.7", headers, PROXIES)
    assert origin.address == "203.0.113.7"
    assert origin.proto == ""
    assert not origin.via_proxy


def test_behind_a_trusted_proxy_the_forwarded_client_is_used():
    assert client_address("10.0.0.2", {"x-forwarded-for": "198.51.100.4"}, PROXIES) == (
        "198.51.100.4"
    )


def test_a_forged_left_most_entry_in_a_multi_hop_chain_does_not_choose_the_address():
    # The client sent "X-Forwarded-For: 1.1.1.1"; the edge proxy appended what it saw
    # (198.51.100.4), an inner proxy appended the edge proxy (10.0.0.9).
    headers = {"x-forwarded-for": "1.1.1.1, 198.51.100.4, 10.0.0.9"}
    assert client_address("10.0.0.2", headers, PROXIES) == "198.51.100.4"


def test_a_chain_of_only_trusted_hops_yields_the_left_most():
    headers = {"x-forwarded-for": "10.0.0.7, 10.0.0.9"}
    assert client_address("10.0.0.2", headers, PROXIES) == "10.0.0.7"


def test_garbage_in_the_chain_stops_at_the_last_hop_a_proxy_vouched_for():
    headers = {"x-forwarded-for": "198.51.100.4, not-an-ip, 10.0.0.9"}
    assert client_address("10.0.0.2", headers, PROXIES) == "10.0.0.9"


def test_several_forwarded_for_lines_are_read_as_one_list():
    from starlette.datastructures import Headers

    headers = Headers(
        raw=[(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"198.51.100.4, 10.0.0.9")]
    )
    assert client_address("10.0.0.2", headers, PROXIES) == "198.51.100.4"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('for=1.1.1.1, for=198.51.100.4;proto=https, for="10.0.0.9"', "198.51.100.4"),
        ('for="[2001:db8:cafe::17]:4711";proto=https', "2001:db8:cafe::17"),
        ("For=198.51.100.4:8080;Proto=HTTPS;by=10.0.0.2", "198.51.100.4"),
        ("for=unknown", "10.0.0.2"),
        ("for=_hidden, for=198.51.100.4", "198.51.100.4"),
    ],
)
def test_the_rfc_7239_forwarded_header_is_understood(header, expected):
    assert client_address("10.0.0.2", {"forwarded": header}, PROXIES) == expected


def test_forwarded_takes_precedence_over_x_forwarded_for():
    headers = {"forwarded": "for=198.51.100.4", "x-forwarded-for": "192.0.2.1"}
    assert client_address("10.0.0.2", headers, PROXIES) == "198.51.100.4"


def test_x_real_ip_is_used_when_it_is_the_only_header():
    assert client_address("10.0.0.2", {"x-real-ip": "198.51.100.4"}, PROXIES) == "198.51.100.4"


def test_ipv6_proxies_and_ipv4_mapped_peers_match():
    assert client_address("fd00::1", {"x-forwarded-for": "2001:db8::5"}, PROXIES) == "2001:db8::5"
    assert client_address("::ffff:10.0.0.2", {"x-forwarded-for": "192.0.2.8"}, PROXIES) == (
        "192.0.2.8"
    )


def test_the_scheme_comes_from_a_trusted_proxy_only():
    assert resolve("10.0.0.2", {"x-forwarded-proto": "https"}, PROXIES).proto == "https"
    forwarded = {"forwarded": "for=198.51.100.4;proto=https"}
    assert resolve("10.0.0.2", forwarded, PROXIES).proto == "https"
    assert resolve("192.0.2.1", forwarded, PROXIES).proto == ""


def test_an_unknown_peer_is_an_empty_address():
    assert client_address(None, {"x-forwarded-for": "1.2.3.4"}, PROXIES) == ""


def test_trusted_proxies_are_addresses_and_networks(monkeypatch):
    monkeypatch.setenv("NIXFLEET_DEMO", "true")
    monkeypatch.setenv("NIXFLEET_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8 fd00::/8")
    assert [str(n) for n in load_settings().trusted_networks] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "fd00::/8",
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NIXFLEET_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example.org"),
        ("NIXFLEET_RATE_LIMIT_LOGIN", "lots"),
        ("NIXFLEET_RATE_LIMIT_STORAGE", "floppy://a"),
    ],
)
def test_a_bad_proxy_or_rate_setting_fails_start_up_with_one_line(monkeypatch, name, value):
    monkeypatch.setenv("NIXFLEET_DEMO", "true")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"config: {name}: ")
    assert "\n" not in message

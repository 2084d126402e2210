"""Which targets a webhook may reach: URL shapes, and the addresses a name resolves to."""

from __future__ import annotations

import random
import re

import pytest

from ledgerq.shared.webhook_targets import AllowList, TargetRefused, check_target
from ledgerq.webhooks.store import RetryPolicy

PUBLIC = AllowList.parse("*")


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host}: no such name")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.7",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::5",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:5",  # NAT64 of 10.0.0.5
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:0:127.0.0.1",  # IPv4-translated
        "fec0::1",  # site-local
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
def test_private_loopback_and_link_local_are_refused_literally_and_through_a_name(address: str) -> None:
    shown = f"[{address}]" if ":" in address else address
    with pytest.raises(TargetRefused, match="LEDGERQ_WEBHOOK_ALLOW_HOSTS"):
        check_target(f"http://{shown}/hook", PUBLIC)
    with pytest.raises(TargetRefused, match=re.escape(address)):
        check_target("https://innocent.example/hook", PUBLIC, resolver({"innocent.example": [address]}))


def test_a_public_name_is_allowed_with_the_addresses_it_resolved_to() -> None:
    target = check_target("https://hooks.example:8443/x?y=1", PUBLIC, resolver({"hooks.example": ["93.184.216.34"]}))
    assert (target.scheme, target.host, target.port, target.addresses) == (
        "https",
        "hooks.example",
        8443,
        ("93.184.216.34",),
    )


def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    both = resolver({"split.example": ["93.184.216.34", "10.1.1.1"]})
    with pytest.raises(TargetRefused, match=re.escape("10.1.1.1")):
        check_target("https://split.example/", PUBLIC, both)


def test_listed_names_addresses_and_networks_are_allowed_even_when_private() -> None:
    allow = AllowList.parse(" *, receiver.internal ,*.corp.example, 10.20.0.0/16, ::1 ")
    names = resolver({"receiver.internal": ["10.9.9.9"], "a.corp.example": ["192.168.0.4"], "n": ["10.20.3.4"]})
    assert check_target("http://receiver.internal/", allow, names).addresses == ("10.9.9.9",)
    assert check_target("http://a.corp.example/", allow, names).addresses == ("192.168.0.4",)
    assert check_target("http://n/", allow, names).addresses == ("10.20.3.4",)
    assert check_target("http://[::1]:9/", allow).addresses == ("::1",)
    with pytest.raises(TargetRefused):
        check_target("http://10.21.0.1/", allow)
    with pytest.raises(TargetRefused):  # the suffix is a domain, not a string match
        check_target("http://evilcorp.example/", allow, resolver({"evilcorp.example": ["192.168.0.4"]}))


def test_without_a_star_only_what_is_listed() -> None:
    allow = AllowList.parse("127.0.0.1")
    assert check_target("http://127.0.0.1:8080/", allow).addresses == ("127.0.0.1",)
    with pytest.raises(TargetRefused):
        check_target("https://hooks.example/", allow, resolver({"hooks.example": ["93.184.216.34"]}))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///nohost", "no host"),
        ("https://example.com/#frag", "fragment"),
        ("http://example.com:99999/", "port"),
        ("http://" + "a" * 2050 + ".com/", "longer than"),
        ("https://example.com/a\x00b", "control characters"),
        ("https://exa\tmple.com/", "control characters"),
        ("https://example.com/ x", "spaces"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(TargetRefused, match=why):
        check_target(url, PUBLIC, resolver({}))


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(TargetRefused, match="does not resolve"):
        check_target("https://nowhere.example/", PUBLIC, resolver({}))


def test_backoff_doubles_is_capped_and_jittered_within_half() -> None:
    policy = RetryPolicy(attempts_max=10, age_s_max=3600, backoff_s=2, backoff_s_max=60)
    rng = random.Random(7)
    for n, full in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (40, 60), (500, 60)]:
        delays = [policy.retry_in_s(n, rng) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (n, min(delays), max(delays))
        assert max(delays) - min(delays) > full / 4  # jittered, not one value

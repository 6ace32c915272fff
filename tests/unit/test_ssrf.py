"""The SSRF policy, table-tested: URL shapes, address kinds, the allow-list, resolution."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from streams.errors import ConfigError, Permanent, Retryable
from streams.jobs.ssrf import (
    AllowList,
    TargetRefused,
    is_allowed_port,
    non_public_kind,
    parse_target,
    resolve_and_vet,
    vet_addresses,
)

NO_ALLOW = AllowList()

# --- address kinds -----------------------------------------------------------------------

NON_PUBLIC = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"),  # "this network"
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "shared"),  # carrier-grade NAT
    ("100.127.255.254", "shared"),
    ("192.0.0.8", "special-purpose"),  # IETF protocol assignments
    ("192.0.0.9", "special-purpose"),
    ("192.0.2.10", "private"),  # TEST-NET-1
    ("198.18.0.1", "private"),  # benchmarking
    ("198.51.100.7", "private"),  # TEST-NET-2
    ("203.0.113.9", "private"),  # TEST-NET-3
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),  # broadcast
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),  # unique local
    ("fec0::1", "site-local"),  # deprecated site-local (global to Python 3.11's stdlib)
    ("feff::1", "site-local"),
    ("fef0:1234::5", "site-local"),
    ("fd12:3456:789a::1", "private"),
    ("ff02::1", "multicast"),
    ("ff05::2", "multicast"),
    ("2001:db8::1", "private"),  # documentation
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private"),  # Teredo
    ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated)
    ("100::1", "reserved"),  # discard-only
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.1",  # just above
    "100.63.255.255",  # just below 100.64/10
    "100.128.0.1",
    "192.88.99.1",
    "2606:4700:4700::1111",
    "2a00:1450:4007:80e::200e",
    "::ffff:8.8.8.8",  # mapped public
    "64:ff9b::808:808",  # NAT64 of a public address
    "2001:4860::8888",  # global unicast, far from fec0::/10
]


@pytest.mark.parametrize(("address", "kind"), NON_PUBLIC)
def test_non_public_addresses_are_classified(address: str, kind: str) -> None:
    assert non_public_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert non_public_kind(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("address", "kind"), NON_PUBLIC)
def test_vet_refuses_every_non_public_address_with_the_documented_message(
    address: str, kind: str
) -> None:
    with pytest.raises(TargetRefused) as info:
        vet_addresses("hooks.example.com", [address], NO_ALLOW)
    shown = str(ipaddress.ip_address(address))
    assert str(info.value) == (
        f"url: target hooks.example.com resolves to private address {shown} ({kind}); "
        "allow-list it in STREAMS_WEBHOOK_ALLOW_HOSTS to permit"
    )
    assert isinstance(info.value, Permanent)


def test_one_private_address_among_public_ones_refuses_the_target() -> None:
    with pytest.raises(TargetRefused, match=r"private address 10\.0\.0\.7"):
        vet_addresses("mixed.example.com", ["93.184.215.14", "10.0.0.7", "8.8.8.8"], NO_ALLOW)


def test_vet_returns_distinct_addresses_in_resolver_order() -> None:
    vetted = vet_addresses("a.example.com", ["8.8.8.8", "1.1.1.1", "8.8.8.8"], NO_ALLOW)
    assert vetted == ("8.8.8.8", "1.1.1.1")


def test_vet_normalizes_address_text() -> None:
    assert vet_addresses("v6.example.com", ["2606:4700:4700:0::1111"], NO_ALLOW) == (
        "2606:4700:4700::1111",
    )


def test_vet_refuses_non_addresses_and_retries_an_empty_answer() -> None:
    with pytest.raises(TargetRefused, match="non-address"):
        vet_addresses("weird.example.com", ["not-an-ip"], NO_ALLOW)
    with pytest.raises(Retryable, match="no address"):
        vet_addresses("empty.example.com", [], NO_ALLOW)


# --- the allow-list -------------------------------------------------------------------------


def test_allow_list_parses_hosts_ips_and_cidrs() -> None:
    allow = AllowList.parse(" Hooks.Internal. , 10.0.0.0/8,127.0.0.1, [::1], fd00::/8 ,, ")
    assert allow.hosts == frozenset({"hooks.internal"})
    assert [str(n) for n in allow.networks] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
        "fd00::/8",
    ]


def test_empty_allow_list() -> None:
    assert AllowList.parse("") == AllowList()
    assert AllowList.parse(" , ") == AllowList()


@pytest.mark.parametrize("entry", ["not a host", "http://x", "a..b", "-bad.example", "x/y"])
def test_allow_list_rejects_entries_that_are_neither_host_ip_nor_cidr(entry: str) -> None:
    with pytest.raises(ConfigError, match="webhook_allow_hosts"):
        AllowList.parse(f"ok.example, {entry}")


ALLOW_CASES = [
    # (allow-list, host, addresses, allowed)
    ("127.0.0.1", "127.0.0.1", ["127.0.0.1"], True),
    ("127.0.0.1", "localhost", ["127.0.0.1"], True),  # the address is allow-listed
    ("127.0.0.1", "localhost", ["127.0.0.1", "::1"], False),  # ::1 is not
    ("127.0.0.0/8, ::1", "localhost", ["127.0.0.1", "::1"], True),
    ("localhost", "localhost", ["127.0.0.1", "::1"], True),  # the host is allow-listed
    ("LOCALHOST.", "localhost", ["127.0.0.1"], True),
    ("hooks.internal", "other.internal", ["10.0.0.5"], False),
    ("hooks.internal", "sub.hooks.internal", ["10.0.0.5"], False),  # exact names only
    ("10.0.0.0/24", "svc.internal", ["10.0.0.5"], True),
    ("10.0.0.0/24", "svc.internal", ["10.0.1.5"], False),
    ("10.0.0.0/24", "svc.internal", ["::ffff:10.0.0.5"], True),  # mapped form is covered
    ("169.254.169.254", "metadata", ["169.254.169.254"], True),
    ("fd00::/8", "v6.internal", ["fd00::5"], True),
    ("fd00::/8", "v6.internal", ["fc00::5"], False),
    ("", "public.example", ["8.8.8.8"], True),
]


@pytest.mark.parametrize(("allow", "host", "addresses", "allowed"), ALLOW_CASES)
def test_allow_list_lifts_the_address_rule(
    allow: str, host: str, addresses: list[str], allowed: bool
) -> None:
    policy = AllowList.parse(allow)
    if allowed:
        assert vet_addresses(host, addresses, policy) == tuple(
            str(ipaddress.ip_address(a)) for a in addresses
        )
    else:
        with pytest.raises(TargetRefused, match="allow-list it in STREAMS_WEBHOOK_ALLOW_HOSTS"):
            vet_addresses(host, addresses, policy)


# --- URL shapes -----------------------------------------------------------------------------

GOOD_URLS = [
    ("https://hooks.example.com/in", "https", "hooks.example.com", 443),
    ("http://hooks.example.com/in?x=1", "http", "hooks.example.com", 80),
    ("HTTPS://Hooks.Example.COM./in", "https", "hooks.example.com", 443),
    ("http://hooks.example.com:8080/in", "http", "hooks.example.com", 8080),
    ("https://hooks.example.com:65535/", "https", "hooks.example.com", 65535),
    ("http://127.0.0.1:1024/", "http", "127.0.0.1", 1024),
    ("http://[::1]:8443/", "http", "::1", 8443),
    ("https://bücher.example/hook", "https", "xn--bcher-kva.example", 443),
    ("https://under_score.example.com/", "https", "under_score.example.com", 443),
]


@pytest.mark.parametrize(("url", "scheme", "host", "port"), GOOD_URLS)
def test_parse_target_accepts(url: str, scheme: str, host: str, port: int) -> None:
    target = parse_target(url)
    assert (target.scheme, target.host, target.port) == (scheme, host, port)


BAD_URLS = [
    ("", "url: empty"),
    ("   ", "url: empty"),
    ("ftp://files.example.com/x", "scheme 'ftp' not allowed"),
    ("file:///etc/passwd", "scheme 'file' not allowed"),
    ("gopher://127.0.0.1:70/", "scheme 'gopher' not allowed"),
    ("javascript:alert(1)", "scheme 'javascript' not allowed"),
    ("hooks.example.com/in", "scheme '(none)' not allowed"),
    ("http:///path-only", "missing host"),
    ("http://user:pw@hooks.example.com/", "credentials"),
    ("http://token@hooks.example.com/", "credentials"),
    ("http://hooks.example.com:22/", "port 22 not allowed"),
    ("http://hooks.example.com:25/", "port 25 not allowed"),
    ("http://hooks.example.com:0/", "port 0 not allowed"),
    ("http://hooks.example.com:1023/", "port 1023 not allowed"),
    ("http://hooks.example.com:99999/", "malformed"),
    ("http://hooks.example.com:abc/", "malformed"),
    ("http://hooks example.com/", "whitespace or control"),
    ("http://hooks.example.com/\r\nX-Injected: 1", "whitespace or control"),
    ("http://127.1/", "not a canonical IP address"),
    ("http://2130706433/", "not a canonical IP address"),
    ("http://0x7f.0.0.1/", "not a canonical IP address"),
    ("http://017700000001/", "not a canonical IP address"),
    ("http://[fe80::1%25eth0]/", "zone identifiers"),
    ("http://bad_-.exa$mple.com/", "not a valid host name"),
    ("http://" + "a" * 2100 + ".com/", "longer than 2048"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_parse_target_refuses_with_a_url_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused) as info:
        parse_target(url)
    assert str(info.value).startswith("url: ")
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("port", "allowed"),
    [
        (80, True),
        (443, True),
        (1024, True),
        (8080, True),
        (65535, True),
        (0, False),
        (21, False),
        (22, False),
        (25, False),
        (53, False),
        (445, False),
        (1023, False),
        (65536, False),
    ],
)
def test_port_policy(port: int, allowed: bool) -> None:
    assert is_allowed_port(port) is allowed


# --- resolution ------------------------------------------------------------------------------


class FakeResolver:
    """Answers from a table and records each lookup."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


async def test_resolve_and_vet_resolves_once_and_returns_vetted_addresses() -> None:
    resolver = FakeResolver({"hooks.example.com": ["93.184.215.14", "2606:4700::1"]})
    target = parse_target("https://hooks.example.com/in")
    assert await resolve_and_vet(target, resolver, NO_ALLOW) == ("93.184.215.14", "2606:4700::1")
    assert resolver.calls == [("hooks.example.com", 443)]


async def test_ip_literals_are_not_resolved() -> None:
    resolver = FakeResolver({})
    with pytest.raises(TargetRefused, match=r"private address 169\.254\.169\.254"):
        await resolve_and_vet(parse_target("http://169.254.169.254/"), resolver, NO_ALLOW)
    with pytest.raises(TargetRefused, match="private address ::1"):
        await resolve_and_vet(parse_target("http://[::1]:8080/"), resolver, NO_ALLOW)
    assert await resolve_and_vet(parse_target("http://8.8.8.8/"), resolver, NO_ALLOW) == (
        "8.8.8.8",
    )
    assert resolver.calls == []


async def test_a_name_pointing_at_metadata_is_refused() -> None:
    resolver = FakeResolver({"evil.example.com": ["169.254.169.254"]})
    with pytest.raises(TargetRefused) as info:
        await resolve_and_vet(parse_target("http://evil.example.com/"), resolver, NO_ALLOW)
    assert str(info.value) == (
        "url: target evil.example.com resolves to private address 169.254.169.254 "
        "(link-local); allow-list it in STREAMS_WEBHOOK_ALLOW_HOSTS to permit"
    )


async def test_dns_failure_is_retryable_not_permanent() -> None:
    with pytest.raises(Retryable, match=r"cannot resolve nowhere\.example\.com") as info:
        await resolve_and_vet(
            parse_target("http://nowhere.example.com/"), FakeResolver({}), NO_ALLOW
        )
    assert not isinstance(info.value, Permanent)

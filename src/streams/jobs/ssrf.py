"""SSRF policy for outbound webhooks: which URLs and addresses a webhook may reach.

Pure policy (no sockets): the caller injects the resolver. The rules:

- Schemes: ``http`` and ``https`` only.
- Ports: 80, 443 and the unprivileged range 1024-65535. Other privileged ports (22 ssh,
  25 smtp, 53 dns, 110/143 mail, 389 ldap, ...) are refused: a webhook body POSTed to
  them is a cross-protocol attack, never a webhook.
- No credentials in the URL (``user:pass@host``): they would leak into logs and messages.
- A target is refused when ANY of its resolved addresses is not public: private (RFC 1918,
  unique-local ``fc00::/7``, deprecated site-local ``fec0::/10``), loopback, link-local
  (incl. the cloud metadata address ``169.254.169.254``, ``fe80::/10``), multicast,
  reserved, unspecified, shared (``100.64.0.0/10``), documentation/benchmark ranges, and
  IPv6 forms that embed such an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
  ``64:ff9b::/96``, 6to4 ``2002::/16``). Refusing on ANY (not only the first) address
  closes the "one public + one private A record" trick.
- The allow-list (``STREAMS_WEBHOOK_ALLOW_HOSTS``: exact host names, IP addresses or
  CIDRs, comma-separated) lifts the address rule: an allow-listed host name permits all
  its addresses; an allow-listed IP/CIDR permits the addresses it covers. It does not
  lift the scheme, port or credential rules.

The addresses vetted here must be the ones connected to (no second DNS lookup), or a
rebinding DNS server could answer differently the second time: the webhook job pins its
connection to them (see ``webhook.py``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from yarl import URL

from streams.errors import ConfigError, Permanent, Retryable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (host, port) -> IP address strings; raises OSError (socket.gaierror) when it cannot.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

ALLOWED_SCHEMES = ("http", "https")
ALLOWED_PRIVILEGED_PORTS = frozenset({80, 443})
MIN_UNPRIVILEGED_PORT = 1024
MAX_URL_CHARS = 2048
ALLOW_HOSTS_ENV = "STREAMS_WEBHOOK_ALLOW_HOSTS"

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
# Deprecated site-local (RFC 3879): the stdlib of Python 3.11 calls fec0::1 and feff::1 global.
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
# IETF protocol assignments: the stdlib (3.11 patch-dependent) calls parts of it global.
_SPECIAL = ipaddress.IPv4Network("192.0.0.0/24")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


class TargetRefused(Permanent):
    """The URL or its addresses break the SSRF policy; the message starts with ``url:``."""


@dataclass(frozen=True)
class Target:
    """A parsed, policy-checked webhook URL (addresses not yet resolved)."""

    url: URL
    scheme: str
    host: str  # lower-case, no trailing dot, no IPv6 brackets
    port: int


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks allowed despite resolving to non-public addresses."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """From ``"hooks.internal, 10.0.0.0/8, 127.0.0.1, ::1"``.

        Raises ConfigError naming the entry that is neither a host name, an IP nor a CIDR.
        """
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = normalize_host(entry)
            if not _HOSTNAME.match(name):
                raise ConfigError(
                    f"webhook_allow_hosts: {entry!r} is not a host name, IP address or CIDR"
                )
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return normalize_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.networks
        )


def normalize_host(host: str) -> str:
    """Lower-case, without IPv6 brackets and without the trailing dot of an FQDN."""
    return host.strip().strip("[]").rstrip(".").lower()


def parse_target(url: str) -> Target:
    """Check a webhook URL's shape (scheme, host, port, no credentials).

    Raises TargetRefused("url: ...") when malformed or outside the policy.
    """
    if not isinstance(url, str) or not url.strip():
        raise TargetRefused("url: empty")
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"url: longer than {MAX_URL_CHARS} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise TargetRefused("url: contains whitespace or control characters")
    try:
        parsed = URL(url)
        host = parsed.raw_host  # IDNA-encoded (punycode): what DNS and aiohttp see
        port = parsed.port
    except (ValueError, UnicodeError) as exc:
        raise TargetRefused(f"url: malformed ({exc})") from None
    scheme = parsed.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise TargetRefused(f"url: scheme {scheme or '(none)'!r} not allowed; use http or https")
    if not host:
        raise TargetRefused("url: missing host")
    if parsed.user is not None or parsed.password is not None:
        raise TargetRefused("url: credentials in the URL are not allowed")
    if port is None or not is_allowed_port(port):
        raise TargetRefused(
            f"url: port {port} not allowed; use 80, 443 or a port in {MIN_UNPRIVILEGED_PORT}-65535"
        )
    name = normalize_host(host)
    if "%" in name:
        raise TargetRefused("url: IPv6 zone identifiers are not allowed")
    if literal_address(name) is None:
        if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
            # 127.1, 2130706433, 0x7f.1: legacy numeric forms the C resolver maps onto
            # addresses; refuse rather than guess how a resolver reads them.
            raise TargetRefused(f"url: host {name!r} is not a canonical IP address")
        if not _HOSTNAME.match(name):
            raise TargetRefused(f"url: host {name!r} is not a valid host name")
    return Target(url=parsed, scheme=scheme, host=name, port=port)


def is_allowed_port(port: int) -> bool:
    """80, 443 or unprivileged (1024-65535)."""
    return port in ALLOWED_PRIVILEGED_PORTS or MIN_UNPRIVILEGED_PORT <= port <= 65535


def literal_address(host: str) -> IPAddress | None:
    """The host as an IP address when it is a canonical IP literal, else None."""
    try:
        return ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return None


def non_public_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address ("loopback", ...), or None if it is.

    IPv6 addresses embedding an IPv4 address (mapped, NAT64, 6to4) are judged by the
    embedded address too.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _kind_of(address.ipv4_mapped)
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            return _kind_of(embedded)
        if address.sixtofour is not None:
            return _kind_of(address.sixtofour) or _kind_of(address)
    return _kind_of(address)


def _kind_of(address: IPAddress) -> str | None:
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address in _SITE_LOCAL),
        ("special-purpose", isinstance(address, ipaddress.IPv4Address) and address in _SPECIAL),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-global", not address.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def vet_addresses(host: str, addresses: Iterable[str], allow: AllowList) -> tuple[str, ...]:
    """The distinct addresses (in order) if all may be reached, else TargetRefused.

    Raises TargetRefused when an entry is not an IP address, when there is none, or when
    ANY address is non-public and neither ``host`` nor the address is allow-listed.
    """
    vetted: list[str] = []
    host_allowed = allow.allows_host(host)
    for raw in addresses:
        try:
            address = ipaddress.ip_address(raw.split("%", 1)[0])
        except ValueError:
            raise TargetRefused(f"url: target {host} resolved to non-address {raw!r}") from None
        kind = non_public_kind(address)
        if kind is not None and not host_allowed and not allow.allows_address(address):
            raise TargetRefused(
                f"url: target {host} resolves to private address {address} ({kind}); "
                f"allow-list it in {ALLOW_HOSTS_ENV} to permit"
            )
        text = str(address)
        if text not in vetted:
            vetted.append(text)
    if not vetted:
        raise Retryable(f"url: target {host} resolved to no address")
    return tuple(vetted)


async def resolve_and_vet(target: Target, resolve: Resolver, allow: AllowList) -> tuple[str, ...]:
    """Resolve ``target.host`` once (IP literals are not resolved) and vet every address.

    Raises TargetRefused (permanent) per ``vet_addresses``; Retryable when the name does
    not resolve (DNS failures are often transient).
    """
    literal = literal_address(target.host)
    if literal is not None:
        return vet_addresses(target.host, [str(literal)], allow)
    try:
        addresses = await resolve(target.host, target.port)
    except OSError as exc:
        raise Retryable(f"url: cannot resolve {target.host}: {exc}") from None
    return vet_addresses(target.host, addresses, allow)

"""Where a webhook may deliver: the URL's shape, and the addresses its host resolves to.

Checked when an endpoint is created (a clear 422) and again before every attempt, on the addresses
resolved then: the attempt connects to an address that passed, so a name that later resolves to a
private address (DNS rebinding) cannot smuggle a delivery inside. Redirects are never followed.

`LEDGERQ_WEBHOOK_ALLOW_HOSTS` is a comma-separated list: `*` allows any public address; a host
name (`receiver.internal`, `*.corp.example`), an address or a network (`10.1.0.0/16`) allows
that target even where it is private, loopback or link-local. Without `*`, only what is listed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

URL_CHARS_MAX = 2_048


class TargetRefused(ValueError):
    """The URL or its addresses are not allowed; the message says which rule refused it."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # as written, lower case, without brackets
    port: int
    addresses: tuple[str, ...]  # allowed addresses, in the resolver's order


@dataclass(frozen=True)
class AllowList:
    public: bool
    names: frozenset[str]
    suffixes: tuple[str, ...]  # from `*.example.com` entries: ".example.com"
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, setting: str) -> AllowList:
        public, names, suffixes, networks = False, set(), [], []
        for raw in filter(None, (part.strip().lower() for part in setting.split(","))):
            if raw == "*":
                public = True
            elif raw.startswith("*."):
                suffixes.append(raw[1:])
            else:
                try:
                    networks.append(ipaddress.ip_network(raw.strip("[]"), strict=False))
                except ValueError:
                    names.add(raw)
        return cls(public, frozenset(names), tuple(suffixes), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def allows_address(self, address: Address) -> bool:
        if any(address in network for network in self.networks):
            return True
        return self.public and is_public(address)


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
NOT_PUBLIC_V6 = (ipaddress.ip_network("fec0::/10"),)  # site-local: deprecated, yet routed inside some networks


def is_public(address: Address) -> bool:
    """A global unicast address, and so is every IPv4 address it carries (an IPv6 address can embed
    one: IPv4-mapped or -translated, 6to4, Teredo, NAT64, IPv4-compatible: `[64:ff9b::a00:5]` reaches 10.0.0.5)."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    if any(address in network for network in NOT_PUBLIC_V6):
        return False
    embedded: list[ipaddress.IPv4Address | None] = [address.ipv4_mapped, address.sixtofour]
    if address.teredo:
        embedded += list(address.teredo)
    if any(address in network for network in (*NAT64, IPV4_COMPATIBLE, IPV4_TRANSLATED)):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(v4.is_global and not v4.is_multicast for v4 in embedded if v4 is not None)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_url(url: str) -> SplitResult:
    """The URL's parts, or TargetRefused saying what is wrong with its shape."""
    if len(url) > URL_CHARS_MAX:
        raise TargetRefused(f"the URL is longer than {URL_CHARS_MAX} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):  # urlsplit would drop some silently
        raise TargetRefused("the URL may not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must be http:// or https://")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL may not carry credentials (user:password@)")
    if parts.fragment:
        raise TargetRefused("the URL may not have a #fragment")
    try:
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError as exc:
        raise TargetRefused(f"the URL's port is invalid: {exc}") from exc
    return parts


def check_target(url: str, allow: AllowList, resolve: Resolver = system_resolver) -> Target:
    """The target with the addresses a delivery may connect to, or TargetRefused."""
    parts = parse_url(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [str(literal)]
    else:
        try:
            found = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise TargetRefused(f"{host} does not resolve: {exc}") from exc
    if literal is None and allow.allows_name(host):
        return Target(url, parts.scheme, host, port, tuple(found))
    allowed = tuple(a for a in found if allow.allows_address(ipaddress.ip_address(a.split("%")[0])))
    if len(allowed) < len(found) or not allowed:
        refused = sorted(set(found) - set(allowed))
        raise TargetRefused(
            f"{host} resolves to {', '.join(refused) or 'nothing'}, which LEDGERQ_WEBHOOK_ALLOW_HOSTS does not allow"
            " (private, loopback and link-local addresses must be listed)"
        )
    return Target(url, parts.scheme, host, port, allowed)

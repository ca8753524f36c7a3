"""EgressPolicy: where the tools' outbound requests (HttpRequest, WebSearch, an agent's fetch_url and web_search) may
go, and how much each may take: the operator's allowlist (GITOPS_FLOW_ALLOWED_FETCH_URLS) and the egress bounds.

An entry of the allowlist is one of:

- a URL prefix, ``https://api.example.com/v1``: that scheme, host and port, and paths at or under that path;
- a host, ``example.com`` or ``example.com:8443``: that host on ports 80 and 443 (or on the port named);
- a wildcard, ``*.example.com`` (its subdomains) or ``*`` (any host): ports 80 and 443, public addresses only;
- an address or a network, ``10.1.2.3``, ``10.0.0.0/8``, ``::1``: URLs whose host is an address in it (ports 80 and
  443), and those addresses for a host another entry allows.

A request is checked twice: its URL against the entries (``check_url``), and every address its host resolves to
against the same entries (``check_address``), once DNS has answered and before anything connects. An address that
is not public (private, loopback, link-local, shared, reserved, multicast, unspecified) is refused unless an entry
names it or names the host explicitly (a URL prefix or a host entry, never a wildcard): an allowed public name that
resolves to 127.0.0.1 or to 169.254.169.254 reaches nothing. ``localhost`` and ``*.localhost`` are loopback by
definition (RFC 6761), so a URL naming them is judged as one naming 127.0.0.1, without asking DNS.

The policy is pure: it resolves nothing and connects to nothing (components/http_fetch.py does, connecting to the
very address checked here). No entry: every outbound request is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gitops_flow.exceptions import EgressRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,62}[a-z0-9_])?)*$")
_LOOPBACK_NAMES = ("localhost",)  # RFC 6761: the name and every name under it are loopback
_LOOPBACK = ipaddress.ip_address("127.0.0.1")
TAVILY_URL = "https://api.tavily.com"  # Tavily's API (docs.tavily.com): web search's default endpoint


@dataclass(frozen=True, slots=True)
class EgressLimits:
    """What one outbound request, and one run's requests, may take: ``timeout`` seconds for a request and its
    redirects together, ``max_bytes`` of a response's body (the rest is cut, and the answer says so),
    ``max_redirects`` hops followed, ``max_requests`` requests (redirects included) per run of a flow, all its
    tools together."""

    timeout: float = 10.0
    max_bytes: int = 1024 * 1024
    max_redirects: int = 5
    max_requests: int = 20


@dataclass(frozen=True, slots=True)
class Target:
    """A URL split as the policy judges it: scheme and host in lower case (an address in its normal form), the
    port made explicit; ``address`` when the host is an IP address."""

    scheme: str
    host: str
    port: int
    path: str
    address: IPAddress | None = None

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises EgressRefused naming what is wrong with ``url`` (never quoting it: it may hold a credential)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise EgressRefused("the URL is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise EgressRefused(f"only http and https URLs are fetched, not {scheme or 'a URL without a scheme'!r}")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise EgressRefused("a URL with credentials in it (user:password@) is never fetched")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise EgressRefused("the URL names no host")
        address = _address(host)
        if address is None and not _HOST.match(host):
            raise EgressRefused(f"{host[:100]!r} is not a host name")
        shown = str(address) if address is not None else host
        return cls(scheme, shown, port or DEFAULT_PORTS[scheme], parts.path or "/", address)

    @property
    def loopback_name(self) -> bool:
        return any(self.host == name or self.host.endswith("." + name) for name in _LOOPBACK_NAMES)

    def origin(self) -> str:
        """``scheme://host[:port]``, as the refusals name it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the allowlist (see the module's docstring); ``explicit`` when it names a host or an address
    itself (such an entry may reach addresses that are not public)."""

    text: str
    scheme: str | None = None
    host: str | None = None  # an exact host; None for a wildcard or a network
    suffix: str | None = None  # "*.example.com": ".example.com"; "*": ""
    network: IPNetwork | None = None
    ports: tuple[int, ...] = (80, 443)
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Entry:
        """Raises ValueError naming what is wrong with the entry."""
        entry = text.strip()
        if "://" in entry:
            return cls._url(entry)
        if entry == "*":
            return cls(entry, suffix="")
        try:
            return cls(entry, network=ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            pass
        host, port = _host_port(entry)
        if host.startswith("*."):
            if not _HOST.match(host[2:]):
                raise ValueError(f"{text!r} is not '*.domain' with a host name after '*.'")
            return cls(entry, suffix=host[1:], ports=port or (80, 443))
        if not _HOST.match(host):
            raise ValueError(f"{text!r} is not a URL prefix, a host, '*.domain', '*', an address or a network")
        return cls(entry, host=host, ports=port or (80, 443))

    @classmethod
    def _url(cls, text: str) -> Entry:
        try:
            target = Target.parse(text)
        except EgressRefused as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        parts = urlsplit(text)
        if parts.query or parts.fragment:
            raise ValueError(f"{text!r}: a URL prefix has no query or fragment")
        return cls(text, scheme=target.scheme, host=target.host, ports=(target.port,), path=target.path.rstrip("/"))

    @property
    def explicit(self) -> bool:
        return self.host is not None or self.network is not None

    def allows(self, target: Target) -> bool:
        """Whether the URL (before any address is known) is one this entry lets through."""
        if target.port not in self.ports or (self.scheme is not None and target.scheme != self.scheme):
            return False
        if self.path and not (target.path == self.path or target.path.startswith(self.path + "/")):
            return False
        if self.network is not None:
            return target.address is not None and target.address in self.network
        if self.host is not None:
            return target.host == self.host
        assert self.suffix is not None
        return self.suffix == "" or (target.address is None and target.host.endswith(self.suffix))

    def covers(self, address: IPAddress) -> bool:
        return self.network is not None and address in self.network

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The operator's allowlist and bounds. ``check_url`` and ``check_address`` raise EgressRefused naming the host
    and why; a URL passes when one entry allows it and every address its host has passes ``check_address``."""

    entries: tuple[Entry, ...] = ()
    limits: EgressLimits = field(default_factory=EgressLimits)
    search_url: str = TAVILY_URL  # where WebSearch and web_search ask: the operator's choice, never a flow's

    @classmethod
    def parse(
        cls, entries: Iterable[str], limits: EgressLimits | None = None, search_url: str = TAVILY_URL
    ) -> EgressPolicy:
        """Raises ValueError naming a wrong entry."""
        return cls(tuple(Entry.parse(e) for e in entries if e.strip()), limits or EgressLimits(), search_url)

    def check_url(self, url: str) -> Target:
        """The URL's target, when an entry allows it and its host (an address, or a loopback name) is one it may
        reach; EgressRefused otherwise. Addresses of a host name are checked once resolved (``check_address``)."""
        target = Target.parse(url)
        if not self.entries:
            raise EgressRefused(
                f"outbound requests are off on this server, so {target.origin()} is not fetched "
                "(GITOPS_FLOW_ALLOWED_FETCH_URLS allows none)",
                host=target.host,
            )
        if not any(entry.allows(target) for entry in self.entries):
            # the entries are not listed: this message reaches clients and models, and names of internal hosts
            # are the operator's to know (validation, for the flow's authors, lists them)
            raise EgressRefused(
                f"{target.origin()} is not allowed here by GITOPS_FLOW_ALLOWED_FETCH_URLS", host=target.host
            )
        if target.address is not None:
            self.check_address(target, target.address)
        elif target.loopback_name:
            self.check_address(target, _LOOPBACK)
        return target

    def check_address(self, target: Target, address: IPAddress) -> None:
        """Refuse ``address`` (one the host of ``target`` resolves to) unless it is public, an entry names it, or
        an entry naming the host itself allows the URL."""
        address = _unmapped(address)
        if public(address) or any(entry.covers(address) for entry in self.entries):
            return
        if any(entry.explicit and entry.network is None and entry.allows(target) for entry in self.entries):
            return
        raise EgressRefused(
            f"{target.host} resolves to {address}, a {_kind(address)} address, which no entry of "
            "GITOPS_FLOW_ALLOWED_FETCH_URLS names",
            host=target.host,
        )

    def describe(self, limit: int = 6) -> str:
        """The entries, for a validation problem's message (authors, not clients): the first ``limit`` and how many
        more."""
        shown = [str(e) for e in self.entries]
        if len(shown) > limit:
            return ", ".join(shown[:limit]) + f" and {len(shown) - limit} more"
        return ", ".join(shown) or "none"


def public(address: IPAddress) -> bool:
    """Whether ``address`` is on the public internet: global, and neither multicast nor unspecified."""
    address = _unmapped(address)
    return address.is_global and not address.is_multicast and not address.is_unspecified


def _unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _kind(address: IPAddress) -> str:
    for name, test in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
    ):
        if test:
            return name
    return "non-public"


def _address(host: str) -> IPAddress | None:
    try:
        return _unmapped(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _host_port(text: str) -> tuple[str, tuple[int, ...] | None]:
    host, sep, port = text.lower().rpartition(":")
    if not sep:
        return text.lower().rstrip("."), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: {port!r} is not a port")
    return host.rstrip("."), (int(port),)

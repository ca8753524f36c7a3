"""SecretPolicy: which environment variables flows may read, which provider each may go to, which base URLs are allowed.

The operator's word on secrets (GITOPS_FLOW_SECRETS and GITOPS_FLOW_ALLOWED_BASE_URLS). An entry of the secrets list
is a name (``OPENAI_API_KEY``), a prefix pattern (``TEAM_*``), either bound to a provider (``TEAM_KEY=openai``). A
name no entry binds is bound to the providers that read it by that name (providers.py), or to none. ``GITOPS_FLOW_*``
is never allowed: those are the server's own credentials.

An allowed base URL is bound to one provider (``openai=https://gw.example.com/v1``): only a model node of that
provider may be pointed at it, so a gateway allowed for one provider's key never receives another's. A URL is
compared in a normal form (scheme and host in lower case, the default port made explicit, no userinfo); a URL that
is not already in that form where it matters (dot segments, encoded slashes, dots or backslashes in its path) is
refused rather than resolved, because a client and a gateway may resolve it differently.

The policy carries the egress policy too (egress.py, GITOPS_FLOW_ALLOWED_FETCH_URLS): where the tools' requests, and
the keys they carry, may go; validation judges a literal URL by it, and a build hands it to the tools.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from gitops_flow.security.egress import EgressPolicy
from gitops_flow.security.providers import PROVIDER_KEYS, default_secret_names, providers_reading

RESERVED_PREFIX = "GITOPS_FLOW_"
_ENTRY = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<star>\*)?(?:=(?P<provider>[a-z0-9_]+))?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BOUND_URL = re.compile(r"^(?P<provider>[a-z0-9_]+)=(?P<url>.+)$")
# in a path: a dot segment, or an encoded '/', '\\' or '.', which a gateway may decode into one
_AMBIGUOUS_PATH = re.compile(r"(^|/)\.\.?(/|$)|%2f|%5c|%2e|\\", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Allowance:
    """One entry of the secrets list: a name, or a prefix when ``prefix`` is set, and the provider it is bound to."""

    name: str
    prefix: bool = False
    provider: str | None = None

    @classmethod
    def parse(cls, text: str) -> Allowance:
        """Raises ValueError naming what is wrong with the entry."""
        found = _ENTRY.match(text.strip())
        if found is None:
            raise ValueError(
                f"{text!r} is not NAME, PREFIX_* or either with =provider (environment variable names only)"
            )
        name, prefix, provider = found["name"], found["star"] is not None, found["provider"]
        if name.startswith(RESERVED_PREFIX) or (prefix and RESERVED_PREFIX.startswith(name)):
            raise ValueError(f"{text!r}: {RESERVED_PREFIX}* variables are the server's own and never given to flows")
        if provider is not None and provider not in PROVIDER_KEYS:
            raise ValueError(f"{text!r}: unknown provider {provider!r}; known: {', '.join(sorted(PROVIDER_KEYS))}")
        return cls(name, prefix, provider)

    def matches(self, name: str) -> bool:
        return name.startswith(self.name) if self.prefix else name == self.name

    def __str__(self) -> str:
        return self.name + ("*" if self.prefix else "") + (f"={self.provider}" if self.provider else "")


@dataclass(frozen=True, slots=True)
class BaseUrl:
    """An allowed base URL: a request may go to it or below it (same scheme, host and port; a path under its path)."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, text: str) -> BaseUrl:
        """Raises ValueError naming what is wrong with the URL."""
        parsed = _split(text)
        if parsed is None:
            raise ValueError(
                f"{text!r} is not an http(s) URL with a host, without credentials, query, fragment, dot segments or "
                "encoded slashes"
            )
        return parsed

    def covers(self, other: BaseUrl) -> bool:
        if (self.scheme, self.host, self.port) != (other.scheme, other.host, other.port):
            return False
        return self.path == "" or other.path == self.path or other.path.startswith(self.path + "/")

    def __str__(self) -> str:
        default = _DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{self.host}{'' if default else f':{self.port}'}{self.path}"


@dataclass(frozen=True, slots=True)
class AllowedUrl:
    """One entry of GITOPS_FLOW_ALLOWED_BASE_URLS: ``provider=URL``, the one provider whose nodes may use the URL."""

    provider: str
    url: BaseUrl

    @classmethod
    def parse(cls, text: str) -> AllowedUrl:
        """Raises ValueError naming what is wrong: a URL bound to no provider (the old syntax) is refused, since it
        would let every provider's key go there."""
        found = _BOUND_URL.match(text.strip())
        if found is None:
            raise ValueError(
                f"{text!r} is bound to no provider: write PROVIDER=URL (e.g. openai=https://gw.example.com/v1), so "
                "that only that provider's nodes, and keys, go to it"
            )
        if found["provider"] not in PROVIDER_KEYS:
            known = ", ".join(sorted(PROVIDER_KEYS))
            raise ValueError(f"{text!r}: unknown provider {found['provider']!r}; known: {known}")
        return cls(found["provider"], BaseUrl.parse(found["url"]))

    def __str__(self) -> str:
        return f"{self.provider}={self.url}"


def _split(text: str) -> BaseUrl | None:
    """The normal form of an http(s) URL, or None for one that is not a plain base URL."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    if parts.query or parts.fragment or "@" in parts.netloc or _AMBIGUOUS_PATH.search(parts.path):
        return None
    host = parts.hostname.lower().rstrip(".")  # "gw.example.com." is the same host
    if not host or "%" in host:
        return None
    return BaseUrl(scheme, host, port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/"))


class SecretPolicy:
    """What flows may do with secrets on this server (and in the CI that checks them): the names they may read,
    the provider each name's credential may go to, the base URLs a model may be pointed at."""

    def __init__(
        self, secrets: Iterable[str] | None = None, base_urls: Iterable[str] = (), *, egress: EgressPolicy | None = None
    ) -> None:
        """``secrets``: entries as in GITOPS_FLOW_SECRETS (None: the provider key names); ``base_urls``: entries
        ``provider=URL`` as in GITOPS_FLOW_ALLOWED_BASE_URLS; ``egress``: where the tools' requests (and the keys
        they carry) may go (None: nowhere). Raises ValueError naming a wrong entry."""
        entries = default_secret_names() if secrets is None else tuple(secrets)
        self.allowances = tuple(Allowance.parse(entry) for entry in entries if entry.strip())
        self.base_urls = tuple(AllowedUrl.parse(url) for url in base_urls if url.strip())
        self.egress = egress or EgressPolicy()

    def allows(self, name: str) -> bool:
        """Whether a flow may read the variable ``name``; never for ``GITOPS_FLOW_*``."""
        return not name.startswith(RESERVED_PREFIX) and any(a.matches(name) for a in self.allowances)

    def providers_for(self, name: str) -> frozenset[str]:
        """The model providers ``name``'s credential may be sent to: those its entries bind it to, else those that
        read it by that name; empty for a name no provider is known to own (operator components only)."""
        bound = frozenset(a.provider for a in self.allowances if a.provider is not None and a.matches(name))
        return bound or providers_reading(name)

    def select(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The allowed variables of ``environ``: all a server builds flows from, so nothing else can be read."""
        return {name: value for name, value in environ.items() if self.allows(name)}

    def allows_base_url(self, url: str, provider: str | None) -> bool:
        """Whether a model node of ``provider`` may be pointed at ``url``: it is, in normal form, at or under a URL
        allowed for that very provider (None, a provider that cannot be told: never)."""
        candidate = _split(url)
        return (
            candidate is not None
            and provider is not None
            and any(allowed.provider == provider and allowed.url.covers(candidate) for allowed in self.base_urls)
        )

    def describe(self, limit: int = 6) -> str:
        """The allowed names, for a problem's message: the first ``limit`` and how many more."""
        shown = [str(a) for a in self.allowances]
        if len(shown) > limit:
            return ", ".join(shown[:limit]) + f" and {len(shown) - limit} more"
        return ", ".join(shown) or "none"

    def describe_base_urls(self) -> str:
        return ", ".join(str(u) for u in self.base_urls) or "none"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretPolicy) and (self.allowances, self.base_urls, self.egress) == (
            other.allowances,
            other.base_urls,
            other.egress,
        )

    def __hash__(self) -> int:
        return hash((self.allowances, self.base_urls, self.egress))

    def __repr__(self) -> str:
        return f"SecretPolicy(secrets=[{self.describe()}], base_urls=[{self.describe_base_urls()}])"

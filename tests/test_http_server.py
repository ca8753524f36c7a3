"""listener.py: the Host policy and the limits `serve` gives uvicorn, from Settings (the behaviour against a real
server is in tests/test_http_bounds.py)."""

from __future__ import annotations

import pytest

from gitops_flow.config import LOOPBACK_HOSTS, Settings
from gitops_flow.exceptions import ConfigError
from gitops_flow.server.listener import BoundedProtocol, HostPolicy, Limits, ServerConfig


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (b"localhost", True),
        (b"LocalHost:8000", True),
        (b"localhost.:8000", True),  # the fully qualified spelling
        (b"127.0.0.1:65535", True),
        (b"[::1]:8000", True),
        (b"[::1]", True),
        (b"api.internal", True),
        (b"a.b.internal:443", True),
        (b"internal", False),  # *.internal is its subdomains only
        (b"evilinternal", False),
        (b"localhost.evil.example", False),
        (b"127.0.0.2", False),
        (b"[::1", False),
        (b"", False),
        (None, False),
    ],
)
def test_a_host_policy_matches_names_without_their_ports(host: bytes | None, allowed: bool) -> None:
    policy = HostPolicy.of((*LOOPBACK_HOSTS, "*.internal"))
    assert policy.allows(host) is allowed


def test_star_allows_any_host_even_none() -> None:
    assert HostPolicy.of(("*",)).allows(None) and HostPolicy.of(("*",)).allows(b"anything:1")


@pytest.mark.parametrize(
    ("listen", "hosts"),
    [
        ("127.0.0.1", LOOPBACK_HOSTS),
        ("127.0.0.53", LOOPBACK_HOSTS),
        ("localhost", LOOPBACK_HOSTS),
        ("::1", LOOPBACK_HOSTS),
        ("0.0.0.0", ("*",)),
        ("10.1.2.3", ("*",)),
        ("::", ("*",)),
        ("flows.internal", ("*",)),
    ],
)
def test_the_default_hosts_follow_the_listening_address(listen: str, hosts: tuple[str, ...]) -> None:
    assert Settings(host=listen).hosts() == hosts


def test_allowed_hosts_come_from_the_environment_as_a_list() -> None:
    settings = Settings.from_env({"GITOPS_FLOW_ALLOWED_HOSTS": " Flows.Example.com, *.internal ,[::1]"})
    assert settings.hosts() == ("flows.example.com", "*.internal", "::1")


@pytest.mark.parametrize("bad", ["", "a.com,", "a*.com", "*.*.com", "https://a.com", "user@a.com", "a com"])
def test_an_allowed_host_that_is_not_a_name_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a host name"):
        Settings.from_env({}, allowed_hosts=bad)


def test_the_limits_are_the_settings() -> None:
    settings = Settings.from_env(
        {
            "GITOPS_FLOW_MAX_HEADER_BYTES": "4096",
            "GITOPS_FLOW_MAX_HEADERS": "20",
            "GITOPS_FLOW_HEADER_TIMEOUT": "2.5",
            "GITOPS_FLOW_BODY_TIMEOUT": "7",
            "GITOPS_FLOW_KEEP_ALIVE_TIMEOUT": "3",
            "GITOPS_FLOW_SEND_TIMEOUT": "9",
            "GITOPS_FLOW_MAX_CONNECTIONS": "50",
        }
    )
    limits = Limits.of(settings)
    assert (limits.max_header_bytes, limits.max_headers, limits.max_connections) == (4096, 20, 50)
    assert (limits.header_timeout, limits.body_timeout, limits.keep_alive_timeout, limits.send_timeout) == (
        2.5,
        7,
        3,
        9,
    )
    config = ServerConfig(object(), settings)
    assert (config.http, config.ws, config.proxy_headers) == (BoundedProtocol, "none", False)
    assert config.limits == limits


@pytest.mark.parametrize(
    "name",
    ["MAX_HEADER_BYTES", "MAX_HEADERS", "HEADER_TIMEOUT", "BODY_TIMEOUT", "MAX_CONNECTIONS", "BATCH_CONCURRENCY"],
)
def test_a_limit_of_zero_is_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({f"GITOPS_FLOW_{name}": "0"})

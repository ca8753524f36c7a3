"""Connections per client address against a real `gitops-flow serve` (issue 21, finding 7): one client reopening
slow connections held every connection slot, and 65 of 70 normal requests failed. Now one address holds at most
``max_client_connections``; a trusted proxy's connections are not counted, and only its X-Forwarded-For is believed.

Every address of 127.0.0.0/8 is this machine, so binding a client socket to 127.0.0.2 plays another client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitops_flow.config import Settings
from gitops_flow.exceptions import ConfigError
from gitops_flow.server.listener import Limits
from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow, wait_until
from tests.test_http_bounds import DEADLINE, head, one_response, port, refusal, until_closed

CAP = 6  # connections one address may hold
TOTAL = 12  # connections the server holds: without the per-address cap, one client takes them all
PROXY = "127.0.0.3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("clients")
    remote = Remote.create(tmp)
    remote.commit({"flows/echo.json": echo_flow()}, "echo")
    remote.push()
    env = {
        "GITOPS_FLOW_MAX_CONNECTIONS": str(TOTAL),
        "GITOPS_FLOW_MAX_CLIENT_CONNECTIONS": str(CAP),
        "GITOPS_FLOW_TRUSTED_PROXIES": f"{PROXY}/32",
        "GITOPS_FLOW_HEADER_TIMEOUT": "1",
        "GITOPS_FLOW_KEEP_ALIVE_TIMEOUT": "1",
    }
    with serve_process(remote, tmp, env=env) as harness:
        harness.client.headers["connection"] = "close"
        yield harness
        assert "Traceback" not in harness.log_text()


def connect_from(server: ServeProcess, address: str) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(DEADLINE)
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port(server)))
    return sock


def get(server: ServeProcess, address: str, *lines: str) -> int:
    """One GET /healthz from ``address`` on a connection of its own; its status."""
    with connect_from(server, address) as sock:
        sock.sendall(head("/healthz", "GET", "Connection: close", *lines))
        return one_response(sock)[0]


def test_one_client_reopening_slow_connections_cannot_starve_the_others(server: ServeProcess) -> None:
    """The reproduction: 127.0.0.1 keeps twice the server's connection limit of slow heads open, reopening each one
    the server lets go, while 127.0.0.2 asks 30 times; every one of its requests is answered."""
    stop = threading.Event()
    refused: list[tuple[int, str]] = []

    def attack() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            while len(held) < 2 * TOTAL:
                sock = connect_from(server, "127.0.0.1")
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                except OSError:
                    pass
                held.append(sock)
            sock = held.pop(0)
            sock.settimeout(0.05)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                held.append(sock)  # still held open by the server: keep it
                continue
            except OSError:
                answer = b""
            if answer:
                refused.append(refusal(answer))
            sock.close()
        for sock in held:
            sock.close()

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        wait_until(lambda: len(refused) >= TOTAL)  # the attack is at its cap
        statuses = []
        for _ in range(30):
            statuses.append(get(server, "127.0.0.2"))
            time.sleep(0.05)
    finally:
        stop.set()
        attacker.join()
    assert statuses == [200] * 30
    assert "too-many-client-connections" in {code for _, code in refused}, refused


def test_past_its_cap_a_client_is_answered_503_naming_the_bound(server: ServeProcess) -> None:
    held = [connect_from(server, "127.0.0.4") for _ in range(CAP)]
    try:
        wait_until(lambda: get(server, "127.0.0.5") == 200)  # the server has taken in the six
        with connect_from(server, "127.0.0.4") as sock:
            status, code = refusal(until_closed(sock))
        assert (status, code) == (503, "too-many-client-connections")
        assert get(server, "127.0.0.5") == 200  # another address is not held to 127.0.0.4's count
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: get(server, "127.0.0.4") == 200)  # closed connections are no longer counted


def test_a_trusted_proxy_is_not_held_to_one_clients_cap_and_names_the_client(server: ServeProcess) -> None:
    held = [connect_from(server, PROXY) for _ in range(CAP + 2)]
    try:
        for sock in held:
            sock.sendall(head("/healthz", "GET", "Connection: close", "X-Forwarded-For: 203.0.113.9"))
        assert [one_response(sock)[0] for sock in held] == [200] * (CAP + 2)
    finally:
        for sock in held:
            sock.close()
    assert get(server, "127.0.0.6", "X-Forwarded-For: 198.51.100.7") == 200
    wait_until(lambda: '203.0.113.9:0 - "GET /healthz' in server.log_text())  # the proxy's word is taken
    log = server.log_text()
    assert "198.51.100.7" not in log  # another address's is not
    assert "127.0.0.6:" in log


@pytest.mark.parametrize(
    ("peer", "counted"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),  # one host's /64 is one client
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("10.1.2.3", None),  # a trusted proxy
        ("/run/sock", None),
    ],
)
def test_connections_are_counted_by_address_and_an_ipv6_hosts_slash_64(peer: str, counted: str | None) -> None:
    limits = Limits.of(Settings(trusted_proxies=("10.0.0.0/8",)))
    assert limits.client_of(peer) == counted


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'proxy.example' is not an IP address or network"):
        Settings.from_env({"GITOPS_FLOW_TRUSTED_PROXIES": "10.0.0.1, proxy.example"})
    assert Settings.from_env({"GITOPS_FLOW_TRUSTED_PROXIES": "10.0.0.1, fd00::/8"}).trusted_proxies == (
        "10.0.0.1",
        "fd00::/8",
    )

"""The brake on guessing tokens and the console's sign-outs on every state store backend (memory, SQLite, Redis):
what the real-server tests of tests/test_guessing.py rest on, with the store's clock moved by the test."""

from __future__ import annotations

import pytest

from gitops_flow.config import Settings
from gitops_flow.console.auth import Sessions
from gitops_flow.console.signouts import SignOuts
from gitops_flow.exceptions import ConfigError, Limited
from gitops_flow.guardrails.brake import Brake
from gitops_flow.stores.base import StateStore
from tests.stores import test_contract as contract
from tests.stores.test_contract import FakeClock

pytestmark = pytest.mark.anyio
# the store contract's fixtures: every backend, with a clock the test moves
anyio_backend, clock, make_store, store = contract.anyio_backend, contract.clock, contract.make_store, contract.store


async def test_a_client_is_braked_after_its_failures_until_the_window_passes(
    store: StateStore, clock: FakeClock
) -> None:
    clock.now = 1_000_000.0
    brake = Brake(store, limit=3, window=60, clock=clock)
    for _ in range(3):
        assert await brake.check("1.2.3.4", lambda: False) is False
    with pytest.raises(Limited) as braked:
        await brake.check("1.2.3.4", lambda: True)  # not even compared now
    assert braked.value.code == "too-many-failures" and braked.value.retry_after == 60
    assert await brake.check("5.6.7.8", lambda: "admin") == "admin"  # others are not held back
    clock.now += 61
    assert await brake.check("1.2.3.4", lambda: True) is True


async def test_a_right_token_counts_nothing(store: StateStore, clock: FakeClock) -> None:
    brake = Brake(store, limit=2, window=60, clock=clock)
    for _ in range(10):
        assert await brake.check("1.2.3.4", lambda: "reader") == "reader"
    assert await brake.wait("1.2.3.4") == 0


async def test_a_sign_out_outlives_the_process_that_heard_it(store: StateStore, clock: FakeClock) -> None:
    clock.now = 1_000_000.0

    def process() -> tuple[Sessions, SignOuts]:  # what one worker (or one run of the server) holds in memory
        sessions = Sessions(lambda role: "admin-token" if role == "admin" else None, clock=clock, lifetime=3600)
        return sessions, SignOuts(store, sessions, clock=clock)

    first, first_outs = process()
    _, gone = first.issue("admin", "alice")
    _, kept = first.issue("admin", "bob")
    await first_outs.record(gone)
    _, restarted = process()
    assert await restarted.signed_out(gone) and not await restarted.signed_out(kept)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GUESS_LIMIT", "0"),
        ("GUESS_LIMIT", "10001"),
        ("GUESS_WINDOW", "0.5"),
        ("GUESS_WINDOW", "86401"),
    ],
)
def test_the_brakes_settings_have_bounds(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name.lower()):
        Settings.from_env({f"GITOPS_FLOW_{name}": value})


def test_the_brakes_settings_are_read_from_the_environment() -> None:
    environ = {"GITOPS_FLOW_GUESS_LIMIT": "5", "GITOPS_FLOW_GUESS_WINDOW": "30"}
    settings = Settings.from_env(environ)
    assert (settings.guess_limit, settings.guess_window) == (5, 30.0)
    assert not Settings.from_env({}).log_request_text

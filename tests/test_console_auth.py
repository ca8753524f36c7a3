"""console/auth.py: signed sessions, their CSRF tokens, and the brake on guessing tokens."""

from __future__ import annotations

import pytest

from gitops_flow.console.auth import Role, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def sessions(tokens: dict[str, str], clock: Clock) -> Sessions:
    def token(role: Role) -> str | None:
        return tokens.get(role)

    return Sessions(token, clock=clock, lifetime=3600)


def test_a_session_is_checked_by_its_signature_expiry_and_the_token_it_was_issued_for() -> None:
    clock = Clock()
    tokens = {"admin": "admin-token-1"}
    desk = sessions(tokens, clock)
    assert desk.role_of("admin-token-1") == "admin" and desk.role_of("admin-token-2") is None
    cookie, session = desk.issue("admin", "alice")
    assert "admin-token" not in cookie
    assert desk.check(cookie) == session
    assert desk.check(cookie[:-2] + "AA") is None  # forged
    body, _, signature = cookie.rpartition(".")
    assert desk.check(body.replace(".admin.", ".reader.") + "." + signature) is None
    longer = cookie.replace(f".{int(session.expires)}.", f".{int(session.expires) + 9999}.")
    assert desk.check(longer) is None  # the expiry is signed
    tokens["admin"] = "admin-token-2"  # the operator changed the token: old sessions end
    assert desk.check(cookie) is None
    tokens["admin"] = "admin-token-1"
    clock.now += 3601
    assert desk.check(cookie) is None
    assert desk.check(None) is None and desk.check("x" * 600) is None and desk.check("a.b.c") is None


def test_csrf_tokens_belong_to_one_session_and_revoked_sessions_end() -> None:
    clock = Clock()
    desk = sessions({"admin": "t0ken-admin"}, clock)
    one_cookie, one = desk.issue("admin", "")
    _, two = desk.issue("admin", "")
    assert desk.csrf_ok(one, desk.csrf(one)) and not desk.csrf_ok(one, desk.csrf(two))
    desk.revoke(one)
    assert desk.check(one_cookie) is None


def test_a_role_without_a_token_issues_nothing_and_names_are_checked() -> None:
    desk = sessions({"admin": "t0ken-admin"}, Clock())
    with pytest.raises(ValueError, match="reader role is off"):
        desk.issue("reader", "")
    with pytest.raises(ValueError, match="a name is at most"):
        desk.issue("admin", "<script>")

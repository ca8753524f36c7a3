"""The access log is the operator's choice (issue 17): `serve` writes a line per answered request by default, and
none with ``--no-access-log``, ``GITOPS_FLOW_ACCESS_LOG=false`` or a log level above info; the rest of the log stays.

uvicorn writes a request's access line before the first byte of its answer, so once a client has the answer, the
line is in the log or never will be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitops_flow.config import Settings
from gitops_flow.server.listener import access_logged
from tests.gitrepo import Remote
from tests.process import serve_process
from tests.served import echo_flow

CASES = {  # name -> (flags, environment, access lines expected)
    "default": ([], {}, True),
    "flag off": (["--no-access-log"], {}, False),
    "environment off": ([], {"GITOPS_FLOW_ACCESS_LOG": "false"}, False),
    "flag on over environment off": (["--access-log"], {"GITOPS_FLOW_ACCESS_LOG": "false"}, True),
    "level warning": (["--log-level", "warning"], {}, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_served_request_is_logged_only_when_the_operator_wants_it(remote: Remote, tmp_path: Path, case: str) -> None:
    flags, env, expected = CASES[case]
    remote.commit({"flows/echo.json": echo_flow(answer="logged?")}, "a flow")
    remote.push()
    with serve_process(remote, tmp_path, env=env, args=["--log-format", "json", *flags]) as server:
        answered = server.invoke("echo", {"question": "hi"})
        assert answered.status_code == 200 and answered.json()["output"] == "logged?"
        records = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    invoked = [r for r in access if '"POST /flows/echo/invoke HTTP/1.1" 200' in r["message"]]
    assert bool(invoked) is expected, access
    if not expected:
        assert access == []  # not the health checks of serve_process's start either
    if "--log-level" not in flags:
        assert any(r["logger"] == "uvicorn.error" for r in records)  # the rest of the log is still written


def test_the_access_log_is_off_whenever_its_lines_would_be_dropped() -> None:
    assert access_logged(Settings())
    assert not access_logged(Settings(access_log=False))
    assert access_logged(Settings(log_level="debug"))
    for level in ("warning", "error", "critical"):
        assert not access_logged(Settings(log_level=level))
    assert not Settings.from_env({"GITOPS_FLOW_ACCESS_LOG": "0"}).access_log

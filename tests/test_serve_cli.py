"""The server's commands: `demo` end to end, `versions` and `history` against a real server, `serve` settings."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import httpx
import pytest

from gitops_flow.cli import main as cli
from gitops_flow.cli import remote as servercli
from gitops_flow.config import Settings
from tests.gitrepo import Remote
from tests.served import echo_flow, on_loopback, wait_until


def test_demo_walks_through_a_deploy_and_a_revert(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # anywhere: the example flows ship in the package
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    out = io.StringIO()
    assert cli.main(["demo", "--exit", "--port", "0"], environ={}, out=out) == 0
    text = out.getvalue()
    assert f"example flows in {temporary}/gitops-flow-demo-" in text
    assert list(temporary.glob("gitops-flow-demo-*")) == [], "the demo leaves its repository behind"
    assert "Alice's conversation stays where it began: 'Hello! How can I help you today?'" in text
    assert "-> 'Hi! Ask me anything about your order.'" in text
    assert text.count("deployed ") == 2
    assert re.search(r"rolled-back [0-9a-f]{12} Revert \"Friendlier greeting\"", text)
    assert "The walkthrough passed." in text


def test_versions_and_history_read_a_running_server(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    good = remote.commit({"flows/echo.json": echo_flow()}, "first answer")
    remote.push()
    bad = remote.commit({"flows/echo.json": "{"}, "broken")
    remote.push()
    with on_loopback(remote, tmp_path) as (url, _app):
        wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, what="readiness")
        out = io.StringIO()
        assert cli.main(["versions", "--server", url], environ={}, out=out) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].endswith("(main)")
        assert lines[1].startswith(f"* {bad[:12]} ready") and lines[1].endswith("broken")
        assert lines[2] == f"    echo failed, serving {good[:12]}"
        assert "      flows/echo.json:1 invalid-json" in lines[3]
        assert lines[4].startswith(f"  {good[:12]} ready") and "Ada Lovelace" in lines[4]

        out = io.StringIO()
        assert cli.main(["history", "--server", url], environ={}, out=out) == 0
        lines = out.getvalue().splitlines()
        events = [line.split()[2:4] for line in lines if not line.startswith(" ")]
        assert events == [["deployed", bad[:12]], ["failed", bad[:12]]]
        deployed = next(n for n, line in enumerate(lines) if f"deployed    {bad[:12]}" in line)
        assert lines[deployed].endswith("broken [echo] (failed: echo)")
        assert lines[deployed + 1] == "    by start"
        failed = next(n for n, line in enumerate(lines) if f"failed      {bad[:12]}" in line)
        assert lines[failed].endswith(f"echo failed, serving {good[:12]}")
        assert lines[failed + 2].startswith("    flows/echo.json:1 invalid-json")

        out = io.StringIO()
        assert cli.main(["versions", "--server", url, "--json"], environ={}, out=out) == 0
        assert [v["sha"] for v in json.loads(out.getvalue())["versions"]] == [bad, good]


def test_views_of_a_server_that_is_not_there_are_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["versions", "--server", "http://127.0.0.1:9"], environ={}) == 2
    assert "cannot reach the server at http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["serve"], {}, "needs a repository"),
        (["serve", "--repo", "x", "--port", "99999"], {}, "port"),
        (["serve", "--repo", "x"], {"GITOPS_FLOW_POLL_INTERVAL": "soon"}, "poll_interval"),
        (["serve", "--repo", "x", "--state", "postgres://db"], {}, "use one of memory://, sqlite://"),
    ],
    ids=["no-repo", "bad-port", "bad-env", "bad-state"],
)
def test_serve_refuses_bad_settings_before_starting(
    argv: list[str], environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv, environ=environ) != 0
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "event, line",
    [
        (
            {"event": "tag-moved", "ref": "stable", "before": "a" * 40, "after": "b" * 40},
            "tag stable: aaaaaaaaaaaa -> bbbbbbbbbbbb",
        ),
        (
            {"event": "tag-moved", "ref": "stable", "before": None, "after": "b" * 40},
            "tag stable: (new) -> bbbbbbbbbbbb",
        ),
        (
            {"event": "tag-moved", "ref": "stable", "before": "a" * 40, "after": None},
            "tag stable: aaaaaaaaaaaa -> (deleted)",
        ),
        (
            {
                "event": "aborted",
                "ref": "main",
                "flow": "echo",
                "reason": "error rate 40.0% is above 5.0%",
                "requests": 25,
            },
            "echo on main: error rate 40.0% is above 5.0% (25 requests)",
        ),
        (
            {"event": "failed", "flow": "triage", "serving": "d" * 40, "problems": []},
            "triage failed, serving dddddddddddd",
        ),
        (
            {"event": "deployed", "message": "two", "changed": ["a", "b"], "failed_flows": ["b"]},
            "two [a, b] (failed: b)",
        ),
        (
            {"event": "rolled-back", "message": 'Revert "two"', "restores": "c" * 40, "changed": ["echo"]},
            'Revert "two" (serves cccccccccccc again) [echo]',
        ),
    ],
    ids=["tag-moved", "tag-created", "tag-deleted", "aborted", "flow-failed", "deployed-with-a-failure", "rolled-back"],
)
def test_history_says_what_each_kind_of_event_was_about(event: dict[str, object], line: str) -> None:
    assert servercli.event_line(event) == line


def test_serve_refuses_a_state_store_it_cannot_use_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    state = f"sqlite:///{blocker}/state.db"
    assert cli.main(["serve", "--repo", str(tmp_path), "--state", state, "--port", "0"], environ={}) == 1
    err = capsys.readouterr().err
    assert "cannot be opened" in err and str(blocker) in err
    assert "Traceback" not in err


def test_settings_come_from_the_environment_and_flags_win() -> None:
    environ = {
        "GITOPS_FLOW_REPO": "/srv/flows.git",
        "GITOPS_FLOW_WEBHOOK_SECRET": "s3cret",
        "GITOPS_FLOW_ANALYSIS_INTERVAL": "0.5",
        "GITOPS_FLOW_POLL_INTERVAL": "10",
    }
    settings = Settings.from_env(environ, poll_interval=3.0)
    assert settings.repo_url == "/srv/flows.git"
    assert settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.analysis_interval == 0.5
    assert settings.poll_interval == 3.0


def test_workers_default_to_the_available_cores_and_come_from_flag_or_environment() -> None:
    cores = len(os.sched_getaffinity(0))
    assert Settings().worker_count() == cores
    assert Settings(state="redis://localhost").worker_count() == cores
    assert Settings(state="memory://").worker_count() == 1  # processes cannot share memory
    assert Settings.from_env({"GITOPS_FLOW_WORKERS": "3"}).worker_count() == 3
    assert Settings.from_env({"GITOPS_FLOW_WORKERS": "3"}, workers=2).worker_count() == 2  # the flag wins


@pytest.mark.parametrize("given", ["0", "257", "many"])
def test_a_worker_count_out_of_bounds_is_refused(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--repo", "x"], environ={"GITOPS_FLOW_WORKERS": given}) == 2
    assert "setting workers" in capsys.readouterr().err

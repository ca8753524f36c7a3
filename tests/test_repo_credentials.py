"""A repository URL's credential, against a real `serve` fetching from a Git server that needs it.

The credential reaches git only through git's environment: another local user's `ps` sees no command line that holds
it (every git process the server runs is recorded, by a `git` on PATH that logs its argv and by GIT_TRACE for the
processes git starts itself). Wherever the URL is shown (logs, /readyz, /versions, errors) the credential is masked,
and a credential that cannot be kept off the process list (in the query string) is refused at start.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gitops_flow.delivery.source import GitSource
from gitops_flow.security.redaction import carries_credentials, query_secrets, redact
from tests.githttp import git_http
from tests.gitrepo import Remote
from tests.process import ADMIN, serve_process
from tests.served import echo_flow

TOKEN = "ghp_s3cr3tT0k3nV4lue"


def argv_recorder(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """Environment for a server whose every git process is recorded: a `git` first on PATH that appends its argv to
    a file and runs the real git, and GIT_TRACE, which logs the commands git runs itself (git-remote-http, the
    credential helper). Returns (environment, argv log, trace)."""
    real = shutil.which("git")
    assert real is not None
    shim = tmp_path / "shim"
    shim.mkdir()
    argv, trace = tmp_path / "git-argv.log", tmp_path / "git-trace.log"
    script = shim / "git"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{argv}"\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "GIT_TRACE": str(trace)}, argv, trace


def test_a_token_in_the_url_never_reaches_a_command_line_and_is_masked_wherever_the_url_is_shown(
    tmp_path: Path,
) -> None:
    remote = Remote.create(tmp_path)
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")}, "first")
    remote.push()
    env, argv, trace = argv_recorder(tmp_path)
    with git_http(tmp_path, username="x-access-token", password=TOKEN) as github:
        url = github.url("origin.git", userinfo=f"x-access-token:{TOKEN}")
        shown = github.url("origin.git", userinfo="***")
        with serve_process(remote, tmp_path, env=env, repo=url) as server:
            assert server.invoke("echo", {"question": "hi"}).json()["metadata"]["flow_version"] == first
            second = remote.commit({"flows/echo.json": echo_flow(answer="two")}, "second")
            remote.push()
            fetched = server.reconcile()
            seen = [server.client.get(path, headers=ADMIN) for path in ("/readyz", "/versions", "/history", "/flows")]
            github.password = "rotated"  # the token no longer works: the fetch fails and says so
            failed = server.reconcile()
            after = [server.client.get(path, headers=ADMIN) for path in ("/readyz", "/versions")]
            log = server.log_text()
        authorized = [auth for _, auth in github.requests if auth is not None]

    assert fetched["error"] is None and fetched["head"] == second
    assert all(response.status_code == 200 for response in seen)
    assert seen[0].json()["source"]["url"] == seen[1].json()["source"]["url"] == shown
    assert failed["error"] is not None and shown in failed["error"]
    assert after[0].json()["source"]["last_error"] == after[1].json()["source"]["last_error"] == failed["error"]
    for text in [*(r.text for r in seen + after), str(failed), log]:
        assert TOKEN not in text
    # the token did reach the Git server, through git's credential helper
    assert "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode() in authorized
    commands = argv.read_text().splitlines()
    assert any(
        line.startswith("-c credential.helper= -c credential.http://") and " fetch " in line for line in commands
    )
    assert not [line for line in commands if TOKEN in line]
    traced = trace.read_text()
    assert "git-remote-http " in traced  # git's own children were traced: its transport
    assert '"$GITOPS_FLOW_GIT_PASSWORD"; fi; }; f get' in traced  # and the credential helper
    assert TOKEN not in traced
    assert "origin.git" in traced and url not in traced


def test_a_credential_in_the_query_string_is_refused_at_start_and_not_shown(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    environ["GITOPS_FLOW_REPO"] = f"https://git.example.com/acme/flows.git?Private_Token={TOKEN}&ref=main"
    done = subprocess.run(
        [sys.executable, "-m", "gitops_flow", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert TOKEN not in done.stdout + done.stderr
    assert "https://git.example.com/acme/flows.git?Private_Token=***&ref=main" in done.stderr
    assert "carries a credential in its query string (Private_Token)" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_a_credential_on_the_serve_command_line_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gitops_flow.cli import main as cli

    code = cli.main(["serve", "--repo", f"https://ada:{TOKEN}@git.example.com/flows.git"], environ={})
    error = capsys.readouterr().err
    assert code == 2
    assert TOKEN not in error
    assert "https://***@git.example.com/flows.git" in error and "GITOPS_FLOW_REPO" in error


@pytest.mark.parametrize(
    "url",
    [
        f"ssh://git:{TOKEN}@git.example.com/flows.git",
        f"git://ada:{TOKEN}@git.example.com/flows.git",
        f"https://git.example.com/flows.git?access_token={TOKEN}",
        f"https://git.example.com/flows.git?a=1&PASSWORD={TOKEN}",
    ],
    ids=["ssh-password", "git-password", "access-token", "password-param"],
)
def test_a_source_refuses_a_credential_it_cannot_keep_off_the_command_line(url: str, tmp_path: Path) -> None:
    from gitops_flow.exceptions import ConfigError

    with pytest.raises(ConfigError) as caught:
        GitSource(url, tmp_path / "clone")
    assert TOKEN not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["ssh://git@github.com/acme/flows.git", "git@github.com:acme/flows.git", "https://github.com/acme/flows.git"],
)
def test_urls_without_a_credential_are_taken_as_they_are(url: str, tmp_path: Path) -> None:
    assert not carries_credentials(url)
    GitSource(url, tmp_path / "clone")  # no error


# -- redaction -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://h/r.git?token=abc", "https://h/r.git?token=***"),
        ("https://h/r.git?private_token=abc&ref=main", "https://h/r.git?private_token=***&ref=main"),
        ("https://h/r.git?ref=main&ACCESS_TOKEN=abc#x", "https://h/r.git?ref=main&ACCESS_TOKEN=***#x"),
        ("https://h/r.git?password=p%40ss&api_key=k", "https://h/r.git?password=***&api_key=***"),
        (
            "https://h/r?X-Amz-Signature=abc&X-Amz-Credential=def",
            "https://h/r?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        (  # a value runs to a quote, &, # or blank: what git appends to it goes too
            "fatal: unable to access 'https://h/r.git?token=abc/': 403",
            "fatal: unable to access 'https://h/r.git?token=***': 403",
        ),
        ("https://u:t@h/r.git?token=abc", "https://***@h/r.git?token=***"),
        ("https://h/r.git?ref=main&page=2", "https://h/r.git?ref=main&page=2"),
    ],
    ids=[
        "token",
        "private-token",
        "case-and-fragment",
        "password-and-key",
        "signed-url",
        "in-git-text",
        "both",
        "none",
    ],
)
def test_redact_masks_query_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_query_secrets_names_the_parameters() -> None:
    assert query_secrets("https://h/r?ref=main&Private_Token=a&sig=b") == ["Private_Token", "sig"]
    assert query_secrets("/srv/git/flows.git") == []


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        (f"https://x-access-token:{TOKEN}@github.com/a/b.git", TOKEN),
        (f"https://{TOKEN}@github.com/a/b.git", TOKEN),
        ("https://ada:p%40ss@host/r.git", "p@ss"),
        ("ssh://git@github.com/a/b.git", None),
        ("https://github.com/a/b.git", None),
        ("/srv/git/flows.git", None),
    ],
    ids=["user-and-token", "token-as-user", "quoted", "ssh-user", "none", "path"],
)
def test_userinfo_secret_is_what_the_logs_are_scrubbed_of(url: str, secret: str | None) -> None:
    from gitops_flow.security.redaction import userinfo_secret

    assert userinfo_secret(url) == secret

"""Private repositories with credentials kept apart from the URL (repo_credentials.py): an HTTPS token from the
environment or a file, and an SSH deploy key, against a real `serve`. Every git process is recorded
(tests/test_repo_credentials.py's argv recorder): no command line holds the token or the key, and neither does any log,
view or error."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitops_flow.delivery.source import GitSource
from gitops_flow.exceptions import ConfigError
from gitops_flow.security.repo_credentials import GitAuth
from tests.githttp import git_http
from tests.gitrepo import Remote
from tests.process import ADMIN, serve_process
from tests.served import echo_flow
from tests.test_repo_credentials import argv_recorder

TOKEN = "glpat-t0kenFromTheEnvironment01"
KEY = "\n".join(
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAAdeploykeyfortests",
        "-----END OPENSSH PRIVATE KEY-----",
        "",
    ]
)


def shown_everywhere(server: object) -> str:
    client = server.client  # type: ignore[attr-defined]
    views = [client.get(path, headers=ADMIN).text for path in ("/readyz", "/versions", "/history", "/flows")]
    return "\n".join([*views, server.log_text()])  # type: ignore[attr-defined]


def test_a_token_from_the_environment_reaches_git_through_its_environment_only(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    env, argv, trace = argv_recorder(tmp_path)
    with git_http(tmp_path, username="oauth2", password=TOKEN) as gitlab:
        env.update({"GITOPS_FLOW_GIT_TOKEN": TOKEN, "GITOPS_FLOW_GIT_TOKEN_USER": "oauth2"})
        with serve_process(remote, tmp_path, env=env, repo=gitlab.url("origin.git")) as server:
            assert server.invoke("echo", {"question": "hi"}).json()["metadata"]["flow_version"] == first
            gitlab.password = "revoked"
            failed = server.reconcile()
            seen = shown_everywhere(server)
        sent = {auth for _, auth in gitlab.requests if auth}
    assert "Basic " + base64.b64encode(f"oauth2:{TOKEN}".encode()).decode() in sent
    assert failed["error"] is not None
    for text in (seen, str(failed), argv.read_text(), trace.read_text()):
        assert TOKEN not in text
    assert any(" fetch " in line and "credential.http://127.0.0.1" in line for line in argv.read_text().splitlines())


def test_a_token_file_is_read_at_each_fetch(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    token_file = tmp_path / "git-token"
    token_file.write_text(TOKEN + "\n")
    env, argv, trace = argv_recorder(tmp_path)
    env["GITOPS_FLOW_GIT_TOKEN_FILE"] = str(token_file)
    with git_http(tmp_path, username="x-access-token", password=TOKEN) as github:
        with serve_process(remote, tmp_path, env=env, repo=github.url("origin.git")) as server:
            rotated = "ghs_installationTokenRotated000000"
            github.password = rotated  # the old token expired
            second = remote.commit({"flows/echo.json": echo_flow(answer="two")})
            remote.push()
            assert server.reconcile()["error"] is not None
            token_file.write_text(rotated)  # a sidecar writes the new one
            assert server.reconcile()["head"] == second
            token_file.unlink()
            missing = server.reconcile()["error"]
            seen = shown_everywhere(server)
    assert missing == f"cannot read the repository token file {token_file}: No such file or directory"
    for text in (seen, argv.read_text(), trace.read_text()):
        assert TOKEN not in text and rotated not in text


def fake_ssh(tmp_path: Path) -> tuple[Path, Path]:
    """An `ssh` first on PATH that records its argv, then runs the remote command here (git-upload-pack on the
    repository's path), as sshd would on the Git host. Returns (its folder, its log)."""
    folder = tmp_path / "ssh-bin"
    folder.mkdir()
    log = tmp_path / "ssh-argv.log"
    script = folder / "ssh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nfor last; do :; done\nexec sh -c "$last"\n')
    script.chmod(0o755)
    return folder, log


def test_an_ssh_deploy_key_is_named_to_ssh_never_shown(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    first = remote.commit({"flows/echo.json": echo_flow(answer="one")})
    remote.push()
    key = tmp_path / "deploy_key"
    key.write_text(KEY)
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text("git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExample\n")
    env, argv, trace = argv_recorder(tmp_path)
    folder, ssh_log = fake_ssh(tmp_path)
    env["PATH"] = f"{folder}{os.pathsep}{env['PATH']}"
    env.update({"GITOPS_FLOW_GIT_SSH_KEY_FILE": str(key), "GITOPS_FLOW_GIT_KNOWN_HOSTS": str(known)})
    url = f"ssh://git@git.example.com{remote.bare}"
    with serve_process(remote, tmp_path, env=env, repo=url) as server:
        assert server.invoke("echo", {"question": "hi"}).json()["metadata"]["flow_version"] == first
        seen = shown_everywhere(server)
    [call, *_] = ssh_log.read_text().splitlines()
    assert call.startswith(f"-i {key} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes")
    assert f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known}" in call and "git@git.example.com" in call
    secret = KEY.splitlines()[1]
    for text in (seen, argv.read_text(), trace.read_text(), ssh_log.read_text()):
        assert secret not in text


@pytest.mark.parametrize(
    "url, auth, message",
    [
        ("ssh://git@host/flows.git", GitAuth(token=TOKEN), "GITOPS_FLOW_GIT_TOKEN is for https:// repository URLs"),
        ("git@host:flows.git", GitAuth(token=TOKEN), "GITOPS_FLOW_GIT_TOKEN is for https://"),
        (
            "https://host/flows.git",
            GitAuth(ssh_key_file=Path("/etc/hostname")),
            "GITOPS_FLOW_GIT_SSH_KEY_FILE is for ssh://",
        ),
        ("ssh://git@host/flows.git", GitAuth(ssh_key_file=Path("/no/such/key")), "/no/such/key is not a file"),
        (f"https://x-access-token:{TOKEN}@host/f.git", GitAuth(token="another"), "give only one"),
        ("https://host/flows.git", GitAuth(token=TOKEN, token_file=Path("/x")), "give the repository token once"),
    ],
    ids=["token-ssh", "token-scp", "key-https", "key-missing", "two-credentials", "token-and-file"],
)
def test_credentials_that_do_not_fit_the_url_are_refused_at_start(
    tmp_path: Path, url: str, auth: GitAuth, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        GitSource(url, tmp_path / "clone", auth=auth)
    assert TOKEN not in str(caught.value)


def test_serve_refuses_a_token_for_an_ssh_url_and_exits(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    environ.update({"GITOPS_FLOW_REPO": "git@github.com:acme/flows.git", "GITOPS_FLOW_GIT_TOKEN": TOKEN})
    done = subprocess.run(
        [sys.executable, "-m", "gitops_flow", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "GITOPS_FLOW_GIT_TOKEN is for https:// repository URLs" in done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_the_token_is_not_in_the_auths_repr() -> None:
    assert TOKEN not in repr(GitAuth(token=TOKEN))

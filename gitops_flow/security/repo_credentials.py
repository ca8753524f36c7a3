"""Repository credentials kept apart from the URL: an HTTPS token from the environment or a file, an SSH deploy key.

What git is given for them goes through its environment only (source.py hands it over), never its command line:
a token reaches git through the same credential helper a URL's userinfo does (it reads the token from git's
environment, for the repository's origin only); a deploy key through ``GIT_SSH_COMMAND``, which names the key's
file, not its content. A token file is read at each fetch, so a rotated token (a mounted secret, a GitHub App's
installation token refreshed beside the server) is picked up without a restart.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


class AuthError(ValueError):
    """The credentials do not fit the repository, or a token file cannot be read; the message holds no secret."""


DEFAULT_TOKEN_USER = "x-access-token"  # GitHub's name for a token's user; GitLab and Gitea take any name with a token


@dataclass(frozen=True, slots=True)
class GitAuth:
    """The operator's repository credentials; all optional. ``token`` is kept out of ``repr``."""

    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    token_user: str = DEFAULT_TOKEN_USER
    ssh_key_file: Path | None = None
    known_hosts: Path | None = None

    def __bool__(self) -> bool:
        return bool(self.token or self.token_file or self.ssh_key_file)

    def check(self, url: str) -> None:
        """Raises AuthError when the credentials do not fit ``url`` (a token for an SSH URL, two tokens, ...)."""
        https = _scheme(url) in ("http", "https")
        if self.token and self.token_file:
            raise AuthError("give the repository token once: GITOPS_FLOW_GIT_TOKEN or GITOPS_FLOW_GIT_TOKEN_FILE")
        if (self.token or self.token_file) and not https:
            raise AuthError("GITOPS_FLOW_GIT_TOKEN is for https:// repository URLs; an SSH URL takes a deploy key")
        if (self.token or self.token_file) and "@" in urlsplit(url).netloc:
            raise AuthError("the repository URL has a credential and GITOPS_FLOW_GIT_TOKEN is set: give only one")
        if self.ssh_key_file is not None and https:
            raise AuthError("GITOPS_FLOW_GIT_SSH_KEY_FILE is for ssh:// (or git@host:path) repository URLs")
        if self.ssh_key_file is not None and not self.ssh_key_file.is_file():
            raise AuthError(f"GITOPS_FLOW_GIT_SSH_KEY_FILE: {self.ssh_key_file} is not a file")
        if self.known_hosts is not None and not self.known_hosts.is_file():
            raise AuthError(f"GITOPS_FLOW_GIT_KNOWN_HOSTS: {self.known_hosts} is not a file")

    def current_token(self) -> str | None:
        """The token now (read from its file at each call); raises AuthError, without the token, when the file
        cannot be read."""
        if self.token_file is None:
            return self.token
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise AuthError(f"cannot read the repository token file {self.token_file}: {reason}") from None
        if not token:
            raise AuthError(f"the repository token file {self.token_file} is empty")
        return token

    def ssh_command(self) -> str | None:
        """``GIT_SSH_COMMAND`` for the deploy key: that key only (no agent, no other identity), no prompt, and the
        host checked against ``known_hosts`` when given (else ssh's own known_hosts); None without a key."""
        if self.ssh_key_file is None:
            return None
        parts = [
            "ssh",
            "-i",
            str(self.ssh_key_file),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
        if self.known_hosts is not None:
            parts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return shlex.join(parts)


def _scheme(url: str) -> str:
    if "://" in url:
        return urlsplit(url).scheme.lower()
    head, colon, _ = url.partition(":")
    return "ssh" if colon and "/" not in head else "file"

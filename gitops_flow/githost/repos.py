"""GitHub repositories by name: ``owner/name`` checked, and read from the URL a server follows."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

API_URL = "https://api.github.com"
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
_SCP = re.compile(r"^[^@/]+@(?P<host>[^:/]+):(?P<path>.+)$")


def check_repo(value: str) -> str:
    """``owner/name`` as GitHub spells repositories; raises ValueError naming the value otherwise."""
    if not _REPO.match(value) or value.split("/")[1] in (".", ".."):
        raise ValueError(f"{value!r} is not a GitHub repository: write it as owner/name")
    return value


def repo_from_url(url: str, api_url: str = API_URL) -> str | None:
    """``owner/name`` of a GitHub repository URL (https or ssh, with or without ``.git``), or None when the URL
    is not on github.com (or, with another ``api_url``, on that GitHub Enterprise host)."""
    match = _SCP.match(url)
    if match is not None:
        host, path = match["host"], match["path"]
    else:
        parts = urlsplit(url)
        host, path = parts.hostname or "", parts.path
    api_host = urlsplit(api_url).hostname or ""
    if host.lower() not in ("github.com", "www.github.com") and host.lower() != api_host.removeprefix("api."):
        return None
    segments = [s for s in path.strip("/").removesuffix(".git").split("/") if s]
    if len(segments) != 2:
        return None
    try:
        return check_repo("/".join(segments))
    except ValueError:
        return None

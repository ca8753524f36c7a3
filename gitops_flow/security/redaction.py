"""Credentials in URLs: found, and masked wherever a URL is shown (logs, errors, /readyz, /versions)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"

# scheme://userinfo@ : everything between the scheme and the last "@" before the host's end is a credential
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s?#]*@")
# a query parameter whose name says it carries a secret: token, access_token, private_token, password, api_key,
# X-Amz-Signature, client_secret, ... (case-insensitive); its value runs to the next &, #, quote or blank
_SECRET_NAME = r"[\w.-]*(?:token|secret|passw|pwd|key|auth|sig|credential|session)[\w.-]*"
_QUERY_SECRET = re.compile(rf"([?&;]{_SECRET_NAME}=)[^&#;\s'\"]*", re.IGNORECASE)
_SECRET_PARAM = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URL credential masked: userinfo (``https://user:token@host`` -> ``https://***@host``)
    and query parameters named like secrets (``?private_token=abc`` -> ``?private_token=***``). Works on URLs and on
    any text quoting them (git's error messages)."""
    return redact_query(_USERINFO.sub(rf"\1{MASK}@", text))


def redact_query(text: str) -> str:
    """Only the query parameters named like secrets masked (``?password=abc`` -> ``?password=***``)."""
    return _QUERY_SECRET.sub(rf"\1{MASK}", text)


def query_secrets(url: str) -> list[str]:
    """The names of the query parameters of ``url`` that carry a secret (``["private_token"]``), in order."""
    query = urlsplit(url).query if "?" in url else ""
    return [name for name, _ in parse_qsl(query, keep_blank_values=True) if _SECRET_PARAM.match(name)]


def carries_credentials(url: str) -> bool:
    """Whether ``url`` holds a secret: a password, any userinfo of an HTTP(S) URL (``https://TOKEN@host`` is a
    token), or a query parameter named like a secret. An SSH user name alone (``ssh://git@host``) is not one."""
    if query_secrets(url):
        return True
    if "://" not in url:
        return False
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return bool(at) and (":" in userinfo or parts.scheme.lower() in ("http", "https"))


def userinfo_secret(url: str) -> str | None:
    """The secret of an HTTP(S) URL's userinfo: its password, or its user name when there is none (a token given as
    ``https://TOKEN@host``); None for other URLs, so that logs can be scrubbed of it wherever it turns up."""
    if "://" not in url:
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return None
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    return unquote(password if colon else user) or None

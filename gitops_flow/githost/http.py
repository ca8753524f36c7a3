"""Outbound HTTP: one small client object over httpx whose exceptions are translated here, at the boundary.

Everything the server or the command line sends out (GitHub's REST API, the operator's notification receivers) goes
through ``Outbound``. What it promises: no redirect is followed (a token never follows one to another host), an
answer is read up to a bound, and every failure is a HostError that says whether trying again can help
(HostUnavailable: unreachable, timed out, 5xx, rate limited, with the wait the host asked for) or not (HostRejected).
Messages name the host and the reason only: never a token, nor the path of a URL (a Slack webhook's path is its
secret), nor the body sent.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from gitops_flow.exceptions import HostRejected, HostUnavailable

MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a page of 100 comments of GitHub's 65,536 characters each fits
USER_AGENT = "gitops-flow"
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: its status, headers (lower-case names) and JSON body (None when it had none)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


def host_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, for messages: no user info, no path, no query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class Outbound:
    """An HTTP client of one host (``base_url``), with a token read at each request (so a rotated token file is
    picked up) and sent as ``Authorization: Bearer``; ``transport`` is for tests."""

    def __init__(
        self,
        base_url: str,
        *,
        token: Callable[[], str | None] = lambda: None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = host_of(base_url)
        self._token = token
        self._max = max_answer_bytes
        self._clock = clock
        self._client = httpx.AsyncClient(
            headers={"user-agent": USER_AGENT, **(headers or {})},
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # no proxy or netrc credentials picked up from the environment behind the operator's back
        )

    def __repr__(self) -> str:
        return f"Outbound({self.host!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request to ``base_url + path`` (``path`` "" for the base URL itself) and read its answer.

        Raises HostUnavailable (retryable) or HostRejected; never an httpx exception.
        """
        sent = dict(headers or {})
        token = self._token()
        if token:
            sent["authorization"] = f"Bearer {token}"
        if json is not None:
            content, sent["content-type"] = orjson.dumps(json), "application/json"
        what = f"{method} {self.host}"
        async with self._errors(what):
            async with self._client.stream(
                method, self.base_url + path, content=content, params=params, headers=sent
            ) as response:
                raw = await _read(response, self._max, what)
        return self._reply(response, raw, what)

    @contextlib.asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        """httpx's exceptions as HostUnavailable; ``from None``, as their text may carry the URL's secret path."""
        try:
            yield
        except httpx.TimeoutException:
            raise HostUnavailable(f"{what}: timed out") from None
        except httpx.HTTPError as exc:
            raise HostUnavailable(f"{what}: {type(exc).__name__}") from None

    def _reply(self, response: httpx.Response, raw: bytes, what: str) -> Reply:
        status = response.status_code
        headers = {k.lower(): v for k, v in response.headers.items()}
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = None
        if 200 <= status < 300:
            return Reply(status, headers, body)
        reason = _message(body)
        text = f"{what} answered {status}" + (f": {reason}" if reason else "")
        wait = self._retry_after(headers)
        if status in _RETRY_STATUSES or (status == 403 and (wait is not None or _rate_limited(headers))):
            raise HostUnavailable(text, status=status, retry_after=wait)
        if 300 <= status < 400:
            raise HostRejected(f"{what} answered {status} (a redirect, which is never followed)", status=status)
        raise HostRejected(text, status=status)

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        """The wait the host asked for: ``retry-after`` (seconds or a date), or GitHub's ``x-ratelimit-reset`` when
        no request is left."""
        raw = headers.get("retry-after")
        if raw is not None:
            if raw.strip().isdigit():
                return float(raw.strip())
            when = email.utils.parsedate_to_datetime(raw) if raw.strip() else None
            return max(0.0, when.timestamp() - self._clock()) if when is not None else None
        if _rate_limited(headers):
            reset = headers.get("x-ratelimit-reset", "")
            return max(0.0, float(reset) - self._clock()) if reset.isdigit() else None
        return None


async def _read(response: httpx.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise HostRejected(f"{what}: the answer is larger than {limit:,} bytes", status=response.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _rate_limited(headers: Mapping[str, str]) -> bool:
    return headers.get("x-ratelimit-remaining") == "0"


def _message(body: Any) -> str:
    """The host's own short reason (GitHub's ``message`` and its first ``errors``), cut to a bound."""
    if not isinstance(body, dict):
        return ""
    parts = [str(body["message"])] if isinstance(body.get("message"), str) else []
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        parts.append(str(first.get("message") or first.get("code") or "") if isinstance(first, dict) else str(first))
    text = "; ".join(p for p in parts if p)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"

"""The one boundary where a model provider's client library errors become ours (exceptions.ProviderError's tree).

The provider SDKs LangChain's chat models call (openai, anthropic: both made by Stainless, with one exception tree)
raise ``APITimeoutError`` (a subclass of ``APIConnectionError``), ``APIConnectionError``, ``RateLimitError`` and
``APIStatusError`` (with the status of the provider's answer); below them httpx raises ``TimeoutException``,
``TransportError`` and ``HTTPStatusError``. ``translated`` maps each to what it is for the client of the flow:

- unreachable, or the provider failed (5xx): ProviderUnavailable (retryable);
- no answer within the model's ``timeout``: ProviderTimeout (retryable);
- the endpoint's circuit is open (breaker.py answers for the provider, with its own header): CircuitOpen;
- rate limited (429): ProviderRateLimited (retryable) with the provider's own ``Retry-After``;
- any other 4xx (an unknown model, a bad parameter, a key the provider does not take): ProviderRejected, the flow's
  fault at this version.

A translated error names the provider, the library's class of the error, its status and the provider's error code
(``model_not_found``) when it is a plain identifier; never the provider's message or the request, which may quote
what a user wrote. Nothing here imports a provider package: an error can only come from a library already loaded.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from gitops_flow.exceptions import (
    CircuitOpen,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

CIRCUIT_HEADER = "x-gitops-flow-circuit"  # on the answer breaker.py makes in the provider's place when it refuses
SDKS = ("openai", "anthropic")  # the Stainless-made provider SDKs whose exception trees are read here
MAX_RETRY_AFTER = 3600.0  # a provider's Retry-After is passed on up to an hour; a longer one is capped to this
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")  # a provider's error code, shown only when it is an identifier
_MAX_CHAIN = 8  # causes and contexts searched for a provider's error


def translated(exc: BaseException) -> ProviderError | None:
    """What ``exc`` (or an exception it was raised from) is as a ProviderError; None when it is not a provider's."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < _MAX_CHAIN and all(current is not s for s in seen):
        found = _one(current)
        if found is not None:
            return found
        seen.append(current)
        current = current.__cause__ or current.__context__
    return None


def cause_of(exc: BaseException) -> str:
    """A short, request-free name of why a run failed: the translated class with the library's (``ProviderRejected
    NotFoundError 404 model_not_found``) or the exception's class. What a log line and a canary's abort say."""
    found = translated(exc)
    return describe(found) if found is not None else type(exc).__name__


def describe(exc: ProviderError) -> str:
    """``exc``'s class, the library's class, the status and the provider's code, space-separated."""
    parts = [type(exc).__name__, exc.kind]
    if exc.status is not None:
        parts.append(str(exc.status))
    if exc.code is not None:
        parts.append(exc.code)
    return " ".join(parts)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The wait a provider asked for: ``retry-after-ms``, or ``retry-after`` in seconds or as an HTTP date; None
    when it said nothing readable. Capped at MAX_RETRY_AFTER."""
    if headers is None:
        return None
    wait: float | None = None
    try:
        if headers.get("retry-after-ms"):
            wait = float(headers["retry-after-ms"]) / 1000.0
        elif headers.get("retry-after"):
            value = headers["retry-after"].strip()
            try:
                wait = float(value)
            except ValueError:
                wait = parsedate_to_datetime(value).timestamp() - time.time()
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
    if wait is None or wait != wait:  # NaN
        return None
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


def _one(exc: BaseException) -> ProviderError | None:
    if isinstance(exc, ProviderError):
        return exc
    for name in SDKS:
        sdk = sys.modules.get(name)
        if sdk is not None and isinstance(exc, getattr(sdk, "APIError", ())):
            return _from_sdk(sdk, name, exc)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(_said("httpx", type(exc).__name__, None), provider="httpx", kind=type(exc).__name__)
    if isinstance(exc, httpx.TransportError):
        kind = type(exc).__name__
        return ProviderUnavailable(_said("httpx", kind, None), provider="httpx", kind=kind)
    if isinstance(exc, httpx.HTTPStatusError):
        return _by_status("httpx", type(exc).__name__, exc.response, None)
    return None


def _from_sdk(sdk: Any, name: str, exc: BaseException) -> ProviderError:
    kind = _sdk_class(name, exc)
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeout(_said(name, kind, None), provider=name, kind=kind)
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderUnavailable(_said(name, kind, None), provider=name, kind=kind)
    response = getattr(exc, "response", None)
    if isinstance(response, httpx.Response):
        code = getattr(exc, "code", None)
        return _by_status(name, kind, response, code if isinstance(code, str) and _CODE.match(code) else None)
    return ProviderRejected(_said(name, kind, None), provider=name, kind=kind)  # an answer the SDK could not read


def _sdk_class(name: str, exc: BaseException) -> str:
    """The SDK's own class of ``exc`` (langchain-openai raises subclasses of its own, OpenAIConnectionError)."""
    for kind in type(exc).__mro__:
        if kind.__module__ == name or kind.__module__.startswith(name + "."):
            return kind.__name__
    return type(exc).__name__


def _by_status(name: str, kind: str, response: httpx.Response, code: str | None) -> ProviderError:
    status = response.status_code
    wait = retry_after(response.headers)
    made: ProviderError
    if response.headers.get(CIRCUIT_HEADER):
        made = CircuitOpen(
            f"calls to this {name} endpoint are refused for now: it failed too often lately",
            provider=name,
            kind="CircuitOpen",
            status=status,
            retry_after=wait,
        )
    elif status == 429:
        made = ProviderRateLimited(_said(name, kind, status), provider=name, kind=kind, status=status, retry_after=wait)
    elif status == 408:
        made = ProviderTimeout(_said(name, kind, status), provider=name, kind=kind, status=status, retry_after=wait)
    elif status >= 500:
        made = ProviderUnavailable(_said(name, kind, status), provider=name, kind=kind, status=status, retry_after=wait)
    else:
        made = ProviderRejected(_said(name, kind, status, code), provider=name, kind=kind, status=status)
    made.code = code
    return made


def _said(name: str, kind: str, status: int | None, code: str | None = None) -> str:
    answered = f" ({status}{' ' + code if code else ''})" if status is not None else ""
    return f"the model provider ({name}) failed: {kind}{answered}"

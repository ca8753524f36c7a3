"""The one boundary where the provider SDKs' exceptions become ours (components/provider_errors.py): each of
openai's classes, httpx's below them, and a provider's Retry-After in its three forms. What a served flow answers
for each is in tests/test_provider_failures.py."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import openai
import pytest

from gitops_flow.components.provider_errors import cause_of, retry_after, translated
from gitops_flow.exceptions import (
    CircuitOpen,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def answered(status: int, code: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"message": "a user's text, quoted", "type": "x", "code": code}}
    return httpx.Response(status, json=body, headers=headers, request=REQUEST)


def status_error(kind: type[openai.APIStatusError], response: httpx.Response) -> openai.APIStatusError:
    return kind("a user's text, quoted", response=response, body=response.json()["error"])


@pytest.mark.parametrize(
    ("raised", "expected", "status"),
    [
        (openai.APIConnectionError(request=REQUEST), ProviderUnavailable, None),
        (openai.APITimeoutError(request=REQUEST), ProviderTimeout, None),
        (status_error(openai.RateLimitError, answered(429, "rate_limit_exceeded")), ProviderRateLimited, 429),
        (status_error(openai.InternalServerError, answered(503)), ProviderUnavailable, 503),
        (status_error(openai.NotFoundError, answered(404, "model_not_found")), ProviderRejected, 404),
        (status_error(openai.BadRequestError, answered(400, "invalid_value")), ProviderRejected, 400),
        (status_error(openai.AuthenticationError, answered(401, "invalid_api_key")), ProviderRejected, 401),
        (httpx.ConnectError("refused", request=REQUEST), ProviderUnavailable, None),
        (httpx.ReadTimeout("slow", request=REQUEST), ProviderTimeout, None),
    ],
    ids=["connection", "timeout", "429", "5xx", "404", "400", "401", "httpx-connect", "httpx-timeout"],
)
def test_each_library_error_becomes_what_it_is(raised: Exception, expected: type[ProviderError], status: int) -> None:
    found = translated(raised)

    assert type(found) is expected
    assert found is not None and found.status == status
    assert "a user's text" not in str(found)  # never the provider's message: it may quote the request


def test_an_error_raised_from_a_providers_is_translated_and_others_are_not() -> None:
    try:
        try:
            raise openai.APIConnectionError(request=REQUEST)
        except openai.APIConnectionError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert isinstance(translated(wrapped), ProviderUnavailable)
    assert translated(ValueError("a parser's")) is None
    assert cause_of(ValueError("a parser's")) == "ValueError"


def test_the_cause_names_the_classes_the_status_and_an_identifier_code_only() -> None:
    refused = status_error(openai.NotFoundError, answered(404, "model_not_found"))
    odd = status_error(openai.NotFoundError, answered(404, "no such model: gpt-x (ask support)"))

    assert cause_of(refused) == "ProviderRejected NotFoundError 404 model_not_found"
    assert cause_of(odd) == "ProviderRejected NotFoundError 404"  # a code that is not an identifier is not shown


def test_a_breakers_refusal_is_circuit_open() -> None:
    response = answered(503, "circuit_open", **{"retry-after": "7", "x-gitops-flow-circuit": "open"})

    found = translated(status_error(openai.InternalServerError, response))

    assert isinstance(found, CircuitOpen) and found.retry_after == 7


def test_retry_after_is_read_in_each_form_and_bounded() -> None:
    assert retry_after(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert retry_after(httpx.Headers({"retry-after": "17"})) == 17
    assert 28 <= (retry_after(httpx.Headers({"retry-after": formatdate(time.time() + 30, usegmt=True)})) or 0) <= 30
    assert retry_after(httpx.Headers({"retry-after": "999999999"})) == 3600
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers({"retry-after": "nan"})) is None
    assert retry_after(httpx.Headers({})) is None

"""references.py and credentials.py: where a secret reference may stand, where a model's key may go, and the scrubbing
of known secret values from what the server writes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.problems import Problem
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.references import RedactSecrets, Scrubber
from gitops_flow.validation.documents import validate_bytes
from tests.helpers import registry_with

KEY = {"$env": "OPENAI_API_KEY"}


def dsn_client(*, dsn: str, table: str = "docs") -> Any:
    return RunnableLambda(lambda text: text)


def search(*, token: str, index: str = "docs") -> Any:
    return RunnableLambda(lambda text: text)


REGISTRY = registry_with(
    # an operator component that names the variables its secret param takes (one of them a model provider's key)
    Component("Store", dsn_client, secrets=frozenset({"dsn"}), secret_names=(("dsn", ("OPENAI_API_KEY", "DB_*")),)),
    # one that does not: it takes any allowed variable no model provider owns
    Component("Search", search, secrets=frozenset({"token"})),
)


def errors(doc: dict[str, Any], policy: SecretPolicy | None = None) -> list[tuple[str, str]]:
    raw = json.dumps(doc, indent=2).encode()
    report = validate_bytes(raw, REGISTRY, file="flow.json", policy=policy)
    return [(p.code, p.path) for p in report.problems if p.severity == "error"]


def node(component: str, **params: Any) -> dict[str, Any]:
    return {"version": 1, "name": "flow", "nodes": [{"id": "n", "component": component, "params": params}]}


def model(**params: Any) -> dict[str, Any]:
    return node("ChatModel", **{"model": "openai:gpt-4o-mini", **params})


# -- where a reference may stand ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (node("FakeChatModel", responses=[KEY]), "$.nodes[0].params.responses[0]"),
        (model(model_kwargs={"seed": KEY}), "$.nodes[0].params.model_kwargs.seed"),
        (model(api_key={"value": KEY}), "$.nodes[0].params.api_key.value"),
        (model(api_key=[KEY]), "$.nodes[0].params.api_key[0]"),
        (model(stop=[KEY]), "$.nodes[0].params.stop[0]"),
        (node("Store", dsn=KEY, table=KEY), "$.nodes[0].params.table"),
        (node("PromptTemplate", template=KEY), "$.nodes[0].params.template"),
        (
            {**node("FakeChatModel", responses=["x"]), "tests": [{"name": "t", "input": KEY, "expect": {"equals": 1}}]},
            "$.tests[0].input",
        ),
        (
            {
                **node("FakeChatModel", responses=["x"]),
                "tests": [{"name": "t", "input": "q", "fakes": {"n": [KEY]}, "expect": {"contains": "x"}}],
            },
            "$.tests[0].fakes.n[0]",
        ),
        (
            {
                **node("FakeChatModel", responses=["x"]),
                "tests": [{"name": "t", "input": "q", "expect": {"equals": KEY}}],
            },
            "$.tests[0].expect.equals",
        ),
        ({**node("FakeChatModel", responses=["x"]), "description": KEY}, "$.description"),
    ],
    ids=[
        "fake-responses",
        "model-kwargs",
        "nested-in-secret-param",
        "listed-in-secret-param",
        "other-param",
        "operator-non-secret-param",
        "prompt",
        "test-input",
        "test-fakes",
        "test-expect",
        "description",
    ],
)
def test_a_reference_anywhere_but_a_secret_param_is_refused(doc: dict[str, Any], path: str) -> None:
    found = errors(doc)
    assert found[0] == ("env-not-secret", path)
    assert [code for code, _ in found[1:]] in ([], ["bad-param"])  # and a secret param takes text, not a list


def test_a_reference_is_read_only_in_a_declared_secret_param() -> None:
    assert errors(model(api_key=KEY)) == []
    assert errors(node("Agent", model="openai:gpt-4o-mini", api_key=KEY)) == []
    assert errors(node("Store", dsn=KEY)) == []


def test_a_literal_in_a_declared_secret_param_is_refused_whatever_its_name() -> None:
    assert errors(node("Store", dsn="postgres://app:pw@db/app")) == [("literal-secret", "$.nodes[0].params.dsn")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("AWS_SECRET_ACCESS_KEY", "not a secret this server gives flows"),
        ("GITOPS_FLOW_ADMIN_TOKEN", "one of the server's own settings"),
        ("GITOPS_FLOW_WEBHOOK_SECRET", "one of the server's own settings"),
        ("HOME", "not a secret this server gives flows"),
    ],
)
def test_only_names_the_operator_allows(name: str, message: str) -> None:
    doc = node("Search", token={"$env": name})
    report = validate_bytes(json.dumps(doc).encode(), REGISTRY, file="flow.json")
    [problem] = [p for p in report.problems if p.severity == "error"]
    assert (problem.code, problem.path) == ("env-not-allowed", "$.nodes[0].params.token")
    assert message in problem.message
    permissive = SecretPolicy(["AWS_*", "HOME", "G_*"])
    expected = [] if not name.startswith("GITOPS_FLOW_") else [("env-not-allowed", "$.nodes[0].params.token")]
    assert errors(doc, permissive) == expected


# -- where a model's key may go -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "policy", "expected"),
    [
        (model(api_key=KEY), None, []),
        (node("ChatModel", model="gpt-4o", api_key=KEY), None, []),  # the provider is inferred: openai
        (node("ChatModel", model="claude-3-5-haiku-latest", api_key=KEY), None, ["env-wrong-provider"]),
        (node("ChatModel", model="gpt-4o", model_provider="groq", api_key=KEY), None, ["env-wrong-provider"]),
        (node("Agent", model="anthropic:claude-3-5-haiku-latest", api_key=KEY), None, ["env-wrong-provider"]),
        (model(model="langsmith:gpt-4o", api_key=KEY), None, ["env-wrong-provider"]),
        (model(api_key={"$env": "TEAM_KEY"}), SecretPolicy(["TEAM_KEY"]), ["env-wrong-provider"]),  # bound to none
        (model(api_key={"$env": "TEAM_KEY"}), SecretPolicy(["TEAM_KEY=openai"]), []),
        (
            model(model="anthropic:claude", api_key={"$env": "TEAM_KEY"}),
            SecretPolicy(["TEAM_*=openai"]),
            ["env-wrong-provider"],
        ),
        (node("Search", token={"$env": "TEAM_KEY"}), SecretPolicy(["TEAM_KEY"]), []),  # owned by no provider
        (node("Search", token=KEY), None, ["env-wrong-provider"]),  # a provider's key, not named by the component
        (node("Store", dsn=KEY), None, []),  # named by the component's declaration
        (node("Store", dsn={"$env": "DB_URL"}), SecretPolicy(["DB_URL"]), []),  # named by a prefix
        (node("Store", dsn={"$env": "ANTHROPIC_API_KEY"}), None, ["env-not-allowed"]),  # allowed, not taken here
        (node("Store", dsn={"$env": "SEARCH_TOKEN"}), SecretPolicy(["SEARCH_TOKEN"]), ["env-not-allowed"]),
    ],
    ids=[
        "own-provider",
        "inferred-provider",
        "inferred-other-provider",
        "model-provider-param",
        "agent",
        "gateway-of-another-provider",
        "unbound-name",
        "bound-name",
        "bound-to-another",
        "operator-component",
        "operator-component-given-a-provider-key",
        "operator-component-naming-it",
        "operator-component-naming-a-prefix",
        "operator-component-naming-others",
        "operator-component-naming-others-2",
    ],
)
def test_a_key_goes_only_to_its_own_provider(
    doc: dict[str, Any], policy: SecretPolicy | None, expected: list[str]
) -> None:
    assert [code for code, _ in errors(doc, policy)] == expected


def test_the_wrong_provider_says_which_is_right() -> None:
    raw = json.dumps(node("ChatModel", model="anthropic:claude-3-5-haiku-latest", api_key=KEY)).encode()
    [problem] = validate_bytes(raw, REGISTRY, file="flow.json").problems
    assert problem.path == "$.nodes[0].params.api_key"
    assert problem.message == "OPENAI_API_KEY is the key of openai; it is never sent to 'anthropic'"


def test_a_base_url_must_be_allowed_with_or_without_a_key() -> None:
    """Without api_key a provider library reads its usual key from the environment, so the URL alone is the risk."""
    allowed = SecretPolicy(None, ["openai=https://gw.example.com/v1"])
    for params in ({"api_key": KEY}, {}):
        for agent in (False, True):
            doc = node("Agent", model="openai:gpt-4o-mini", **params) if agent else model(**params)
            doc["nodes"][0]["params"]["base_url"] = "https://collector.example.net/v1"
            assert errors(doc) == [("base-url-not-allowed", "$.nodes[0].params.base_url")]
            assert errors(doc, allowed) == [("base-url-not-allowed", "$.nodes[0].params.base_url")]
            doc["nodes"][0]["params"]["base_url"] = "https://gw.example.com/v1"
            assert errors(doc, allowed) == []


def test_a_model_name_is_never_a_url() -> None:
    doc = model(model="openai:https://collector.example.net/v1", api_key=KEY)
    assert errors(doc) == [("base-url-not-allowed", "$.nodes[0].params.model")]


@pytest.mark.parametrize(
    "key",
    [
        "base_url",
        "baseURL",
        "api_base",
        "openai_api_base",
        "anthropic_api_url",
        "azure_endpoint",
        "endpoint_url",
        "model_url",
        "host",
        "openai_proxy",
        "proxies",
        "default_headers",
        "extra_headers",
        "http_client",
        "http_async_client",
        "api_key",
        "openai_api_key",
        "api_token",
        "azure_ad_token",
        "auth",
        "credentials",
    ],
)
def test_model_kwargs_that_could_redirect_the_client_are_refused(key: str) -> None:
    assert errors(model(model_kwargs={key: 1})) == [("redirect-kwarg", f"$.nodes[0].params.model_kwargs.{key}")]


@pytest.mark.parametrize(
    "key",
    [
        "response_format",
        "seed",
        "top_k",
        "max_completion_tokens",
        "reasoning_effort",
        "keep_alive",
        "logit_bias",
        "user",
    ],
)
def test_ordinary_model_kwargs_pass(key: str) -> None:
    assert errors(model(model_kwargs={key: 1})) == []


# -- scrubbing known values -----------------------------------------------------------------------------------------


def test_the_scrubber_replaces_every_known_value_longest_first() -> None:
    scrub = Scrubber({"SHORT": "abc", "KEY": "sk-0123456789", "LONGER": "sk-0123456789-extra"})
    assert scrub.text("a sk-0123456789-extra and sk-0123456789, abc") == (
        "a <$env:LONGER> and <$env:KEY>, abc"  # values under 6 characters are too common to replace
    )
    value = {"sk-0123456789": ["x sk-0123456789", 1, None, ("sk-0123456789",)]}
    assert scrub.json(value) == {"<$env:KEY>": ["x <$env:KEY>", 1, None, ("<$env:KEY>",)]}
    problem = Problem(code="build-failed", message="key sk-0123456789 refused", path="$.nodes[0]")
    assert scrub.problem(problem).message == "key <$env:KEY> refused"
    assert not Scrubber({"A": "short"}) and Scrubber({}).json(value) is value


def _record(msg: str, *args: Any, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_log_records_are_scrubbed_and_keep_their_shape() -> None:
    redact = RedactSecrets(Scrubber({"KEY": "sk-0123456789"}))
    # uvicorn's access formatter reads the arguments: they stay a tuple, each scrubbed
    access = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/x?k=sk-0123456789", "1.1", 200)
    assert redact.filter(access)
    assert access.args == ("127.0.0.1:1", "GET", "/x?k=<$env:KEY>", "1.1", 200)
    assert access.getMessage() == '127.0.0.1:1 - "GET /x?k=<$env:KEY> HTTP/1.1" 200'
    # an argument that is no plain value (an exception) is rendered, then scrubbed
    quoted = _record("refused: %s", RuntimeError("bad key sk-0123456789"))
    assert redact.filter(quoted) and quoted.getMessage() == "refused: bad key <$env:KEY>" and quoted.args == ()
    # a traceback quoting the key
    try:
        raise RuntimeError("upstream said sk-0123456789")
    except RuntimeError as exc:
        failed = _record("flow failed", exc=exc)
    assert redact.filter(failed)
    assert failed.exc_text is not None and "upstream said <$env:KEY>" in failed.exc_text
    assert "sk-0123456789" not in logging.Formatter().format(failed)
    # a record without a secret is left as it is
    plain = _record("%s answered %d", "flow", 200)
    assert redact.filter(plain) and plain.args == ("flow", 200) and plain.msg == "%s answered %d"


def test_a_registry_without_secret_params_takes_no_reference() -> None:
    registry = ComponentRegistry.builtin()
    secret = {name: {"api_key"} for name in ("ChatModel", "Retriever", "HttpRequest", "WebSearch")}
    secret["Agent"] = {"api_key", "search_api_key"}  # its model's key, and its web_search tool's
    for name in registry.names():
        declared = registry.secret_params(registry.get(name))
        assert declared == secret.get(name, set()), name

"""Where a credential may go: a model node's to its own provider's endpoint or a base URL the operator allows; a model
provider's key into an operator component only where the component's declaration names it.

The built-in ChatModel and Agent name their provider (``model``, ``model_provider``), may name an endpoint
(``base_url``) and pass ``model_kwargs`` on to the provider's client. A flow author who could choose the endpoint could
have the server send its key there, or reach any host the server can (provider libraries also read their usual key
from the process environment when a node gives none). So: a ``base_url`` must be one the operator allows, whatever the
key; a key bound to one provider is never given to another; ``model_kwargs`` may not carry what could point the client
elsewhere or add credentials (URLs, hosts, proxies, headers, clients, keys); a model name is never a URL.

An Agent's ``search_api_key`` goes to the web search API (the operator's GITOPS_FLOW_WEB_SEARCH_URL) alone, so it is
never a model provider's key; HttpRequest's and WebSearch's ``api_key`` are held to the rule of an operator component
that names no variables (no model provider's key), and go only where the egress allowlist allows.

A Retriever's ``api_key`` goes to the provider its ``embeddings`` names (``openai:text-embedding-3-small``), at that
provider's own endpoint: a key bound to another provider is refused as a model's is.

An operator component vouches for where it sends what its secret params take. It may take a model provider's key
(OPENAI_API_KEY) only in a param whose declaration names it (``secrets: {api_key: [OPENAI_API_KEY]}``), so that a
flow cannot hand the server's OpenAI key to, say, a search component; a param that names its variables takes no
other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gitops_flow.components.base import Component
from gitops_flow.components.builtins import provider_of
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BuildError
from gitops_flow.problems import Problem, json_path
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.references import env_name

MODEL_COMPONENTS = frozenset({"ChatModel", "Agent"})  # built-in names: an operator component can never take them
RETRIEVER = (
    "Retriever"  # its api_key goes to its embeddings' provider (``provider:model``), at that provider's endpoint
)
# model_kwargs keys that could move a request (and its Authorization header) to another host, or add credentials
_REDIRECTING = re.compile(
    r"url|uri$|endpoint|host|proxy|proxies|header|client|auth|credential|secret|password|passwd|base|"
    r"(^|[_-])(api_?key|key|token)($|[_-])",
    re.IGNORECASE,
)


def check(
    registry: ComponentRegistry,
    component: Component,
    params: Mapping[str, Any],
    base: tuple[str | int, ...],
    policy: SecretPolicy,
) -> list[Problem]:
    """The problems of where a node's credentials would go under ``policy``."""
    if component.name == RETRIEVER:
        return _retriever_problems(params, base, policy)
    if component.name not in MODEL_COMPONENTS:
        return _operator_problems(registry, component, params, base, policy)
    problems: list[Problem] = []
    provider = _provider(params)
    name = env_name(params.get("api_key"))
    if name is not None and provider is not None and policy.allows(name):
        providers = policy.providers_for(name)
        if provider not in providers:
            problems.append(
                Problem(
                    code="env-wrong-provider",
                    message=_wrong_provider(name, provider, providers),
                    path=json_path([*base, "api_key"]),
                )
            )
    problems += _endpoint_problems(params, list(base), policy)
    problems += _search_key_problems(params, base, policy)
    for index, fallback in enumerate(params.get("fallbacks") or ()):
        if isinstance(fallback, dict):  # one of its own endpoint: allowed for its provider as the node's is
            problems += _endpoint_problems(fallback, [*base, "fallbacks", index], policy)
    kwargs = params.get("model_kwargs")
    if isinstance(kwargs, dict):
        problems += [
            Problem(
                code="redirect-kwarg",
                message=f"model_kwargs key {arg!r} could send the request, and its credential, elsewhere; set "
                "base_url (which the operator allows) or api_key instead",
                path=json_path([*base, "model_kwargs", arg]),
            )
            for arg in kwargs
            if _REDIRECTING.search(arg)
        ]
    return problems


def _endpoint_problems(params: Mapping[str, Any], base: list[str | int], policy: SecretPolicy) -> list[Problem]:
    """A model's ``base_url`` is one the operator allows for its provider, and its model name is no URL."""
    problems: list[Problem] = []
    provider = _provider(params)
    base_url = params.get("base_url")
    if isinstance(base_url, str) and base_url and not policy.allows_base_url(base_url, provider):
        problems.append(
            Problem(
                code="base-url-not-allowed",
                # the URL itself is not repeated: it may hold a literal credential (literal-secret says so)
                message=f"this base_url is not one this server sends {provider or 'this model'!r} requests to "
                f"(GITOPS_FLOW_ALLOWED_BASE_URLS allows {policy.describe_base_urls()})",
                path=json_path([*base, "base_url"]),
            )
        )
    model = params.get("model")
    if isinstance(model, str) and "://" in model:
        problems.append(
            Problem(
                code="base-url-not-allowed",
                message="a model name is never a URL; name the model, and its endpoint in base_url",
                path=json_path([*base, "model"]),
            )
        )
    return problems


def _search_key_problems(params: Mapping[str, Any], base: tuple[str | int, ...], policy: SecretPolicy) -> list[Problem]:
    """An Agent's ``search_api_key`` goes to the web search API alone: never a model provider's key."""
    name = env_name(params.get("search_api_key"))
    if name is None or not policy.allows(name) or not policy.providers_for(name):
        return []
    providers = ", ".join(sorted(policy.providers_for(name)))
    return [
        Problem(
            code="env-wrong-provider",
            message=f"{name} is the key of {providers}; it is never sent to the web search API",
            path=json_path([*base, "search_api_key"]),
        )
    ]


def _retriever_problems(params: Mapping[str, Any], base: tuple[str | int, ...], policy: SecretPolicy) -> list[Problem]:
    """A Retriever's key goes only to its embeddings' provider (it takes no endpoint: the provider's own)."""
    name = env_name(params.get("api_key"))
    embeddings = params.get("embeddings")
    if name is None or not isinstance(embeddings, str) or not policy.allows(name):
        return []
    provider = embeddings.partition(":")[0]
    providers = policy.providers_for(name)
    if provider in providers:
        return []
    return [
        Problem(
            code="env-wrong-provider",
            message=_wrong_provider(name, provider, providers),
            path=json_path([*base, "api_key"]),
        )
    ]


def _operator_problems(
    registry: ComponentRegistry,
    component: Component,
    params: Mapping[str, Any],
    base: tuple[str | int, ...],
    policy: SecretPolicy,
) -> list[Problem]:
    takes = registry.secret_names(component)
    problems = []
    for param in sorted(registry.secret_params(component)):
        name = env_name(params.get(param))
        if name is None or not policy.allows(name):
            continue  # no reference here, or one secretrefs.check refuses already
        named = takes.get(param)
        where = json_path([*base, param])
        if named is not None and not any(_matches(pattern, name) for pattern in named):
            message = f"{component.name}.{param} takes {', '.join(named) or 'no variable'}, not {name}"
            problems.append(Problem(code="env-not-allowed", message=message, path=where))
        elif named is None and policy.providers_for(name):
            providers = ", ".join(sorted(policy.providers_for(name)))
            message = (
                f"{name} is the key of {providers}; {component.name} takes it only if its declaration names it "
                f"(secrets: {{{param}: [{name}]}})"
            )
            problems.append(Problem(code="env-wrong-provider", message=message, path=where))
    return problems


def _matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


def _provider(params: Mapping[str, Any]) -> str | None:
    """The provider the node's model runs on; None when it cannot be told (the build says so itself)."""
    model, model_provider = params.get("model"), params.get("model_provider")
    if not isinstance(model, str) or not model or not (model_provider is None or isinstance(model_provider, str)):
        return None
    try:
        return provider_of(model, model_provider)[0]
    except BuildError:
        return None


def _wrong_provider(name: str, provider: str, providers: frozenset[str]) -> str:
    if not providers:
        return (
            f"{name} is bound to no model provider, so it is not sent to {provider!r}; the operator binds it with "
            f"{name}={provider} in GITOPS_FLOW_SECRETS"
        )
    return f"{name} is the key of {', '.join(sorted(providers))}; it is never sent to {provider!r}"

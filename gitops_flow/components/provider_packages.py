"""The Python package each model provider needs, which of them a flow needs, and whether they are installed.

``init_chat_model`` imports a provider's LangChain package (``langchain-openai`` for ``openai:``) only when a model is
made, so a server without it would serve nothing of such a flow. `validate` and `plan` say which packages each
flow needs; `serve` refuses to start while one is missing (cli), naming the extra (``gitops-flow[openai]``) or the
package to install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gitops_flow.exceptions import BuildError

MODEL_NODES = frozenset({"ChatModel", "Agent"})  # the built-ins whose params name a provider
# provider -> the gitops-flow extra that installs its package (pyproject.toml's optional dependencies)
EXTRAS = {
    "openai": "openai",
    "azure_openai": "openai",
    "anthropic": "anthropic",
    "google_genai": "google",
    "ollama": "ollama",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "anthropic_bedrock": "aws",
    "mistralai": "mistralai",
    "groq": "groq",
}


@dataclass(frozen=True, slots=True)
class ProviderPackage:
    """The package a provider's chat model lives in: its module and distribution names, and the extra bringing it."""

    provider: str
    module: str
    distribution: str
    extra: str | None

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def install_hint(self) -> str:
        """What to install: ``pip install 'gitops-flow[openai]'`` or ``pip install langchain-cohere``."""
        return f"pip install 'gitops-flow[{self.extra}]'" if self.extra else f"pip install {self.distribution}"


def package_of(provider: str) -> ProviderPackage:
    """The package of ``provider``; BuildError for a provider ``init_chat_model`` does not know."""
    from gitops_flow.security.providers import PROVIDER_MODULES

    if provider not in PROVIDER_MODULES:
        raise BuildError(
            f"unknown model provider {provider!r}; known: {', '.join(sorted(PROVIDER_MODULES))}", code="bad-param"
        )
    module = PROVIDER_MODULES[provider]
    return ProviderPackage(provider, module, module.replace("_", "-"), EXTRAS.get(provider))


def provider_class(provider: str) -> Any:
    """The chat model class of an installed provider (its module is imported), as ``init_chat_model`` makes it;
    None where LangChain's table of providers is not there to say (langchain_internals.provider_table)."""
    from gitops_flow.components.langchain_internals import provider_table

    entry = provider_table().get(provider)
    if entry is None:
        return None
    module, name = entry
    return getattr(importlib.import_module(module), name, None)


def needed(nodes: Iterable[tuple[str, dict[str, Any]]]) -> list[ProviderPackage]:
    """The packages the model nodes among ``nodes`` ((component, params) pairs) need, fallbacks included, once each,
    sorted by distribution; a node whose provider cannot be told is left to the build to report."""
    from gitops_flow.components.builtins import provider_of

    found: dict[str, ProviderPackage] = {}
    for component, params in nodes:
        if component not in MODEL_NODES:
            continue
        models: list[tuple[Any, Any]] = [(params.get("model"), params.get("model_provider"))]
        fallbacks = params.get("fallbacks")
        if isinstance(fallbacks, list):
            models += [
                (each.get("model"), each.get("model_provider")) if isinstance(each, dict) else (each, None)
                for each in fallbacks
            ]
        for model, model_provider in models:
            if (
                not isinstance(model, str)
                or not model
                or not (model_provider is None or isinstance(model_provider, str))
            ):
                continue
            try:
                package = package_of(provider_of(model, model_provider)[0])
            except BuildError:
                continue
            found.setdefault(package.distribution, package)
    return [found[name] for name in sorted(found)]

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
EXTRAS = {"openai": "openai", "azure_openai": "openai", "anthropic": "anthropic"}  # provider -> gitops-flow extra


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
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    if provider not in _BUILTIN_PROVIDERS:
        raise BuildError(
            f"unknown model provider {provider!r}; known: {', '.join(sorted(_BUILTIN_PROVIDERS))}", code="bad-param"
        )
    module = _BUILTIN_PROVIDERS[provider][0].split(".")[0]
    return ProviderPackage(provider, module, module.replace("_", "-"), EXTRAS.get(provider))


def provider_class(provider: str) -> Any:
    """The chat model class of an installed provider (its module is imported), as ``init_chat_model`` makes it."""
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    module, name, _ = _BUILTIN_PROVIDERS[provider]
    return getattr(importlib.import_module(module), name)


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

"""LangChain's private names this package relies on, in one place, each checked once at import (``HOOKS``).

The lean executor (gitops_flow/lean/) calls a chat model's own ``_agenerate``/``_astream`` and reuses LangChain's
helpers so that it answers exactly what ``ainvoke``/``astream`` answer; builtins asks LangChain which provider a
model name implies. None of these names is public, so a LangChain release may move or change any of them without
notice. At import, ``check`` looks each one up and compares its parameters (``inspect.signature``) with the ones this
package was written against. When a hook is missing or its parameters differ, the code that needs it takes LangChain's
public path instead and a warning names the hook:

- ``chat_model``: a model node is called through its public ``ainvoke``/``astream`` (slower, same answers);
- ``runnables``: flows run through their LangChain runnable (``BuiltFlow.lean`` is None);
- ``provider_inference``: a model must be named ``provider:model``.

The bounds in pyproject.toml (a ceiling on the next minor of langchain-core and langchain) and constraints.txt keep
an untested release out; tests/test_langchain_internals.py holds the check itself, and tests/test_lean.py runs the
differential tests on both paths.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gitops_flow.langchain")

# hook -> (module, attribute path, its parameter names in order); "self" included for methods
_CHAT_MODEL: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "_agenerate": (
        "langchain_core.language_models",
        "BaseChatModel._agenerate",
        ("self", "messages", "stop", "run_manager", "kwargs"),
    ),
    "_astream": (
        "langchain_core.language_models",
        "BaseChatModel._astream",
        ("self", "messages", "stop", "run_manager", "kwargs"),
    ),
    "_agenerate_with_cache": (
        "langchain_core.language_models",
        "BaseChatModel._agenerate_with_cache",
        ("self", "messages", "stop", "run_manager", "kwargs"),
    ),
    "_convert_input": ("langchain_core.language_models", "BaseChatModel._convert_input", ("self", "model_input")),
    "_should_stream": (
        "langchain_core.language_models",
        "BaseChatModel._should_stream",
        ("self", "async_api", "run_manager", "kwargs"),
    ),
    "_get_ls_params": ("langchain_core.language_models", "BaseChatModel._get_ls_params", ("self", "stop", "kwargs")),
    "_normalize_messages": ("langchain_core.language_models._utils", "_normalize_messages", ("messages",)),
    "_gen_info_and_msg_metadata": (
        "langchain_core.language_models.chat_models",
        "_gen_info_and_msg_metadata",
        ("generation",),
    ),
}
_RUNNABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "_ChunkAccumulator": (
        "langchain_core.runnables.base",
        "_ChunkAccumulator.__init__",
        ("self", "stop_after_unaddable"),
    ),
    "_ChunkAccumulator.add": ("langchain_core.runnables.base", "_ChunkAccumulator.add", ("self", "chunk")),
    "_ChunkAccumulator.value": ("langchain_core.runnables.base", "_ChunkAccumulator.value", ()),
    "_validate_input": ("langchain_core.prompts.base", "BasePromptTemplate._validate_input", ("self", "inner_input")),
}
_PROVIDER_INFERENCE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "_attempt_infer_model_provider": (
        "langchain.chat_models.base",
        "_attempt_infer_model_provider",
        ("model_name",),
    ),
}
EXPECTED: Mapping[str, Mapping[str, tuple[str, str, tuple[str, ...]]]] = {
    "chat_model": _CHAT_MODEL,
    "runnables": _RUNNABLES,
    "provider_inference": _PROVIDER_INFERENCE,
}


@dataclass(frozen=True, slots=True)
class Hooks:
    """Which groups of private hooks are as expected; ``drift`` says, for each hook that is not, what differs."""

    chat_model: bool
    runnables: bool
    provider_inference: bool
    drift: tuple[str, ...] = ()


def _resolve(module: str, path: str) -> Any:
    """The object at ``path`` in ``module`` (a class's attributes read statically: a property stays a property),
    or None."""
    first, *rest = path.split(".")
    try:
        found: Any = getattr(importlib.import_module(module), first)  # a package may export it lazily
        for part in rest:
            found = inspect.getattr_static(found, part)
    except Exception:  # noqa: BLE001 - a module that fails to import (whatever it raises) gives no hook
        return None
    return found


def _differs(module: str, path: str, params: tuple[str, ...]) -> str | None:
    """What is wrong with one hook, or None when it is there with ``params``."""
    found = _resolve(module, path)
    if found is None:
        return f"{module}.{path} is missing"
    if isinstance(found, property):
        return None if not params else f"{module}.{path} is a property"
    if isinstance(found, staticmethod | classmethod):
        found = found.__func__
    if not callable(found):
        return f"{module}.{path} is not callable"
    try:
        names = tuple(inspect.signature(found).parameters)
    except (TypeError, ValueError):
        return f"{module}.{path} has no signature to read"
    if names != params:
        return f"{module}.{path} takes ({', '.join(names)}), not ({', '.join(params)})"
    return None


def check(expected: Mapping[str, Mapping[str, tuple[str, str, tuple[str, ...]]]] = EXPECTED) -> Hooks:
    """Each group of hooks looked up and compared; a warning for each group that cannot be used."""
    ok: dict[str, bool] = {}
    drift: list[str] = []
    for group, hooks in expected.items():
        found = [d for d in (_differs(*spec) for spec in hooks.values()) if d is not None]
        ok[group] = not found
        if found:
            log.warning(
                "LangChain's private %s hooks differ from what gitops-flow was written against (%s): using the "
                "public path instead; install the versions in constraints.txt for the fast one",
                group,
                "; ".join(found),
            )
        drift += found
    return Hooks(
        chat_model=ok.get("chat_model", False),
        runnables=ok.get("runnables", False),
        provider_inference=ok.get("provider_inference", False),
        drift=tuple(drift),
    )


HOOKS = check()

# the module-level helpers, looked up once (None where missing: HOOKS then says not to use them)
_normalize_messages: Any = _resolve("langchain_core.language_models._utils", "_normalize_messages")
_gen_info_and_msg_metadata: Any = _resolve("langchain_core.language_models.chat_models", "_gen_info_and_msg_metadata")
_ChunkAccumulator: Any = _resolve("langchain_core.runnables.base", "_ChunkAccumulator")
_attempt_infer_model_provider: Any = _resolve("langchain.chat_models.base", "_attempt_infer_model_provider")


# -- the hooks, used only where HOOKS says they are as expected ------------------------------------------------------


def agenerate(model: Any, messages: list[Any]) -> Any:
    """``model._agenerate(messages)``: the model's own answer, without callbacks (an awaitable ChatResult)."""
    return model._agenerate(messages, stop=None)


def astream(model: Any, messages: list[Any]) -> AsyncIterator[Any]:
    """``model._astream(messages)``: the model's own chunks, without callbacks (no layer of ours per chunk)."""
    return model._astream(messages, stop=None)  # type: ignore[no-any-return]


def messages_of(model: Any, value: Any) -> list[Any]:
    """The messages ``model`` sends for ``value``, as BaseChatModel's ``agenerate_prompt`` makes them."""
    return _normalize_messages(model._convert_input(value).to_messages())  # type: ignore[no-any-return]


def should_stream(model: Any, **kwargs: Any) -> bool:
    """BaseChatModel's ``_should_stream``: whether the model streams a call of this kind."""
    return bool(model._should_stream(**kwargs))


def model_name(model: Any) -> Any:
    """The model's name as LangChain's tracing metadata gives it (``ls_model_name``), or None."""
    return model._get_ls_params().get("ls_model_name")


def response_metadata(generation: Any) -> dict[str, Any]:
    """A generation's message's ``response_metadata`` merged with its ``generation_info``, as LangChain merges them."""
    return _gen_info_and_msg_metadata(generation)  # type: ignore[no-any-return]


def reproduced_unchanged(model: Any, names: Sequence[str]) -> bool:
    """Whether ``model``'s class keeps BaseChatModel's own implementation of each method in ``names``."""
    from langchain_core.language_models import BaseChatModel

    return all(getattr(type(model), name, None) is getattr(BaseChatModel, name, None) for name in names)


def accumulator() -> Any:
    """LangChain's ``_ChunkAccumulator`` as its default ``atransform`` uses it: ``add(chunk)``, then ``value``."""
    return _ChunkAccumulator(stop_after_unaddable=False)


def prompt_variables(prompt: Any, value: Any) -> dict[str, Any]:
    """The variables a prompt formats ``value`` with (its ``_validate_input``; raises as ``ainvoke`` would)."""
    return prompt._validate_input(value)  # type: ignore[no-any-return]


def inferred_provider(model: str) -> str | None:
    """The provider ``init_chat_model`` infers from a bare model name, or None (also when the hook is not there)."""
    if not HOOKS.provider_inference:
        return None
    found: str | None = _attempt_infer_model_provider(model)
    return found


def provider_table() -> dict[str, tuple[str, str]]:
    """``init_chat_model``'s providers: provider -> (module, chat model class name), from LangChain's private
    ``_BUILTIN_PROVIDERS``; empty where that table is not there or has another shape (older or newer langchain), so
    callers go on without what it tells (a provider's class fields)."""
    import importlib

    table = getattr(importlib.import_module("langchain.chat_models.base"), "_BUILTIN_PROVIDERS", None)
    if not isinstance(table, dict):
        return {}
    found: dict[str, tuple[str, str]] = {}
    for provider, entry in table.items():
        if isinstance(entry, tuple) and len(entry) >= 2 and all(isinstance(part, str) for part in entry[:2]):
            found[provider] = (entry[0], entry[1])
    return found


def embedding_providers() -> tuple[str, ...] | None:
    """The providers ``init_embeddings`` knows, from LangChain's private table; None where it is not there."""
    try:
        from langchain.embeddings.base import _BUILTIN_PROVIDERS
    except ImportError:
        return None
    return tuple(_BUILTIN_PROVIDERS)

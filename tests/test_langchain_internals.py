"""langchain_internals.py and http_server.py check, at import, the private names of LangChain and uvicorn they rely
on: a missing hook or one whose parameters changed is found and named; LangChain's then falls back to the public path
with a warning, uvicorn's refuses to serve unbounded."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gitops_flow.components import langchain_internals
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.runtime.lean.forms import Fallback, Model, form_of
from gitops_flow.server import listener as http_server
from tests.helpers import chain, registry_with


def test_the_installed_langchain_has_every_hook() -> None:
    """constraints.txt's LangChain is the one the hooks were written against: the fast path is on."""
    hooks = langchain_internals.check()
    assert hooks == langchain_internals.Hooks(chat_model=True, runnables=True, provider_inference=True)


def _expected(group: str, name: str, spec: tuple[str, str, tuple[str, ...]]) -> dict[str, Any]:
    return {**langchain_internals.EXPECTED, group: {**langchain_internals.EXPECTED[group], name: spec}}


@pytest.mark.parametrize(
    ("group", "spec", "says"),
    [
        (
            "chat_model",
            ("langchain_core.language_models", "BaseChatModel._agenerate", ("self", "messages", "stop", "kwargs")),
            "BaseChatModel._agenerate takes (self, messages, stop, run_manager, kwargs), not (self, messages, stop, "
            "kwargs)",
        ),
        (
            "chat_model",
            ("langchain_core.language_models", "BaseChatModel._agenerate_gone", ("self",)),
            "BaseChatModel._agenerate_gone is missing",
        ),
        (
            "runnables",
            ("langchain_core.runnables.base", "_ChunkSummer.__init__", ("self",)),
            "langchain_core.runnables.base._ChunkSummer.__init__ is missing",
        ),
        (
            "provider_inference",
            ("langchain.chat_models.gone", "_attempt_infer_model_provider", ("model_name",)),
            "langchain.chat_models.gone._attempt_infer_model_provider is missing",
        ),
    ],
    ids=["changed-parameters", "missing-method", "missing-class", "missing-module"],
)
def test_a_drifted_hook_turns_its_group_off_with_a_warning(
    group: str, spec: tuple[str, str, tuple[str, ...]], says: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gitops_flow.langchain"):
        hooks = langchain_internals.check(_expected(group, "probe", spec))
    assert getattr(hooks, group) is False
    assert [g for g in ("chat_model", "runnables", "provider_inference") if not getattr(hooks, g)] == [group]
    assert any(says in d for d in hooks.drift), hooks.drift
    assert any(says in r.getMessage() and "public path" in r.getMessage() for r in caplog.records)


def _model_flow() -> FlowSpec:
    return FlowSpec.model_validate(
        chain(("p", "PromptTemplate", {"template": "{question}"}), ("m", "FakeChatModel", {"responses": ["a b"]}))
    )


def test_without_the_chat_model_hooks_a_model_is_called_through_its_public_methods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = build_flow(_model_flow(), registry_with(), dry_run=True)
    assert built.lean is not None
    private = built.lean.forms["m"]  # type: ignore[union-attr]
    assert isinstance(private, Model) and private.model.private
    monkeypatch.setattr(
        langchain_internals,
        "HOOKS",
        langchain_internals.Hooks(chat_model=False, runnables=True, provider_inference=True),
    )
    public = form_of(private.runnable)
    assert isinstance(public, Model) and not public.model.private and not isinstance(public, Fallback)
    assert not public.model.direct(streaming=False) and not public.model.direct(streaming=True)


def test_without_the_runnable_hooks_a_flow_runs_as_its_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        langchain_internals,
        "HOOKS",
        langchain_internals.Hooks(chat_model=True, runnables=False, provider_inference=True),
    )
    built = build_flow(_model_flow(), registry_with(), dry_run=True)
    assert built.lean is None


def test_without_provider_inference_a_bare_model_name_asks_for_its_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from gitops_flow.components.builtins import provider_of
    from gitops_flow.exceptions import BuildError

    assert provider_of("gpt-4o-mini", None) == ("openai", "gpt-4o-mini")
    monkeypatch.setattr(
        langchain_internals,
        "HOOKS",
        langchain_internals.Hooks(chat_model=True, runnables=True, provider_inference=False),
    )
    with pytest.raises(BuildError, match="write it as 'provider:model'"):
        provider_of("gpt-4o-mini", None)
    assert provider_of("openai:gpt-4o-mini", None) == ("openai", "gpt-4o-mini")


# -- uvicorn -------------------------------------------------------------------------------------------------------


def test_the_installed_uvicorn_has_every_method_the_bounded_protocol_hooks() -> None:
    assert http_server.hook_drift(HttpToolsProtocol, http_server.BoundedProtocol) == []


def test_an_uvicorn_without_start_asgi_task_is_refused() -> None:
    """uvicorn 0.30's protocol has no ``_start_asgi_task``: our override would never run, and the connection's
    running request would never be known to the timers. Found, and named."""

    class Older(HttpToolsProtocol):
        pass

    Older._start_asgi_task = None  # type: ignore[assignment,method-assign]

    class Changed(HttpToolsProtocol):
        def on_url(self, url: bytes, extra: int) -> None:  # type: ignore[override]
            pass

    assert http_server.hook_drift(Older, http_server.BoundedProtocol) == ["Older._start_asgi_task is missing"]
    assert http_server.hook_drift(Changed, http_server.BoundedProtocol) == [
        "Changed.on_url takes (self, url, extra), not (self, url)"
    ]

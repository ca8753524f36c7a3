"""The lean executor answers what LangChain's runnables answer with real provider classes: langchain-openai's
``ChatOpenAI`` and langchain-anthropic's ``ChatAnthropic``, over HTTP to loopback stand-ins of their APIs
(tests/providerapis.py), invoked, batched and streamed; on the private path (the model's own ``_agenerate`` and
``_astream``) and on the public one (its ``ainvoke``/``astream``, what a drifted LangChain hook falls back to)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic  # noqa: E402 - the dev extra installs both provider packages
from langchain_openai import ChatOpenAI  # noqa: E402

from gitops_flow.components import langchain_internals
from gitops_flow.components.base import Component
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import BuiltFlow, build_flow
from gitops_flow.runtime.executor import run_lean
from gitops_flow.runtime.lean.forms import Model
from gitops_flow.runtime.lean.program import LeanFlow
from tests.helpers import chain, edge, flow, node, registry_with
from tests.providerapis import ProviderAPIs, provider_apis

PRIVATE = langchain_internals.HOOKS
PUBLIC = langchain_internals.Hooks(chat_model=False, runnables=True, provider_inference=True)


@pytest.fixture(scope="module")
def apis() -> Iterator[ProviderAPIs]:
    with provider_apis() as running:
        yield running


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the file: the provider packages keep one HTTP client per base URL across models."""
    running = asyncio.new_event_loop()
    yield running
    running.close()


def _registry(apis: ProviderAPIs) -> Any:
    def openai() -> Any:
        return ChatOpenAI(model="gpt-4o-mini", base_url=apis.base + "/v1", api_key="sk-standin", max_retries=0)

    def anthropic() -> Any:
        return ChatAnthropic(  # type: ignore[call-arg]
            model="claude-standin", base_url=apis.base, api_key="sk-ant-standin", max_retries=0
        )

    return registry_with(Component("OpenAI", openai), Component("Anthropic", anthropic))


def _docs(provider: str) -> dict[str, dict[str, Any]]:
    """A chain ending in the model's message, one ending in its text, and a fan-out of two model calls."""
    fan = flow(
        name="fan",
        nodes=[
            node("p1", "PromptTemplate", template="first {question}"),
            node("p2", "PromptTemplate", template="second {question}"),
            node("m1", provider),
            node("m2", provider),
            node("s1", "StrOutputParser"),
            node("s2", "StrOutputParser"),
            node("j", "PromptTemplate", template="{a} / {b}"),
            node("m3", provider),
            node("out", "StrOutputParser"),
        ],
        edges=[
            edge("p1", "m1"),
            edge("p2", "m2"),
            edge("m1", "s1"),
            edge("m2", "s2"),
            edge("s1", "j", "a"),
            edge("s2", "j", "b"),
            edge("j", "m3"),
            edge("m3", "out"),
        ],
    )
    fan["nodes"].insert(0, node("in", "Passthrough"))
    fan["edges"] += [edge("in", "p1"), edge("in", "p2")]
    return {
        "message": chain(("p", "ChatPromptTemplate", {"messages": [["human", "{question}"]]}), ("m", provider, {})),
        "text": chain(
            ("p", "PromptTemplate", {"template": "say {question}"}), ("m", provider, {}), ("s", "StrOutputParser", {})
        ),
        "fan-out": fan,
    }


CALLS: dict[str, Callable[[Any], Any]] = {
    "invoke": lambda r: r.ainvoke({"question": "what is up"}, {}),
    "batch": lambda r: r.abatch([{"question": "one two"}, {"question": "three"}], [{"max_concurrency": 2}] * 2),
    "stream": lambda r: _chunks(r.astream({"question": "stream these words"}, {})),
}


async def _chunks(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def _build(doc: dict[str, Any], apis: ProviderAPIs) -> BuiltFlow:
    return build_flow(FlowSpec.model_validate(doc), _registry(apis))


@pytest.mark.parametrize("hooks", [PRIVATE, PUBLIC], ids=["private", "public"])
@pytest.mark.parametrize("shape", ["message", "text", "fan-out"])
@pytest.mark.parametrize("provider", ["OpenAI", "Anthropic"])
def test_real_provider_classes_answer_the_same_on_both_paths(
    apis: ProviderAPIs,
    loop: asyncio.AbstractEventLoop,
    provider: str,
    shape: str,
    hooks: langchain_internals.Hooks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gitops_flow.runtime.lean.identity import difference

    assert PRIVATE.chat_model, "the installed LangChain has the hooks this test's private path needs"
    monkeypatch.setattr(langchain_internals, "HOOKS", hooks)
    doc = _docs(provider)[shape]
    lean = _build(doc, apis).lean
    assert isinstance(lean, LeanFlow)
    models = [form for form in lean.forms.values() if isinstance(form, Model)]
    assert models and all(form.model.private is hooks.chat_model for form in models)
    for call_name, call in CALLS.items():
        before = len(apis.requests)
        theirs = loop.run_until_complete(call(run_lean(_build(doc, apis), False)))
        ours = loop.run_until_complete(call(run_lean(_build(doc, apis), True)))
        assert len(apis.requests) > before
        differs = difference(theirs, ours)
        assert differs is None, f"{provider} {shape} {call_name}: {differs}"
        if call_name == "stream" and shape != "fan-out":
            assert len(ours) > 3, ours  # the model's tokens arrived one by one, not as one answer


def test_the_stand_ins_stream_when_asked(apis: ProviderAPIs, loop: asyncio.AbstractEventLoop) -> None:
    """The streams above went over SSE: each provider class asked its API for a stream, and got one."""
    doc = _docs("OpenAI")["text"]
    before = len(apis.requests)
    loop.run_until_complete(_chunks(run_lean(_build(doc, apis), True).astream({"question": "a b"}, {})))
    doc = _docs("Anthropic")["text"]
    loop.run_until_complete(_chunks(run_lean(_build(doc, apis), True).astream({"question": "a b"}, {})))
    asked = apis.requests[before:]
    assert [(path, body.get("stream")) for path, body in asked] == [
        ("/v1/chat/completions", True),
        ("/v1/messages", True),
    ]

"""ToolAgent: a chat model that calls tools in a loop until it answers; the built-in tools; a fake model for tests.

The loop is small and explicit rather than langchain's ``create_agent`` graph, so that the agent is one plain
runnable: it takes what a chat model takes (text, messages, a prompt value), answers an AIMessage like a chat model,
and streams the tokens of its final answer. Tools are a closed set named in the flow: two offline functions
(calculator, current_date) and two that go out through the egress allowlist (fetch_url, web_search), whose requests
count towards the flow run's (the Tally in their config; an agent run without one gets its own).
"""

from __future__ import annotations

import datetime
import json
import typing
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, GenericFakeChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from gitops_flow.components import http_request, web_search
from gitops_flow.components.calculator import CalculationError, evaluate, format_number
from gitops_flow.components.http_fetch import RUN_KEY, Fetcher, Tally, blocking
from gitops_flow.security.egress import EgressPolicy


class _CalculatorArgs(BaseModel):
    expression: str = Field(description="An arithmetic expression, e.g. '(2 + 3) * 4 / 7' or '2 ** 10'.")


def _calculate(expression: str) -> str:
    try:
        return format_number(evaluate(expression))
    except CalculationError as exc:
        return f"Error: {exc}"  # the model reads this and can correct itself, as with any tool error


def _current_date() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _FetchArgs(BaseModel):
    url: str = Field(description="The http(s) URL of the page to fetch.")


class _SearchArgs(BaseModel):
    query: str = Field(description="What to search the web for, in a few words (at most 400 characters).")


def _fetch_tool(fetcher: Fetcher, spec: Any) -> BaseTool:
    form: http_request.Format = getattr(spec, "format", "text")
    max_bytes = getattr(spec, "max_bytes", None)

    async def fetch_url(url: str, config: RunnableConfig) -> str:
        return await http_request.fetch_for_tool(fetcher, fetcher.allowance(config), url, form, max_bytes)

    def fetch_url_sync(url: str, config: RunnableConfig) -> str:
        return blocking(fetch_url(url, config))

    return StructuredTool.from_function(
        fetch_url_sync,
        coroutine=fetch_url,
        name="fetch_url",
        description="Fetch a web page or an API's answer by its URL and read its text.",
        args_schema=_FetchArgs,
    )


def _search_tool(fetcher: Fetcher, spec: Any, key: str | None) -> BaseTool:
    options = (
        spec.model_dump(exclude={"name"})
        if not isinstance(spec, str)
        else {"max_results": 5, "search_depth": "basic", "topic": "general"}
    )
    options = {"include_domains": None, "exclude_domains": None, "time_range": None, **options}

    async def search(query: str, config: RunnableConfig) -> str:
        return await web_search.search_for_tool(fetcher, fetcher.allowance(config), key, query, options)

    def search_sync(query: str, config: RunnableConfig) -> str:
        return blocking(search(query, config))

    return StructuredTool.from_function(
        search_sync,
        coroutine=search,
        name="web_search",
        description="Search the web; answers the top results, each with its title, URL and content.",
        args_schema=_SearchArgs,
    )


def make_tools(
    specs: Sequence[Any], *, fetcher: Fetcher | None = None, search_key: str | None = None
) -> list[BaseTool]:
    """The built-in tools named (a name, or an object with its ``name`` and options), in order, each once.
    ``fetcher`` makes fetch_url's and web_search's requests (none given: one whose policy refuses every request)."""
    made: dict[str, BaseTool] = {}
    for spec in specs:
        name = spec if isinstance(spec, str) else spec.name
        if name == "fetch_url":
            made[name] = _fetch_tool(fetcher or Fetcher(EgressPolicy()), spec)
        elif name == "web_search":
            made[name] = _search_tool(fetcher or Fetcher(EgressPolicy()), spec, search_key)
        elif name == "calculator":
            made[name] = StructuredTool.from_function(
                _calculate,
                name="calculator",
                description="Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses.",
                args_schema=_CalculatorArgs,
            )
        elif name == "current_date":
            made[name] = StructuredTool.from_function(
                _current_date, name="current_date", description="The current date and time (UTC)."
            )
    return list(made.values())


class ToolAgent(Runnable[LanguageModelInput, BaseMessage]):
    """Calls ``model`` with the tools bound; runs each tool call it makes and calls it again with the results,
    at most ``max_iterations`` times; its first answer without tool calls is the agent's answer."""

    def __init__(
        self,
        model: Runnable[Any, Any],
        tools: Sequence[BaseTool],
        *,
        system_prompt: str = "",
        max_iterations: int,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.model = model
        self.tools = {tool.name: tool for tool in tools}
        self.system_prompt = system_prompt
        self.max_iterations = max_iterations
        self.fetcher = fetcher

    def _run_config(self, config: RunnableConfig | None) -> RunnableConfig:
        """The config this run's tool calls get: the caller's, whose Tally counts their requests with the flow run's;
        a Tally of the agent run's own when the caller's config has none."""
        given = dict(config or {})
        configurable = typing.cast(dict[str, Any], given.get("configurable") or {})
        if self.fetcher is None or isinstance(configurable.get(RUN_KEY), Tally):
            return typing.cast(RunnableConfig, given)
        return typing.cast(RunnableConfig, {**given, "configurable": {**configurable, RUN_KEY: Tally()}})

    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        return LanguageModelInput

    @property
    def OutputType(self) -> Any:  # noqa: N802 - LangChain's name
        return AIMessage

    def _messages(self, input: LanguageModelInput) -> list[BaseMessage]:
        if isinstance(input, str):
            messages: list[BaseMessage] = [HumanMessage(input)]
        elif isinstance(input, PromptValue):
            messages = input.to_messages()
        elif isinstance(input, Sequence) and all(isinstance(m, BaseMessage) for m in input):
            messages = [m for m in input if isinstance(m, BaseMessage)]
        else:
            raise ValueError(f"an agent takes text, messages or a prompt, not {type(input).__name__}")
        if self.system_prompt and not any(isinstance(m, SystemMessage) for m in messages):
            messages.insert(0, SystemMessage(self.system_prompt))
        return messages

    def _run_tools(self, calls: Sequence[ToolCall], config: RunnableConfig | None) -> list[ToolMessage]:
        return [
            ToolMessage(self._call(call, config), tool_call_id=call.get("id") or "", name=call["name"])
            for call in calls
        ]

    def _call(self, call: ToolCall, config: RunnableConfig | None) -> str:
        tool = self.tools.get(call["name"])
        if tool is None:
            return f"Error: there is no tool {call['name']!r}; the tools are {', '.join(self.tools) or 'none'}"
        try:
            return str(tool.invoke(call["args"], config))
        except Exception as exc:  # noqa: BLE001 - a tool's failure is the model's to read, not the request's
            return f"Error: {type(exc).__name__}: {exc}"

    async def _arun_tools(self, calls: Sequence[ToolCall], config: RunnableConfig | None) -> list[ToolMessage]:
        """``_run_tools`` off the event loop's back: a tool that goes out (fetch_url) is awaited, not blocked on."""
        return [
            ToolMessage(await self._acall(call, config), tool_call_id=call.get("id") or "", name=call["name"])
            for call in calls
        ]

    async def _acall(self, call: ToolCall, config: RunnableConfig | None) -> str:
        tool = self.tools.get(call["name"])
        if not isinstance(tool, StructuredTool) or tool.coroutine is None:
            return self._call(call, config)  # no such tool, or an offline one: as fast called here as in a thread
        try:
            return str(await tool.ainvoke(call["args"], config))
        except Exception as exc:  # noqa: BLE001 - a tool's failure is the model's to read, not the request's
            return f"Error: {type(exc).__name__}: {exc}"

    def _too_many(self) -> AIMessage:
        return AIMessage(f"I stopped after {self.max_iterations} tool calls without reaching an answer.")

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        messages = self._messages(input)
        config = self._run_config(config)
        for _ in range(self.max_iterations):
            answer = self.model.invoke(messages, config)
            if not getattr(answer, "tool_calls", None):
                return _as_ai(answer)
            messages += [answer, *self._run_tools(answer.tool_calls, config)]
        return self._too_many()

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        final: AIMessageChunk | None = None
        async for chunk in self.astream(input, config, **kwargs):
            piece = chunk if isinstance(chunk, AIMessageChunk) else AIMessageChunk(content=chunk.content)
            final = piece if final is None else final + piece
        return _as_ai(final if final is not None else AIMessage(""))

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[BaseMessage]:
        yield self.invoke(input, config, **kwargs)

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[BaseMessage]:
        """Streams the final answer token by token; a turn that calls tools is not shown, only acted on."""
        messages = self._messages(input)
        config = self._run_config(config)
        for _ in range(self.max_iterations):
            turn: AIMessageChunk | None = None
            async for chunk in self.model.astream(messages, config):
                if not isinstance(chunk, AIMessageChunk):
                    chunk = AIMessageChunk(content=getattr(chunk, "content", str(chunk)))
                turn = chunk if turn is None else turn + chunk
                if not turn.tool_call_chunks:  # text before any tool call is the answer (or a preamble to it)
                    yield chunk
            if turn is None or not turn.tool_calls:
                return
            messages += [_as_ai(turn), *await self._arun_tools(turn.tool_calls, config)]
        yield AIMessageChunk(content=self._too_many().content)


def _as_ai(message: Any) -> AIMessage:
    if isinstance(message, AIMessage) and not isinstance(message, AIMessageChunk):
        return message
    if isinstance(message, AIMessageChunk):
        return AIMessage(content=message.content, tool_calls=message.tool_calls, id=message.id)
    return AIMessage(content=getattr(message, "content", str(message)))


def with_tools(model: Runnable[Any, Any], tools: Sequence[BaseTool]) -> Runnable[Any, Any]:
    """``model`` with the tools bound, when there are any (a model without tool support fails here, at build)."""
    if not tools:
        return model
    if not isinstance(model, BaseChatModel):
        raise TypeError(f"{type(model).__name__} cannot call tools")
    return model.bind_tools(list(tools))


# -- a fake model that can call tools --------------------------------------------------------------------------------


class FakeToolChatModel(GenericFakeChatModel):
    """GenericFakeChatModel whose answers may be tool calls: an answer that is a JSON object with ``tool_calls``
    (``{"tool_calls": [{"name": "calculator", "args": {"expression": "2+3*4"}}]}``) is a turn that calls tools."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        return self  # the answers are given; the tools are the agent's to run

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        message = self._generate(messages, stop=stop).generations[0].message
        if isinstance(message, AIMessage) and message.tool_calls:
            chunks = [
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c.get("id"), "index": i}
                for i, c in enumerate(message.tool_calls)
            ]
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=chunks))  # type: ignore[arg-type]
            return
        text = message.content if isinstance(message.content, str) else str(message.content)
        for index, token in enumerate(text.split(" ")):
            yield ChatGenerationChunk(message=AIMessageChunk(content=token if index == 0 else " " + token))


def fake_answer(text: str, turn: int) -> AIMessage:
    """One scripted answer: a tool-call turn when ``text`` is a JSON object with ``tool_calls``, else plain text."""
    try:
        data = json.loads(text)
    except ValueError:
        return AIMessage(text)
    if not isinstance(data, dict) or set(data) != {"tool_calls"} or not isinstance(data["tool_calls"], list):
        return AIMessage(text)
    calls = [
        ToolCall(name=str(c.get("name", "")), args=dict(c.get("args") or {}), id=f"call_{turn}_{i}")
        for i, c in enumerate(data["tool_calls"])
        if isinstance(c, dict)
    ]
    return AIMessage(content="", tool_calls=calls)


def fake_tool_model(responses: Sequence[str]) -> FakeToolChatModel:
    """A fake model answering ``responses`` in turn (and then again), tool-call turns included."""
    answers = [fake_answer(text, turn) for turn, text in enumerate(responses)]
    return FakeToolChatModel(messages=_cycle(answers))


def _cycle(answers: list[AIMessage]) -> Iterator[AIMessage]:
    while True:
        yield from answers

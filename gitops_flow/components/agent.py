"""ToolAgent: a chat model that calls tools in a loop until it answers; the built-in tools; a fake model for tests.

The loop is small and explicit rather than langchain's ``create_agent`` graph, so that the agent is one plain
runnable: it takes what a chat model takes (text, messages, a prompt value), answers an AIMessage like a chat model,
and streams the tokens of its final answer. Tools are a closed set of safe, offline functions named in the flow.
"""

from __future__ import annotations

import datetime
import json
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

from gitops_flow.components.calculator import CalculationError, evaluate, format_number


class _CalculatorArgs(BaseModel):
    expression: str = Field(description="An arithmetic expression, e.g. '(2 + 3) * 4 / 7' or '2 ** 10'.")


def _calculate(expression: str) -> str:
    try:
        return format_number(evaluate(expression))
    except CalculationError as exc:
        return f"Error: {exc}"  # the model reads this and can correct itself, as with any tool error


def _current_date() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def make_tools(names: Sequence[str]) -> list[BaseTool]:
    """The built-in tools named, in order, each once."""
    made: dict[str, BaseTool] = {}
    for name in names:
        if name == "calculator":
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
        self, model: Runnable[Any, Any], tools: Sequence[BaseTool], *, system_prompt: str = "", max_iterations: int
    ) -> None:
        self.model = model
        self.tools = {tool.name: tool for tool in tools}
        self.system_prompt = system_prompt
        self.max_iterations = max_iterations

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

    def _too_many(self) -> AIMessage:
        return AIMessage(f"I stopped after {self.max_iterations} tool calls without reaching an answer.")

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        messages = self._messages(input)
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
            messages += [_as_ai(turn), *self._run_tools(turn.tool_calls, config)]
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

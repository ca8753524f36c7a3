"""Each node's lean form: what its runnable does to one value (``invoke``) and to a stream of chunks
(``transform``), done directly. A prompt formats, a model is called through lean.models, a parser parses each chunk
in place (no thread-pool hop per token), a lambda is called; a node with no lean form runs its own runnable.

Streams follow LangChain's rules exactly: a node that cannot stream (a prompt, a lambda, a model's input) first adds
up every chunk it is given with ``+`` (LangChain's own ``_ChunkAccumulator``), then runs once; a string parser maps
each chunk; a JSON parser parses what it has so far and yields each new value.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from langchain_core.messages import AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk, LLMResult
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.prompts.base import BasePromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnablePassthrough
from langchain_core.runnables.utils import accepts_config, accepts_run_manager

from gitops_flow.components import langchain_internals as internals
from gitops_flow.components.model_calls import LeanModel, leanable, standard
from gitops_flow.components.sectioned_prompts import SECTIONED

CONFIG_KEYS = ("configurable", "tags", "metadata", "callbacks", "recursion_limit")  # what a node's runnable gets


class Observer(Protocol):
    """What a lean run tells about its nodes (telemetry's NodeObserver, with a model's result as LangChain's
    ``on_llm_end`` sees it)."""

    def node_started(self, node: str) -> object: ...

    def node_finished(self, token: object) -> None: ...

    def node_failed(self, token: object, error: BaseException) -> None: ...

    def model_result(self, token: object, result: LLMResult, model: str | None) -> None: ...


class Run:
    """One run of a lean program: the config a node's own runnable gets (the caller's, without its run id and
    name, as LangChain hands a step its child config), and who observes it."""

    __slots__ = ("config", "observer")

    def __init__(self, config: Mapping[str, Any] | None, observer: Observer | None) -> None:
        given = config or {}
        self.config = typing.cast(RunnableConfig, {k: given[k] for k in CONFIG_KEYS if k in given})
        self.observer = observer

    def reporter(self, token: object) -> Any:
        observer = self.observer
        if observer is None:
            return None
        return lambda result, model: observer.model_result(token, result, model)


async def gathered(chunks: AsyncIterator[Any]) -> tuple[bool, Any]:
    """Whether ``chunks`` gave any chunk, and their sum as LangChain's default ``atransform`` adds them up."""
    accumulated = internals.accumulator()
    got = False
    async for chunk in chunks:
        accumulated.add(chunk)
        got = True
    return got, accumulated.value


class Form:
    """A node's lean form. ``additive``: the chunks it streams add up with ``+`` to its value without a TypeError
    (text, messages, a single chunk), so a fan-out may keep its value as the sum; ``lean``: it skips its runnable."""

    additive = True
    lean = True

    def __init__(self, runnable: Runnable[Any, Any]) -> None:
        self.runnable = runnable

    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        return await self.runnable.ainvoke(value, run.config)

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        """Buffer the input (LangChain's default ``atransform``), then answer once."""
        got, value = await gathered(chunks)
        if got:
            yield await self.invoke(value, run, token)


class Fallback(Form):
    """A node with no lean form: its own runnable, streamed through its own ``atransform``."""

    additive = False
    lean = False

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        async for chunk in self.runnable.atransform(chunks, run.config):
            yield chunk


class Passthrough(Form):
    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        return value

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        async for chunk in chunks:
            yield chunk


class Prompt(Form):
    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        prompt = self.runnable
        assert isinstance(prompt, BasePromptTemplate)
        return prompt.format_prompt(**internals.prompt_variables(prompt, value))


class Lambda(Form):
    """A RunnableLambda of one plain function (Pick, Text)."""

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        got, value = await gathered(chunks)
        yield await self.invoke(value if got else _nothing(), run, token)

    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        assert isinstance(self.runnable, RunnableLambda)
        output = self.runnable.func(value)
        if isinstance(output, Runnable):  # what RunnableLambda does with a runnable it is given back
            return await output.ainvoke(value, run.config)
        return output


def _nothing() -> Any:
    """What RunnableLambda does when its stream gave it no chunk at all: it reads its input variable, which was
    never set (``final``), and Python raises UnboundLocalError, worded as Python words it. The same read, here."""
    final: Any
    return final  # noqa: F821


class Model(Form):
    """A chat model: called through its own hooks (``private``), or through its public ``ainvoke``/``astream`` when
    LangChain's hooks are not what lean.models was written against (langchain_internals)."""

    def __init__(self, runnable: Runnable[Any, Any], *, private: bool = True) -> None:
        super().__init__(runnable)
        self.model = LeanModel(runnable, private=private)  # type: ignore[arg-type]

    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        if not self.model.direct(streaming=False):
            return await self.runnable.ainvoke(value, run.config)
        return await self.model.invoke(value, run.reporter(token))

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        got, value = await gathered(chunks)
        if not got:
            return
        if not self.model.direct(streaming=True):
            async for chunk in self.runnable.astream(value, run.config):
                yield chunk
            return
        async for chunk in self.model.stream(value, run.reporter(token)):
            yield chunk


class Text(Form):
    """StrOutputParser: each chunk's text, parsed where it is."""

    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        return self._parse(value)

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        parse = self._parse
        async for chunk in chunks:
            yield parse(chunk)

    def _parse(self, value: Any) -> Any:
        if type(value) is str:
            return value
        parser = self.runnable
        assert isinstance(parser, StrOutputParser)
        if isinstance(value, BaseMessage):  # a generation's text is the message's (a str subclass, TextAccessor)
            return value.text if type(value.content) is str else parser.parse_result([ChatGeneration(message=value)])
        return parser.parse_result([Generation(text=value)])  # raises as LangChain's parser does


class Json(Form):
    """JsonOutputParser (cumulative, not diff): each new value parsed from the text so far."""

    additive = False  # its values replace each other; added up, two objects raise

    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        parser = self.runnable
        assert isinstance(parser, JsonOutputParser)
        generation = ChatGeneration(message=value) if isinstance(value, BaseMessage) else Generation(text=value)
        return parser.parse_result([generation])

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        parser = self.runnable
        assert isinstance(parser, JsonOutputParser)
        previous: Any = None
        text: str | None = ""  # the text so far while every chunk is plain (then it is what LangChain's sum says)
        seen: list[Any] = []
        kind: type | None = None
        accumulated: Any = None
        async for chunk in chunks:
            if text is not None and _plain(chunk, kind):
                kind = type(chunk)
                text += chunk if kind is str else chunk.content
                seen.append(chunk)
                parsed = parser.parse_result([Generation(text=text)], partial=True)
            else:
                if text is not None:  # the first chunk that is not plain: from here on, exactly as LangChain adds
                    for earlier in seen:
                        accumulated = _generation_chunk(earlier, accumulated)
                    text, seen = None, []
                accumulated = _generation_chunk(chunk, accumulated)
                parsed = parser.parse_result([accumulated], partial=True)
            if parsed is not None and parsed != previous:
                yield parsed
                previous = parsed


def _plain(chunk: Any, kind: type | None) -> bool:
    """A chunk whose text adds up as strings do, with nothing a refusal check would find: a string, or a message
    chunk with text content only; all of one kind."""
    if type(chunk) is str:
        return kind in (None, str)
    return (
        type(chunk) is AIMessageChunk
        and kind in (None, AIMessageChunk)
        and type(chunk.content) is str
        and not chunk.additional_kwargs
        and not chunk.tool_call_chunks
        and "model_provider" not in chunk.response_metadata
    )


def _generation_chunk(chunk: Any, accumulated: Any) -> Any:
    """LangChain's cumulative parser's step: the chunk as a generation chunk, added to what came before."""
    if isinstance(chunk, BaseMessageChunk):
        generation: Any = ChatGenerationChunk(message=chunk)
    elif isinstance(chunk, BaseMessage):
        generation = ChatGenerationChunk(message=BaseMessageChunk(**chunk.model_dump()))
    else:
        generation = GenerationChunk(text=chunk)
    return generation if accumulated is None else accumulated + generation


def form_of(runnable: Runnable[Any, Any]) -> Form:
    """The lean form of a built node's runnable, by its exact type; Fallback for anything else."""
    kind = type(runnable)
    if kind is RunnablePassthrough and runnable.func is None and runnable.afunc is None:  # type: ignore[attr-defined]
        return Passthrough(runnable)
    if kind in (PromptTemplate, ChatPromptTemplate, *SECTIONED):
        return Prompt(runnable)
    if kind is StrOutputParser:
        return Text(runnable)
    if kind is JsonOutputParser and not runnable.diff:  # type: ignore[attr-defined]
        return Json(runnable)
    if kind is RunnableLambda and _plain_function(runnable):
        return Lambda(runnable)
    if leanable(runnable):
        return Model(runnable)
    if not internals.HOOKS.chat_model and standard(runnable):
        return Model(runnable, private=False)
    return Fallback(runnable)


def _plain_function(runnable: Any) -> bool:
    func = getattr(runnable, "func", None)
    if func is None or hasattr(runnable, "afunc"):
        return False
    return not (accepts_config(func) or accepts_run_manager(func) or inspect.isgeneratorfunction(func))


def as_value(value: Any) -> Any:
    """Messages and prompt values enter a fan-in as their text: that is what a template variable wants."""
    if isinstance(value, BaseMessage):
        return value.text
    if isinstance(value, PromptValue):
        return value.to_string()
    return value

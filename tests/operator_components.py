"""Operator components for the tests (a components file names them): careless ones that quote their key, and a
model that streams slowly and records whether its call was cancelled.

They are the kind of client code an operator may install: the server must keep what they say out of its answers,
its history, its state and its logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda


def leaky(*, api_key: str) -> Runnable[Any, Any]:
    """Fails every call with a message quoting its key, as careless client libraries do."""

    def run(value: Any) -> Any:
        raise RuntimeError(f"the upstream refused key {api_key}")

    return RunnableLambda(run)


def quoting() -> Runnable[Any, Any]:
    """Fails every call with a message quoting its input, as careless parsers do."""

    def run(value: Any) -> Any:
        raise ValueError(f"could not read {value}")

    return RunnableLambda(run)


def fragile(*, api_key: str) -> Runnable[Any, Any]:
    """Refuses to be built, quoting its key: the server's build problem must not."""
    raise ValueError(f"key {api_key} is not valid here")


def counting(
    *, responses: list[str], input_tokens: int = 7, output_tokens: int = 3, latency: float = 0.0
) -> Runnable[Any, Any]:
    """A fake chat model whose answers report their token usage, as a provider's do (for token budgets)."""
    from itertools import cycle

    from langchain_core.messages import AIMessage

    from gitops_flow.components.fake_model import FakeChatModel

    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}
    answers = [AIMessage(content=text, usage_metadata=usage) for text in responses]  # type: ignore[arg-type]
    return FakeChatModel(messages=cycle(answers), latency=latency)


def slow_stream(*, record: str, tokens: int = 1000, interval: float = 0.05) -> Runnable[Any, Any]:
    """A chat model that streams ``tokens`` tokens, one every ``interval`` seconds, and appends to the file
    ``record`` what becomes of each call: ``started``, then ``finished``, or ``cancelled`` (its wait was cancelled)
    or ``closed`` (its generator was closed between tokens). For the tests of a client that goes away."""
    return SlowStream(record=record, tokens=tokens, interval=interval)


def _note(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


class SlowStream(BaseChatModel):
    record: str
    tokens: int
    interval: float

    @property
    def _llm_type(self) -> str:
        return "slow-stream"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("SlowStream only streams, asynchronously")

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        text = "".join([chunk.message.content async for chunk in self._astream(messages)])  # type: ignore[misc]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        _note(self.record, "started")
        try:
            for index in range(self.tokens):
                await asyncio.sleep(self.interval)
                yield ChatGenerationChunk(message=AIMessageChunk(content=f"t{index} "))
        except asyncio.CancelledError:
            _note(self.record, "cancelled")
            raise
        except GeneratorExit:
            _note(self.record, "closed")
            raise
        _note(self.record, "finished")


def witness(*, input_tokens: int = 5, output_tokens: int = 2) -> Runnable[Any, Any]:
    """A fake chat model that answers which path called it: LangChain's hands a model a run manager (its callbacks)
    and runs it inside a runnable's config context; the lean executor calls it directly, with neither. Each answer
    reports its tokens (a stream's, on its last chunk, as providers report them)."""
    return _Witness(messages=iter(()), usage=(input_tokens, output_tokens))


def _witnessed() -> type:

    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables.config import var_child_runnable_config

    from gitops_flow.components.fake_model import FakeChatModel

    def path(run_manager: Any) -> str:
        return "langchain" if run_manager is not None or var_child_runnable_config.get() is not None else "lean"

    def usage_of(tokens: tuple[int, int]) -> Any:
        return {"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)}

    class Witness(FakeChatModel):
        usage: tuple[int, int] = (5, 2)

        async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            text = f"answered on the {path(run_manager)} path"
            message = AIMessage(content=text, usage_metadata=usage_of(self.usage))
            return ChatResult(generations=[ChatGeneration(message=message)])

        async def _astream(  # type: ignore[override]
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
        ) -> AsyncIterator[ChatGenerationChunk]:
            words = ["streamed", " ", "on", " ", "the", " ", path(run_manager), " path"]
            for index, word in enumerate(words):
                last = index == len(words) - 1
                usage = usage_of(self.usage) if last else None
                yield ChatGenerationChunk(message=AIMessageChunk(content=word, usage_metadata=usage))

    return Witness


_Witness = _witnessed()


def moody(
    *,
    answer: str,
    latency: float = 0.0,
    slow_on: str = "slow",
    slow: float = 0.0,
    cut_on: str = "cut",
    cut_always: bool = False,
) -> Runnable[Any, Any]:
    """A fake chat model whose behaviour depends on its input, the same on every version that has the same params:
    a prompt holding ``slow_on`` waits ``slow`` seconds more, and one holding ``cut_on`` (every prompt, with
    ``cut_always``) fails after its answer's first chunk, as a provider's content filter or a reset connection does.
    ``latency`` seconds pass before every answer. Its answer streams word by word."""
    return _Moody(answer=answer, latency=latency, slow_on=slow_on, slow=slow, cut_on=cut_on, cut_always=cut_always)


class _Moody(BaseChatModel):
    answer: str
    latency: float
    slow_on: str
    slow: float
    cut_on: str
    cut_always: bool

    @property
    def _llm_type(self) -> str:
        return "moody"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("moody runs asynchronously only")

    def _prompt(self, messages: Any) -> str:
        return " ".join(str(m.content) for m in messages)

    async def _wait(self, prompt: str) -> None:
        await asyncio.sleep(self.latency + (self.slow if self.slow_on in prompt else 0.0))

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        prompt = self._prompt(messages)
        await self._wait(prompt)
        if self.cut_always or self.cut_on in prompt:
            raise RuntimeError("the answer was cut off")
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.answer))])

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        prompt = self._prompt(messages)
        await self._wait(prompt)
        for index, word in enumerate(self.answer.split(" ")):
            if index == 1 and (self.cut_always or self.cut_on in prompt):
                raise RuntimeError("the answer was cut off")
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if index == 0 else f" {word}"))


def hog() -> Runnable[Any, Any]:
    """Matches a catastrophic regular expression with Python's backtracking ``re``: minutes of C code that never
    lets go of the interpreter's lock, so nothing else in its process runs meanwhile (what author code must never
    do to the server: the test sandbox confines it to a child process it kills)."""
    import re

    def run(value: Any) -> Any:
        return str(re.match(r"^(a+)+$", "a" * 34 + "!") is not None)

    return RunnableLambda(run)

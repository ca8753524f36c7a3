"""FakeChatModel: a chat model that answers scripted responses in turn, token by token, as slowly as it is told.

Its latency lets a deploy be rehearsed offline: a canary whose fake answers slowly breaks a p99 budget as a slow
provider would. Waiting is ``asyncio.sleep`` on the async paths the server uses, so a slow fake never blocks the
event loop; every answer waits at most MAX_WAIT_S in all, however many tokens it has.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

MAX_WAIT_S = 60.0  # what one answer waits in all, at most: past it, the remaining tokens come at once
_TOKENS = re.compile(r"(\s)")  # as GenericFakeChatModel streams: words and the whitespace between them


class FakeChatModel(GenericFakeChatModel):
    """Answers its messages in turn. ``latency`` seconds pass before an answer begins, and ``token_latency``
    before each of its tokens, whether the answer is invoked (it comes whole, after them all) or streamed."""

    latency: float = 0.0
    token_latency: float = 0.0

    def _waits(self, tokens: int) -> Iterator[float]:
        """The wait before the answer, then before each token, cut where MAX_WAIT_S is spent."""
        left = MAX_WAIT_S
        for wait in (self.latency, *([self.token_latency] * tokens)):
            step = min(wait, left)
            left -= step
            yield step

    def _answer(self) -> tuple[AIMessage, list[str]]:
        message = next(self.messages)
        answer = AIMessage(content=message) if isinstance(message, str) else message
        content = answer.content
        tokens = [t for t in _TOKENS.split(content) if t] if isinstance(content, str) else []
        return answer, tokens  # an empty answer streams no chunk at all, as GenericFakeChatModel's does

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer, tokens = self._answer()
        _block(sum(self._waits(len(tokens))))
        return ChatResult(generations=[ChatGeneration(message=answer)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer, tokens = self._answer()
        await _wait(sum(self._waits(len(tokens))))
        return ChatResult(generations=[ChatGeneration(message=answer)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        answer, tokens = self._answer()
        waits = self._waits(len(tokens))
        _block(next(waits))
        for index, (token, wait) in enumerate(zip(tokens, waits, strict=False)):
            _block(wait)
            chunk = _chunk(answer, token, last=index == len(tokens) - 1)
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        answer, tokens = self._answer()
        waits = self._waits(len(tokens))
        await _wait(next(waits))
        for index, (token, wait) in enumerate(zip(tokens, waits, strict=False)):
            await _wait(wait)
            chunk = _chunk(answer, token, last=index == len(tokens) - 1)
            if run_manager is not None:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    @property
    def _llm_type(self) -> str:
        return "gitops-flow-fake-chat-model"


async def _wait(seconds: float) -> None:
    if seconds > 0:  # no latency, no detour through the event loop
        await asyncio.sleep(seconds)


def _block(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def _chunk(answer: AIMessage, token: str, *, last: bool) -> ChatGenerationChunk:
    message = AIMessageChunk(content=token, id=answer.id)
    if last:
        message.chunk_position = "last"
    return ChatGenerationChunk(message=message)

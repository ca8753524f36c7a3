"""A chat model called through its own ``_agenerate``/``_astream``, shaping its answer as ``BaseChatModel.ainvoke``
and ``astream`` do (ids, ``response_metadata``, the closing empty chunk, the error for an empty stream), without a
callback manager, a run tree or a config merge per call.

Which models qualify is decided once, at build time (``leanable``): a plain ``BaseChatModel`` whose invoke and
stream machinery is LangChain's own, with no callbacks or verbosity of its own and the v0 output format, while
LangChain's private hooks it calls are as expected (components/langchain_internals.py); any other model is called
through its public ``ainvoke``/``astream`` (``Model`` in lean.forms). What can
change between calls (an LLM cache set globally, a model that streams even when invoked) is checked on every call by
``LeanModel.direct``; the caller runs the model's own runnable when it says no. Without the hooks, a standard
model is still a lean node, whose every call says no (``private=False``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.utils.utils import LC_ID_PREFIX
from langchain_core.utils.uuid import uuid7

from gitops_flow.components import langchain_internals as internals

Report = Callable[[LLMResult, str | None], None]  # what a model call reports: its result and the model's name

# the methods whose LangChain implementation this module reproduces: a model class that overrides one of them
# does something of its own there, and runs through its runnable instead
_REPRODUCED = ("ainvoke", "astream", "agenerate", "agenerate_prompt", "_agenerate_with_cache", "_convert_input")


def standard(model: Any) -> bool:
    """Whether ``model`` is a BaseChatModel whose invoke and stream machinery is LangChain's own: what its
    ``ainvoke``/``astream`` give is then what ``LeanModel`` reproduces (its chunks add up, its answer is a message)."""
    return isinstance(model, BaseChatModel) and internals.reproduced_unchanged(model, _REPRODUCED)


def leanable(model: Any) -> bool:
    """Whether ``model`` can be called directly: see the module's docstring."""
    if not internals.HOOKS.chat_model or not standard(model):
        return False
    # tags and metadata only reach callbacks, which the lean path has none of; a model's own callbacks (or verbose
    # printing) are effects of its own, kept by running it through its runnable
    return model.callbacks is None and not model.verbose and model.output_version in (None, "v0")


class LeanModel:
    """One model node's calls. ``report`` (when given to a call) hears the call's result, as LangChain's
    ``on_llm_end`` would: what token budgets count."""

    def __init__(self, model: BaseChatModel, *, private: bool = True) -> None:
        self.model = model
        self.private = private  # False: every call goes through the model's public ainvoke/astream
        self._name: str | None = None
        self._named = False

    def direct(self, *, streaming: bool) -> bool:
        """Whether this call can skip the runnable: no LLM cache applies, and an invoke would not stream."""
        model = self.model
        if not self.private:
            return False
        if model.cache is not False and (model.cache is not None or get_llm_cache() is not None):
            return False
        return streaming or not internals.should_stream(model, async_api=True)

    def name(self) -> str | None:
        """The model's name as LangChain's tracing metadata gives it (``ls_model_name``), read once."""
        if not self._named:
            found = internals.model_name(self.model)
            self._name, self._named = (str(found) if found else None), True
        return self._name

    def _messages(self, value: Any) -> list[BaseMessage]:
        return internals.messages_of(self.model, value)

    async def invoke(self, value: Any, report: Report | None = None) -> AIMessage:
        """What ``model.ainvoke(value)`` answers (``direct(streaming=False)`` having said yes)."""
        model = self.model
        messages = self._messages(value)
        if model.rate_limiter:
            await model.rate_limiter.aacquire(blocking=True)
        result = await internals.agenerate(model, messages)
        run_id = f"{LC_ID_PREFIX}-{uuid7()}"  # a run id as LangChain makes one
        for index, generation in enumerate(result.generations):
            if generation.message.id is None:
                generation.message.id = f"{run_id}-{index}"
            generation.message.response_metadata = internals.response_metadata(generation)
        if len(result.generations) == 1 and result.llm_output is not None:
            first = result.generations[0].message
            first.response_metadata = {**result.llm_output, **first.response_metadata}
        if report is not None:
            report(LLMResult(generations=[list(result.generations)], llm_output=result.llm_output), self.name())
        message = result.generations[0].message
        assert isinstance(message, AIMessage), "a chat model answers an AIMessage"
        return message

    async def stream(self, value: Any, report: Report | None = None) -> AsyncIterator[Any]:
        """What ``model.astream(value)`` yields: the chunks as the model makes them (no copy), each with the
        stream's id and its response metadata, then an empty last chunk when the model did not mark one."""
        model = self.model
        if not internals.should_stream(model, async_api=True, stream=True):
            yield await self.invoke(value, report)  # astream falls back to ainvoke, and yields its message
            return
        messages = self._messages(value)
        if model.rate_limiter:
            await model.rate_limiter.aacquire(blocking=True)
        run_id = f"{LC_ID_PREFIX}-{uuid7()}"  # a run id as LangChain makes one
        last: Any = None
        inputs = outputs = 0
        async for chunk in internals.astream(model, messages):
            message = chunk.message
            if message.id is None:
                message.id = run_id
            if chunk.generation_info:  # otherwise the merged metadata equals the message's own
                message.response_metadata = internals.response_metadata(chunk)
            usage = getattr(message, "usage_metadata", None)
            if usage and report is not None:
                inputs += int(usage.get("input_tokens") or 0)
                outputs += int(usage.get("output_tokens") or 0)
            last = message
            yield message
        if last is None:
            raise ValueError("No generation chunks were returned")
        if isinstance(last, AIMessageChunk) and not last.chunk_position:
            empty: Any = "" if isinstance(last.content, str) else []
            yield AIMessageChunk(content=empty, chunk_position="last", id=run_id)
        if report is not None:
            usage_metadata: Any = {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
            merged = AIMessage(content="", usage_metadata=usage_metadata) if inputs or outputs else AIMessage("")
            report(LLMResult(generations=[[ChatGeneration(message=merged)]]), self.name())

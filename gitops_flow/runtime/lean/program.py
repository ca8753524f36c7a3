"""A flow's lean program: the graph compiler.py compiles into one LangChain runnable, run as plain async code.

It follows build._compile step for step, so it gives what the runnable gives. A chain runs its nodes in order
(invoke) or as a pipeline of transforms (stream). Any other graph fills a dict of node outputs level by level, the
nodes of a level as concurrent tasks, each node once however many read it; its tail then runs as a chain. Batches
run step by step over all inputs, as a RunnableSequence's ``abatch`` does, so the same failure surfaces first.

In a stream, LangChain keeps a fan-out node's value as the sum of the chunks it streamed; the program does the same
when every node before the tail streams chunks that add up (text, messages, single values). A JSON parser's values or
an unknown node's chunks do not, and LangChain's result then depends on how the branches' chunks interleave: such a
flow's stream runs through its runnable (``whole``), so its answer is LangChain's by construction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig

from gitops_flow.runtime.lean.forms import Form, Observer, Run, as_value

Read = str | dict[str, str]  # a node's input: the value of one node, or {key: node} (a keyed fan-in)


@dataclass(frozen=True, slots=True)
class Plan:
    """The shape build._compile gives the graph: ``chain`` (then ``tail`` is every node in order), or an entry,
    the levels before the tail and the tail, with what each node reads."""

    chain: bool
    tail: tuple[str, ...]
    entry: str = ""
    levels: tuple[tuple[str, ...], ...] = ()
    reads: Mapping[str, Read] | None = None


class LeanFlow:
    """A flow's lean program; ``ainvoke``/``astream``/``abatch`` take what its runnable takes, plus the run's
    ``observer`` (None: no one listens). ``whole`` is the flow's runnable: the stream of a flow whose fan-out does not
    add up runs through it, and it says what the flow's output schema is."""

    def __init__(self, plan: Plan, forms: Mapping[str, Form], whole: Runnable[Any, Any]) -> None:
        self.plan = plan
        self.forms = dict(forms)
        self.whole = whole
        before_tail = [plan.entry, *(n for level in plan.levels for n in level)] if not plan.chain else []
        self.streams_lean = all(self.forms[n].additive for n in before_tail)
        self.fallbacks = tuple(n for n, form in self.forms.items() if not form.lean)

    def __repr__(self) -> str:
        return f"LeanFlow({len(self.forms)} nodes, fallbacks={list(self.fallbacks)})"

    def get_output_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.whole.get_output_schema(config)

    # -- invoke ---------------------------------------------------------------------------------------------------

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, *, observer: Observer | None = None, **kwargs: Any
    ) -> Any:
        run = Run(config, observer)
        plan = self.plan
        if plan.chain:
            value = input
        else:
            state = {plan.entry: await self._invoke(plan.entry, input, run)}
            for level in plan.levels:
                if len(level) == 1:
                    state[level[0]] = await self._invoke(level[0], self._read(level[0], state), run)
                    continue
                found = await asyncio.gather(*(self._invoke(n, self._read(n, state), run) for n in level))
                state.update(zip(level, found, strict=True))
            value = self._read(plan.tail[0], state)
        for node in plan.tail:
            value = await self._invoke(node, value, run)
        return value

    async def _invoke(self, node: str, value: Any, run: Run) -> Any:
        observer = run.observer
        if observer is None:
            return await self.forms[node].invoke(value, run, None)
        token = observer.node_started(node)
        try:
            output = await self.forms[node].invoke(value, run, token)
        except BaseException as exc:
            observer.node_failed(token, exc)
            raise
        observer.node_finished(token)
        return output

    def _read(self, node: str, state: Mapping[str, Any]) -> Any:
        read = self.plan.reads[node]  # type: ignore[index]
        if isinstance(read, str):
            return state[read]
        return {key: as_value(state[source]) for key, source in read.items()}

    # -- batch ----------------------------------------------------------------------------------------------------

    async def abatch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        observer: Observer | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Step by step over all inputs, at most ``max_concurrency`` (of the first config) at once. With
        ``return_exceptions``, an input that fails is left out of the later steps and answers its exception, as
        a RunnableSequence's ``abatch`` does."""
        if not inputs:
            return []
        configs = list(config) if isinstance(config, Sequence) else [config or {}] * len(inputs)
        limit = configs[0].get("max_concurrency") if configs else None
        runs = [Run(c, observer) for c in configs]
        plan = self.plan
        failed: dict[int, Exception] = {}

        async def each(calls: Mapping[int, Callable[[], Awaitable[Any]]]) -> dict[int, Any]:
            """Each input's result; with return_exceptions, the inputs that failed are left out (and kept)."""
            if not return_exceptions:
                return dict(zip(calls, await _gathered(limit, calls.values()), strict=True))
            found = await _gathered(limit, (partial(_caught, call) for call in calls.values()))
            results: dict[int, Any] = {}
            for index, result in zip(calls, found, strict=True):
                if isinstance(result, _Caught):
                    failed[index] = result.error
                else:
                    results[index] = result
            return results

        async def step(node: str, values: Mapping[int, Any]) -> dict[int, Any]:
            return await each({i: partial(self._invoke, node, v, runs[i]) for i, v in values.items()})

        values: dict[int, Any]
        if plan.chain:
            values = dict(enumerate(inputs))
        else:
            entries = await step(plan.entry, dict(enumerate(inputs)))
            states = {i: {plan.entry: v} for i, v in entries.items()}
            for level in plan.levels:
                found = await each({i: partial(self._level, level, s, runs[i]) for i, s in states.items()})
                states = {i: states[i] for i in found}
                for i, level_values in found.items():
                    states[i].update(zip(level, level_values, strict=True))
            values = {i: self._read(plan.tail[0], s) for i, s in states.items()}
        for node in plan.tail:
            values = await step(node, values)
        return [failed[i] if i in failed else values[i] for i in range(len(inputs))]

    async def _level(self, level: tuple[str, ...], state: Mapping[str, Any], run: Run) -> list[Any]:
        return list(await asyncio.gather(*(self._invoke(n, self._read(n, state), run) for n in level)))

    # -- stream ---------------------------------------------------------------------------------------------------

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, *, observer: Observer | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        plan = self.plan
        if not self.streams_lean:
            async for chunk in self.whole.astream(input, config):
                yield chunk
            return
        run = Run(config, observer)
        if plan.chain:
            chunks = _one(input)
        else:
            state: dict[str, Any] = {}
            await self._summed(plan.entry, input, run, state)
            for level in plan.levels:
                await asyncio.gather(*(self._summed(n, self._read(n, state), run, state) for n in level))
            chunks = _one(self._read(plan.tail[0], state))
        for node in plan.tail:
            chunks = self._transform(node, chunks, run)
        async for chunk in chunks:
            yield chunk

    async def _summed(self, node: str, value: Any, run: Run, state: dict[str, Any]) -> None:
        """The node's streamed chunks added up as LangChain's fan-out adds them (AddableDict, one key a node):
        a None is replaced by what follows and adds nothing itself; no chunk at all leaves the key unset."""
        total: Any = None
        got = False
        async for chunk in self._transform(node, _one(value), run):
            if not got or total is None:
                total, got = chunk, True
            elif chunk is not None:
                total = total + chunk
        if got:
            state[node] = total

    def _transform(self, node: str, chunks: AsyncIterator[Any], run: Run) -> AsyncIterator[Any]:
        form = self.forms[node]
        if run.observer is None:  # the form's own stream: no layer of ours between a token and the caller
            return form.transform(chunks, run, None)
        return self._observed(node, form, chunks, run)

    async def _observed(self, node: str, form: Form, chunks: AsyncIterator[Any], run: Run) -> AsyncIterator[Any]:
        observer = run.observer
        assert observer is not None
        token = observer.node_started(node)
        try:
            async for chunk in form.transform(chunks, run, token):
                yield chunk
        except Exception as exc:
            observer.node_failed(token, exc)
            raise
        observer.node_finished(token)


class _Caught:
    """A call's exception, kept as its result (abatch's ``return_exceptions``)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _caught(call: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await call()
    except Exception as exc:  # noqa: BLE001 - the input's answer, as LangChain's return_exceptions keeps it
        return _Caught(exc)


async def _one(value: Any) -> AsyncIterator[Any]:
    yield value


async def _gathered(limit: int | None, calls: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Each call's result in order, at most ``limit`` running at once (LangChain's ``gather_with_concurrency``), each
    call's coroutine made only once it may run: when one fails, the ones still waiting are never made, so none is
    left unawaited when the loop cancels them."""
    if limit is None:
        return list(await asyncio.gather(*(call() for call in calls)))
    semaphore = asyncio.Semaphore(limit)

    async def gated(call: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await call()

    return list(await asyncio.gather(*(gated(call) for call in calls)))

"""The lean forms of control nodes: a Router runs the lean program of the branch its runnable would choose, a Map
runs its body's lean program as a batch; each gives what the node's LangChain runnable gives (components/control)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from gitops_flow.components.control import Mapped, Routed, first_failure
from gitops_flow.runtime.lean.forms import Form, Run, gathered
from gitops_flow.runtime.lean.program import LeanFlow


class Branches(Form):
    """A Router: the chosen branch's program, invoked, or streamed chunk by chunk (as RunnableBranch streams)."""

    def __init__(self, runnable: Routed, parts: Mapping[str, LeanFlow]) -> None:
        super().__init__(runnable)
        self.route = runnable
        self.parts = parts
        # what it streams is what its branches' last nodes stream
        self.additive = all(part.forms[part.plan.tail[-1]].additive for part in parts.values())

    def chosen(self, value: Any) -> LeanFlow:
        label = self.route.choice.label(value)
        return self.parts[self.route.targets[label] if label is not None else self.route.fallback]

    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        return await self.chosen(value).ainvoke(value, run.config, observer=run.observer)

    async def transform(self, chunks: AsyncIterator[Any], run: Run, token: object) -> AsyncIterator[Any]:
        got, value = await gathered(chunks)
        if not got:
            return
        async for chunk in self.chosen(value).astream(value, run.config, observer=run.observer):
            yield chunk


class Items(Form):
    """A Map: its body's program over the items, as a batch of at most ``concurrency`` at once."""

    def __init__(self, runnable: Mapped, body: LeanFlow) -> None:
        super().__init__(runnable)
        self.each = runnable.each
        self.body = body

    async def invoke(self, value: Any, run: Run, token: object) -> Any:
        inputs = self.each.inputs(value)
        if not inputs:
            return []
        config = {**run.config, "max_concurrency": self.each.concurrency}
        found = await self.body.abatch(inputs, config, return_exceptions=True, observer=run.observer)  # type: ignore[arg-type]
        return first_failure(found)


def form_of(runnable: Any, parts: Mapping[str, LeanFlow]) -> Form | None:
    """The lean form of a control node's runnable over the lean programs of its parts; None for another node."""
    if isinstance(runnable, Routed):
        return Branches(runnable, {root: parts[root] for root in {*runnable.targets.values(), runnable.fallback}})
    if isinstance(runnable, Mapped):
        return Items(runnable, parts[runnable.each.body])
    return None

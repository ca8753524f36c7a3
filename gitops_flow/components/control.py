"""Control flow: the Router (one of several branches runs, chosen by a value's text) and the Map (a body once per item
of a list, bounded), as LangChain runnables over the parts of the flow the compiler built for them.

A Router's branches and a Map's body are parts of the same document: each names a node that starts a sub-graph
of its own, detached from the flow's main graph (flow/parts.py finds them, flow/graph.py checks them; the compiler
builds them and hands them over in ``BuildContext.parts``). The Router is LangChain's ``RunnableBranch`` (only the
chosen branch runs; its tokens stream through), the Map is ``body.batch`` over the items at a bounded concurrency.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableBranch, RunnableConfig, RunnableLambda, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from gitops_flow.components.base import BuildContext, Component, ParamIssue
from gitops_flow.exceptions import BuildError, TooManyItems
from gitops_flow.flow.parts import MAP, ROUTER
from gitops_flow.flow.regexes import PatternError, compile_pattern

Match = Literal["equals", "contains", "starts_with", "ends_with", "regex"]  # flow.parts.MATCHES, as a type
MAX_BRANCHES = 100  # branches of one router
HARD_MAX_ITEMS = 100_000  # the most any setting lets a Map take
HARD_MAX_CONCURRENCY = 256
DEFAULT_MAX_ITEMS = 20  # a Map's max_items when the flow does not say
DEFAULT_CONCURRENCY = 4
_TRIMMED = " \t\r\n\"'`.!?"  # what a classifier's answer may carry around the branch's name


@dataclass(frozen=True, slots=True)
class Choice:
    """How a Router chooses: the text of its input (or of its input's ``key``), trimmed and (unless
    ``case_sensitive``) case-folded, matched against each branch's name in order; no match is the default. With
    ``match="regex"`` each name is a pattern searched in the trimmed text, on RE2 (linear time, flow/regexes.py)."""

    node: str
    labels: tuple[str, ...]
    key: str | None = None
    match: Match = "equals"
    case_sensitive: bool = False
    _names: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.match == "regex":
            flags = "" if self.case_sensitive else "(?i)"
            names: tuple[Any, ...] = tuple(compile_pattern(flags + label) for label in self.labels)
        else:
            names = tuple(self._normal(label) for label in self.labels)
        object.__setattr__(self, "_names", names)

    def label(self, value: Any) -> str | None:
        """The first branch whose name matches ``value``; None for the default. ValueError when ``key`` is set and
        ``value`` is not an object holding it."""
        if self.key is not None:
            if not isinstance(value, Mapping) or self.key not in value:
                raise ValueError(f"router {self.node!r} expected an object with the key {self.key!r}")
            value = value[self.key]
        text = text_of(value)
        match = self.match
        if match == "regex":
            said = text.strip()
            return next((label for label, p in zip(self.labels, self._names, strict=True) if p.search(said)), None)
        said = self._normal(text)
        for label, name in zip(self.labels, self._names, strict=True):
            if (
                (match == "equals" and said == name)
                or (match == "contains" and name in said)
                or (match == "starts_with" and said.startswith(name))
                or (match == "ends_with" and said.endswith(name))
            ):
                return label
        return None

    def _normal(self, text: str) -> str:
        text = text.strip(_TRIMMED)
        return text if self.case_sensitive else text.casefold()


def text_of(value: Any) -> str:
    """What a Router reads of a value: a text as it is, a message's or a prompt's text, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return value.text
    if isinstance(value, PromptValue):
        return value.to_string()
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return ""


@dataclass(frozen=True, slots=True)
class Each:
    """What a Map runs its body on: the list (its input, or its input's ``key``), at most ``max_items`` of it
    (more is TooManyItems, or the first ``max_items`` when ``truncate``), each item as it is or, with ``item_key``,
    the input with the item under that key."""

    node: str
    body: str
    max_items: int
    concurrency: int
    key: str | None = None
    item_key: str | None = None
    truncate: bool = False

    def inputs(self, value: Any) -> list[Any]:
        """The body's inputs, in order."""
        items = value
        if self.key is not None:
            if not isinstance(value, Mapping) or self.key not in value:
                raise ValueError(f"map {self.node!r} expected an object with the key {self.key!r}")
            items = value[self.key]
        if not isinstance(items, list | tuple):
            raise ValueError(f"map {self.node!r} expected a list, not {type(items).__name__}")
        if len(items) > self.max_items:
            if not self.truncate:
                raise TooManyItems(
                    f"map {self.node!r} takes at most {self.max_items} items and was given {len(items)}; "
                    "send fewer, or raise its max_items (or set truncate)"
                )
            items = items[: self.max_items]
        if self.item_key is None:
            return list(items)
        assert isinstance(value, Mapping)  # check() requires key with item_key
        return [{**value, self.item_key: item} for item in items]


class Mapped(RunnableSerializable[Any, list[Any]]):
    """A Map node: ``body`` once per input ``each`` makes, ``each.concurrency`` at once, the results in order."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    body: Runnable[Any, Any]
    each: Any  # an Each (a dataclass, which pydantic need not know)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> list[Any]:
        return self._call_with_config(self._run, input, config, run_type="chain")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> list[Any]:
        return await self._acall_with_config(self._arun, input, config, run_type="chain")

    def _run(self, value: Any, run_manager: Any, config: RunnableConfig) -> list[Any]:
        inputs = self.each.inputs(value)
        if not inputs:
            return []
        return first_failure(self.body.batch(inputs, self._child(run_manager, config), return_exceptions=True))

    async def _arun(self, value: Any, run_manager: Any, config: RunnableConfig) -> list[Any]:
        inputs = self.each.inputs(value)
        if not inputs:
            return []
        found = await self.body.abatch(inputs, self._child(run_manager, config), return_exceptions=True)
        return first_failure(found)

    def _child(self, run_manager: Any, config: RunnableConfig) -> RunnableConfig:
        return patch_config(config, callbacks=run_manager.get_child(), max_concurrency=self.each.concurrency)

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """A list; with ``key``, an object with a list there."""
        each: Each = self.each
        if each.key is None:
            return create_model(f"{each.node}_input", __base__=RootModel[list[Any]])
        fields: dict[str, Any] = {each.key: (list[Any], ...)}
        named: type[BaseModel] = create_model(f"{each.node}_input", **fields)
        return named


def first_failure(results: list[Any]) -> list[Any]:
    """``results`` of a batch run with return_exceptions, or the first item's exception, raised: every item runs
    (at most max_items of them), so which failure a Map answers does not depend on which item failed first."""
    failure = next((r for r in results if isinstance(r, Exception)), None)
    if failure is not None:
        raise failure
    return results


class Routed(RunnableBranch[Any, Any]):
    """A Router node: LangChain's RunnableBranch over the flow's branches, which also says how it chooses
    (``choice``) and which part each branch is (``targets``: label -> the node starting it; ``fallback``: the
    default's), so the lean program runs the same branch."""

    choice: Any = None  # a Choice
    targets: dict[str, str] = Field(default_factory=dict)
    fallback: str = ""

    def __init__(self, *branches: Any, choice: Choice, targets: Mapping[str, str], fallback: str) -> None:
        super().__init__(*branches)
        self.choice = choice
        self.targets = dict(targets)
        self.fallback = fallback

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """By ``key``: an object with that key, and (optional) what any branch reads of it; otherwise what
        RunnableBranch says (the first branch with a typed input's)."""
        choice: Choice = self.choice
        if choice.key is None:
            return typing.cast(type[BaseModel], super().get_input_schema(config))
        fields: dict[str, Any] = {}
        for runnable in [*(branch for _, branch in self.branches), self.default]:
            schema = runnable.get_input_schema(config)
            if issubclass(schema, BaseModel) and not issubclass(schema, RootModel):
                for name, info in schema.model_fields.items():
                    fields.setdefault(name, (info.annotation, None))
        fields[choice.key] = (Any, ...)
        return create_model(f"{choice.node}_input", **fields)


def router(
    ctx: BuildContext,
    *,
    branches: Annotated[dict[str, str], Field(min_length=1, max_length=MAX_BRANCHES)],
    default: str | None = None,
    key: Annotated[str, Field(min_length=1)] | None = None,
    match: Match = "equals",
    case_sensitive: bool = False,
) -> Runnable[Any, Any]:
    """One of ``branches`` (name -> the node that starts it), chosen by the text of the input (or of its ``key``),
    else ``default``; only the chosen branch runs."""
    if default is None:  # check() says so first
        raise BuildError(f"router {ctx.node_id!r} has no default branch", code="no-default-branch")
    choice = Choice(ctx.node_id, tuple(branches), key=key, match=match, case_sensitive=case_sensitive)
    parts = ctx.parts or {}
    # condition i holds when the choice is branch i: the choice is made once per condition, which costs a few
    # string comparisons, and keeps RunnableBranch's own contract (callbacks, streams) whole
    conditions = [
        (_condition(choice, label, f"{ctx.node_id}.{label}"), parts[target]) for label, target in branches.items()
    ]
    return Routed(
        *conditions,
        parts[default],
        choice=choice,
        targets=dict(branches),
        fallback=default,
    )


def _condition(choice: Choice, label: str, name: str) -> Runnable[Any, bool]:
    """Whether the choice is ``label``: sync and async alike, so that no await hops to a thread for it."""

    def chose(value: Any) -> bool:
        return choice.label(value) == label

    async def achose(value: Any) -> bool:
        return choice.label(value) == label

    return RunnableLambda(chose, afunc=achose, name=name)


class MapFactory:
    """The Map's factory, holding the server's bounds: a map that does not say its ``max_items`` or
    ``concurrency`` gets the default, or the server's bound when that is lower (map_check refuses a higher one)."""

    def __init__(self, max_items: int, max_concurrency: int) -> None:
        self.max_items = max_items
        self.max_concurrency = max_concurrency

    def __call__(
        self,
        ctx: BuildContext,
        *,
        body: Annotated[str, Field(min_length=1)],
        key: Annotated[str, Field(min_length=1)] | None = None,
        item_key: Annotated[str, Field(min_length=1)] | None = None,
        max_items: Annotated[int, Field(ge=1, le=HARD_MAX_ITEMS)] | None = None,
        concurrency: Annotated[int, Field(ge=1, le=HARD_MAX_CONCURRENCY)] | None = None,
        truncate: bool = False,
    ) -> Runnable[Any, Any]:
        """``body`` (the node that starts it) once per item of the input list (or of the input's ``key``), at most
        ``max_items`` items and ``concurrency`` at once; the results in order."""
        items = max_items if max_items is not None else min(DEFAULT_MAX_ITEMS, self.max_items)
        limit = concurrency if concurrency is not None else min(DEFAULT_CONCURRENCY, self.max_concurrency)
        each = Each(ctx.node_id, body, items, limit, key=key, item_key=item_key, truncate=truncate)
        return Mapped(body=(ctx.parts or {})[body], each=each)


def router_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """What the signature cannot say: a default is required, and two names that match alike make one unreachable."""
    issues: list[ParamIssue] = []
    if params.get("default") is None:
        issues.append((("default",), "no-default-branch", "a router needs a default branch: the node run on no match"))
    branches = params.get("branches") or {}
    if params.get("match") == "regex":
        for label in branches:
            try:
                compile_pattern(label)
            except PatternError as exc:
                why = "not a regular expression" if exc.code == "bad-regex" else "a pattern RE2 does not run"
                message = f"branch {label!r} is {why} (match is regex; backreferences and lookarounds are not run)"
                issues.append((("branches", label), exc.code, message))
        return issues
    fold = not params.get("case_sensitive", False)
    seen: dict[str, str] = {}
    for label in branches:
        name = label.strip(_TRIMMED)
        name = name.casefold() if fold else name
        if not name:
            issues.append((("branches", label), "unreachable-branch", "a branch's name cannot be empty"))
        elif name in seen:
            issues.append(
                (
                    ("branches", label),
                    "unreachable-branch",
                    f"branch {label!r} can never be chosen: it matches as {seen[name]!r} does, which comes first",
                )
            )
        else:
            seen[name] = label
    return issues


def map_check(params: Mapping[str, Any], *, max_items: int, max_concurrency: int) -> list[ParamIssue]:
    """The server's bounds (GITOPS_FLOW_MAP_MAX_ITEMS, _MAX_CONCURRENCY) and ``item_key``'s need of ``key``."""
    issues: list[ParamIssue] = []
    if params.get("max_items") is not None and params["max_items"] > max_items:
        message = f"max_items is {params['max_items']}, above the server's bound of {max_items}"
        issues.append((("max_items",), "map-limit", message + " (GITOPS_FLOW_MAP_MAX_ITEMS)"))
    if params.get("concurrency") is not None and params["concurrency"] > max_concurrency:
        message = f"concurrency is {params['concurrency']}, above the server's bound of {max_concurrency}"
        issues.append((("concurrency",), "map-limit", message + " (GITOPS_FLOW_MAP_MAX_CONCURRENCY)"))
    if params.get("item_key") is not None and params.get("key") is None:
        issues.append(
            (("item_key",), "invalid-value", "item_key puts each item beside the input's other keys: set key")
        )
    return issues


def components(max_items: int, max_concurrency: int) -> tuple[Component, ...]:
    """The Router and the Map, the Map bounded by the server's settings."""
    check = partial(map_check, max_items=max_items, max_concurrency=max_concurrency)
    return (
        Component(
            ROUTER,
            router,
            "control",
            "Runs one of its branches, chosen by its input's text (a classifier's answer) or a key's value.",
            takes_context=True,
            check=router_check,
        ),
        Component(
            MAP,
            MapFactory(max_items, max_concurrency),
            "control",
            "Runs its body once per item of a list, bounded in items and concurrency; the results in order.",
            takes_context=True,
            check=check,
        ),
    )

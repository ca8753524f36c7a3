"""What a component is: its registry record (Component), what a factory is given (BuildContext), and the kinds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gitops_flow.problems import Problem

if TYPE_CHECKING:
    from gitops_flow.components.breaker import Breakers
    from gitops_flow.components.knowledge import Knowledge
    from gitops_flow.security.egress import EgressPolicy

ComponentKind = Literal["input", "prompt", "model", "agent", "tool", "parser", "memory", "transform", "control"]
# kinds whose nodes `fakes` may answer for: what calls a model, and a tool that sends requests out (HttpRequest,
# WebSearch): flow tests and `--fake-models` never call a model nor reach a site
FAKEABLE: tuple[ComponentKind, ...] = ("model", "agent", "tool")
FAKE_MODEL = "FakeChatModel"  # the built-in model that calls nothing

ParamIssue = tuple[tuple[str | int, ...], str, str]  # (location in params, problem code, message)


@dataclass(slots=True)
class BuildContext:
    """What a factory may use beyond its params; ``notes`` collects what a dry-build wants to say."""

    dry_run: bool = False
    node_id: str = ""
    notes: list[Problem] = field(default_factory=list)
    fake_responses: list[str] | None = None  # an agent's scripted model answers, a tool's answers (tests, demos)
    breakers: Breakers | None = None  # the provider endpoints' circuit breakers (a served build; None: no breaker)
    knowledge: Knowledge | None = None  # the repository's files at the build's revision (a Retriever reads them)
    deadline: float | None = None  # a time.monotonic() reading the build must end by (a Retriever's indexing)
    egress: EgressPolicy | None = None  # where the tools' outbound requests may go (None: nowhere; a dry-build's)
    parts: Mapping[str, Any] | None = None  # a control node's parts, compiled: the node starting each -> its runnable

    def note(self, code: str, message: str, *, severity: Literal["warning", "notice"] = "notice") -> None:
        self.notes.append(Problem(code=code, message=message, path="$", severity=severity))


@dataclass(frozen=True, slots=True)
class Component:
    """A registered component: ``target`` is a factory or, for operator components, a lazy ``module:attr``.

    Built-in factories take a BuildContext first (``takes_context``); operator factories take only the params.
    ``secrets`` are the params that take a credential: the only places a flow may write ``{"$env": NAME}``. None
    (entry points) means the target says, in its ``gitops_flow_secrets`` attribute. ``secret_names`` narrows a
    param to the variables (names or ``PREFIX_*``) it takes; only a param listed there may take a model provider's
    key (credentials.py).
    """

    name: str
    target: Callable[..., Any] | str
    kind: ComponentKind = "transform"
    description: str = ""
    takes_context: bool = False
    secrets: frozenset[str] | None = frozenset()
    secret_names: tuple[tuple[str, tuple[str, ...]], ...] = ()
    check: Callable[[Mapping[str, Any]], list[ParamIssue]] | None = None  # what the signature cannot say

"""ComponentRegistry: the allowlist of component names a flow may use; the security boundary.

A flow names a component by a short key. Only keys registered here resolve; nothing in a flow document is ever
imported, evaluated or executed. Operators add components through the server's own configuration (a components
file or ``gitops_flow.components`` entry points), whose ``module:attr`` targets are imported lazily on first use.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from itertools import cycle
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from langchain_core.runnables import Runnable, RunnablePassthrough
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, create_model

from gitops_flow import templates
from gitops_flow.config import Settings
from gitops_flow.exceptions import BuildError, ConfigError
from gitops_flow.problems import Problem

ToolName = Literal["calculator", "current_date"]  # the agent's built-in tools (gitops_flow/agent.py)
ComponentKind = Literal["input", "prompt", "model", "agent", "parser", "memory", "transform"]
FAKEABLE: tuple[ComponentKind, ...] = ("model", "agent")  # kinds whose nodes `fakes` may answer for
FAKE_MODEL = "FakeChatModel"  # the built-in model that calls nothing
ENTRY_POINT_GROUP = "gitops_flow.components"
SECRETS_ATTRIBUTE = "gitops_flow_secrets"  # an entry point's target declares its secret params in this attribute
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")  # a variable a secret param takes: NAME or PREFIX_*
_COMPONENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_IMPORT_PATH = re.compile(r"[.:/]")
MAX_LATENCY_MS = 60_000  # FakeChatModel's latency_ms: what it waits before an answer, at most
MAX_TOKEN_LATENCY_MS = 1_000  # and token_latency_ms, before each token (an answer waits 60 s in all at most)

ParamIssue = tuple[tuple[str | int, ...], str, str]  # (location in params, problem code, message)


@dataclass(slots=True)
class BuildContext:
    """What a factory may use beyond its params; ``notes`` collects what a dry-build wants to say."""

    dry_run: bool = False
    node_id: str = ""
    notes: list[Problem] = field(default_factory=list)
    fake_responses: list[str] | None = None  # an agent node's scripted model answers (`gitops-flow test`, demos)

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


class ComponentRegistry:
    """Name -> Component. Resolution never falls back to treating a name as an import path."""

    def __init__(self, components: Iterable[Component]) -> None:
        self._components = {c.name: c for c in components}
        self._factories: dict[str, Callable[..., Any]] = {}
        self._param_models: dict[str, type[BaseModel] | None] = {}
        self._secrets: dict[str, tuple[frozenset[str], dict[str, tuple[str, ...]]]] = {}

    @classmethod
    def builtin(cls) -> ComponentRegistry:
        return cls(BUILTIN_COMPONENTS)

    @classmethod
    def configured(cls, settings: Settings) -> ComponentRegistry:
        """The built-ins plus what the operator configured: entry points and a components file."""
        registry = cls.builtin()
        if settings.load_entry_points:
            registry = registry.with_entry_points()
        if settings.components_file is not None:
            registry = registry.with_file(settings.components_file)
        return registry

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def names(self) -> list[str]:
        return sorted(self._components)

    def extended(self, extra: Iterable[Component]) -> ComponentRegistry:
        """A new registry with operator components added; a clash with an existing name is a ConfigError."""
        merged = dict(self._components)
        for component in extra:
            if not _COMPONENT_NAME.match(component.name):
                raise ConfigError(f"component name {component.name!r} must match {_COMPONENT_NAME.pattern}")
            if component.name in merged:
                raise ConfigError(f"component {component.name!r} is already registered")
            merged[component.name] = component
        return ComponentRegistry(merged.values())

    def with_entry_points(self) -> ComponentRegistry:
        """Add the components that installed packages declare in the ``gitops_flow.components`` group."""
        found = entry_points(group=ENTRY_POINT_GROUP)
        return self.extended(Component(name=ep.name, target=ep.value, secrets=None) for ep in found)

    def with_file(self, path: Path) -> ComponentRegistry:
        """Add the components listed in an operator's YAML file (see docs/components.md)."""
        return self.extended(load_components_file(path))

    def get(self, name: str) -> Component:
        """The component registered as ``name``; BuildError naming the problem otherwise."""
        try:
            return self._components[name]
        except KeyError:
            pass
        if _IMPORT_PATH.search(name):
            raise BuildError(
                f"component {name!r} looks like an import path; flows name registered components only "
                f"({', '.join(self.names())})",
                code="import-path",
            )
        hint = difflib.get_close_matches(name, self.names(), n=1)
        suffix = f"; did you mean {hint[0]!r}?" if hint else f"; registered: {', '.join(self.names())}"
        raise BuildError(f"component {name!r} is not allowlisted{suffix}", code="unknown-component")

    def kind_of(self, name: str) -> ComponentKind | None:
        """The kind of a registered component; None for a name that is not registered."""
        component = self._components.get(name)
        return component.kind if component else None

    def calls_a_model(self, name: str) -> bool:
        """Whether a node of this component would call a real model (a model or an agent, but not the
        FakeChatModel): the nodes that tests must fake and ``--fake-models`` replaces."""
        return self.kind_of(name) in FAKEABLE and name != FAKE_MODEL

    def factory(self, component: Component) -> Callable[..., Any]:
        if not isinstance(component.target, str):
            return component.target
        if component.name not in self._factories:
            self._factories[component.name] = _load_target(component)
        return self._factories[component.name]

    def secret_params(self, component: Component) -> frozenset[str]:
        """The params of ``component`` that take a credential (see Component.secrets); an entry point's target is
        loaded to read its declaration."""
        return self._declared(component)[0]

    def secret_names(self, component: Component) -> dict[str, tuple[str, ...]]:
        """Secret param -> the variables it takes, for the params whose declaration names them."""
        return self._declared(component)[1]

    def _declared(self, component: Component) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
        if component.secrets is not None:
            return component.secrets, dict(component.secret_names)
        if component.name not in self._secrets:
            declared = getattr(self.factory(component), SECRETS_ATTRIBUTE, ())
            try:
                self._secrets[component.name] = declared_secrets(declared)
            except ValueError as exc:
                raise BuildError(
                    f"component {component.name!r}: {SECRETS_ATTRIBUTE} {exc}", code="component-unavailable"
                ) from None
        return self._secrets[component.name]

    def check_params(self, component: Component, params: Mapping[str, Any]) -> list[ParamIssue]:
        """Problems of ``params`` against the component's signature: (location, code, message) each."""
        return self.coerce_params(component, params)[1]

    def coerce_params(self, component: Component, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[ParamIssue]]:
        """``params`` converted to the types the factory declares (JSON lists to tuples, ...), and their problems."""
        model = self._params_model(component)
        if model is None:
            coerced = dict(params)
        else:
            try:
                checked = model.model_validate(dict(params))
            except ValidationError as exc:
                known = list(model.model_fields)
                return dict(params), [_param_problem(component, err, known) for err in exc.errors()]
            coerced = {name: getattr(checked, name) for name in checked.model_fields_set}
        return coerced, component.check(coerced) if component.check is not None else []

    def _params_model(self, component: Component) -> type[BaseModel] | None:
        if component.name not in self._param_models:
            self._param_models[component.name] = _signature_model(component, self.factory(component))
        return self._param_models[component.name]


def _param_problem(component: Component, err: Any, known: list[str]) -> ParamIssue:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[0]), known, n=1)
        suffix = f"; did you mean {hint[0]!r}?" if hint else f"; accepted: {', '.join(known) or 'none'}"
        return loc, "unknown-param", f"{component.name} has no parameter {loc[0]!r}{suffix}"
    if err["type"] == "missing":
        return loc, "missing-param", f"{component.name} needs parameter {loc[0]!r}"
    return loc, "bad-param", f"{component.name} parameter {'.'.join(map(str, loc))}: {err['msg']}"


def _load_target(component: Component) -> Callable[..., Any]:
    """Import an operator component's ``module:attr``; reached only for names the operator registered."""
    assert isinstance(component.target, str)
    module_name, _, attr = component.target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BuildError(
            f"component {component.name!r}: cannot load {component.target!r}: {exc}", code="component-unavailable"
        ) from None
    if not callable(obj):
        raise BuildError(f"component {component.name!r}: {component.target!r} is not callable", code="build-failed")
    return typing.cast(Callable[..., Any], obj)


def _signature_model(component: Component, factory: Callable[..., Any]) -> type[BaseModel] | None:
    """A pydantic model of the factory's keyword parameters, so params are checked before anything is built."""
    if isinstance(factory, type) and issubclass(factory, BaseModel):
        return None  # a pydantic class checks its own fields when constructed (dry-build reports them)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(factory, include_extras=True)
    except (NameError, TypeError):
        hints = {}  # annotations that do not resolve here: still check names and required-ness
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if name == "ctx" and component.takes_context:
            continue
        if param.kind is param.VAR_KEYWORD:
            return None  # accepts anything: nothing to check by name
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            continue
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints.get(name, Any), default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{component.name}Params", __config__=config, **fields)


def declared_secrets(value: Any) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    """A declaration of secret params: a list of params, or a mapping of each param to the variables it takes
    (names or ``PREFIX_*``). Raises ValueError saying what a declaration must be."""
    names: dict[str, tuple[str, ...]] = {}
    if isinstance(value, dict):
        for param, takes in value.items():
            listed = [takes] if isinstance(takes, str) else takes
            if not isinstance(listed, list | tuple) or not all(
                isinstance(n, str) and _SECRET_NAME.match(n) and not n.startswith("GITOPS_FLOW_") for n in listed
            ):
                raise ValueError(f"for {param!r} must name variables (NAME or PREFIX_*), never GITOPS_FLOW_*")
            names[str(param)] = tuple(listed)
        params: Any = list(value)
    else:
        params = value
    if isinstance(params, str) or not isinstance(params, list | tuple | set | frozenset):
        raise ValueError("must be a list of parameter names, or a mapping of each to the variables it takes")
    if not all(isinstance(n, str) and n.isidentifier() for n in params):
        raise ValueError("must be a list of parameter names, or a mapping of each to the variables it takes")
    return frozenset(params), names


def load_components_file(path: Path) -> list[Component]:
    """Parse an operator's components file: ``components: {Name: "module:attr" | {target, kind, description,
    secrets}}``, where ``secrets`` lists the params that take a credential (or maps each to the variables it
    takes)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"components file {path}: {exc}") from None
    entries = data.get("components") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f"components file {path}: expected a mapping under 'components'")
    found = []
    for name, entry in entries.items():
        spec = {"target": entry} if isinstance(entry, str) else entry
        if not isinstance(spec, dict) or not _TARGET.match(str(spec.get("target", ""))):
            raise ConfigError(f"components file {path}: {name!r} needs a target of the form 'module:attr'")
        unknown = set(spec) - {"target", "kind", "description", "secrets"}
        if unknown:
            raise ConfigError(f"components file {path}: {name!r} has unknown keys {sorted(unknown)}")
        kind = spec.get("kind", "transform")
        if kind not in typing.get_args(ComponentKind):
            raise ConfigError(f"components file {path}: {name!r} has unknown kind {kind!r}")
        try:
            params, names = declared_secrets(spec.get("secrets", []))
        except ValueError as exc:
            raise ConfigError(f"components file {path}: {name!r} secrets {exc}") from None
        description = str(spec.get("description", ""))
        found.append(
            Component(
                str(name),
                str(spec["target"]),
                kind,
                description,
                secrets=params,
                secret_names=tuple(sorted(names.items())),
            )
        )
    return found


# -- built-in factories ----------------------------------------------------------------------------------------------
# langchain is imported inside each factory, so loading the registry (and validating without a dry-build) stays cheap.

MessageRole = Literal["system", "human", "user", "ai", "assistant", "placeholder"]
TemplateFormat = Literal["f-string", "mustache"]  # never jinja2: a template language is code


def passthrough(ctx: BuildContext) -> Runnable[Any, Any]:
    """Hands its input on unchanged: an explicit entry node for flows that fan out from the request."""
    return RunnablePassthrough()


def prompt_template(
    ctx: BuildContext, *, template: str, template_format: TemplateFormat = "f-string"
) -> Runnable[Any, Any]:
    """A text prompt; its ``{variables}`` are read from the node's input dict."""
    from langchain_core.prompts import PromptTemplate

    return PromptTemplate.from_template(template, template_format=template_format)


def chat_prompt_template(
    ctx: BuildContext,
    *,
    messages: Annotated[list[tuple[MessageRole, str]], Field(min_length=1)],
    template_format: TemplateFormat = "f-string",
) -> Runnable[Any, Any]:
    """A chat prompt from ``[role, template]`` pairs; ``["placeholder", "{history}"]`` inserts a message list."""
    from langchain_core.prompts import ChatPromptTemplate

    return ChatPromptTemplate.from_messages(list(messages), template_format=template_format)


def _prompt_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """A PromptTemplate's template holds nothing that makes formatting costly or reaches into values."""
    why = templates.problem(params["template"], params.get("template_format", "f-string"))
    return [(("template",), "bad-template", why)] if why else []


def _chat_prompt_check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """Each message template of a ChatPromptTemplate, as ``_prompt_check``."""
    template_format = params.get("template_format", "f-string")
    issues: list[ParamIssue] = []
    for index, (_, text) in enumerate(params["messages"]):
        why = templates.problem(text, template_format)
        if why:
            issues.append((("messages", index, 1), "bad-template", why))
    return issues


def chat_model(
    ctx: BuildContext,
    *,
    model: Annotated[str, Field(min_length=1)],
    model_provider: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model_kwargs: dict[str, JsonValue] | None = None,
) -> Runnable[Any, Any]:
    """Any chat model that ``langchain.chat_models.init_chat_model`` knows, when its provider package is installed."""
    from langchain.chat_models.base import _BUILTIN_PROVIDERS, init_chat_model

    provider, name = provider_of(model, model_provider)
    if provider not in _BUILTIN_PROVIDERS:
        raise BuildError(
            f"unknown model provider {provider!r}; known: {', '.join(sorted(_BUILTIN_PROVIDERS))}", code="bad-param"
        )
    package = _BUILTIN_PROVIDERS[provider][0].split(".")[0]
    if importlib.util.find_spec(package) is None:
        if not ctx.dry_run:
            raise BuildError(
                f"model provider {provider!r} needs the package {package.replace('_', '-')!r}, which is not installed",
                code="component-unavailable",
            )
        ctx.note(
            "provider-not-installed",
            f"{package.replace('_', '-')} is not installed here, so model node {ctx.node_id!r} was checked by its "
            "parameters only",
            severity="warning",
        )
        from gitops_flow.agent import fake_tool_model

        return fake_tool_model([""])  # a stand-in that can also be given tools, for an agent's dry-build
    given = {
        "temperature": temperature,
        "max_tokens": max_tokens,
        "top_p": top_p,
        "stop": stop,
        "timeout": timeout,
        "max_retries": max_retries,
        "base_url": base_url,
        "api_key": api_key,
    }
    kwargs: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if model_kwargs:
        kwargs["model_kwargs"] = dict(model_kwargs)
    return typing.cast("Runnable[Any, Any]", init_chat_model(name, model_provider=provider, **kwargs))


def provider_of(model: str, model_provider: str | None) -> tuple[str, str]:
    """(provider, model name) as ``init_chat_model`` will see them; BuildError when the provider cannot be told."""
    if model_provider:
        return model_provider, model
    provider, sep, name = model.partition(":")
    if sep:
        return provider, name
    from langchain.chat_models.base import _attempt_infer_model_provider

    inferred = _attempt_infer_model_provider(model)
    if inferred is None:
        raise BuildError(
            f"cannot tell the provider of model {model!r}; write it as 'provider:model' (e.g. 'openai:gpt-4o-mini')",
            code="bad-param",
        )
    return inferred, model


def fake_chat_model(
    ctx: BuildContext,
    *,
    responses: Annotated[list[str], Field(min_length=1)],
    latency_ms: Annotated[int, Field(ge=0, le=MAX_LATENCY_MS)] = 0,
    token_latency_ms: Annotated[int, Field(ge=0, le=MAX_TOKEN_LATENCY_MS)] = 0,
) -> Runnable[Any, Any]:
    """A chat model for demos and tests: answers ``responses`` in turn, streamed token by token; calls nothing.
    ``latency_ms`` passes before each answer and ``token_latency_ms`` before each token (a dry-build, which is what
    flow tests run, never waits: a test checks answers, not time)."""
    from gitops_flow.fakemodel import FakeChatModel

    timed = not ctx.dry_run
    return FakeChatModel(
        messages=cycle(list(responses)),
        latency=latency_ms / 1000 if timed else 0.0,
        token_latency=token_latency_ms / 1000 if timed else 0.0,
    )


def tool_agent(
    ctx: BuildContext,
    *,
    model: Annotated[str, Field(min_length=1)],
    model_provider: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model_kwargs: dict[str, JsonValue] | None = None,
    system_prompt: str = "",
    tools: list[ToolName] | None = None,
    max_iterations: Annotated[int, Field(ge=1, le=100)] = 15,
) -> Runnable[Any, Any]:
    """A chat model (as ``ChatModel``) that calls the built-in ``tools`` in a loop until it answers; takes and gives
    what a chat model does. Test ``fakes`` script its model, tool-call turns included (docs/components.md)."""
    from gitops_flow.agent import ToolAgent, fake_tool_model, make_tools, with_tools

    made = make_tools(tools or [])
    if ctx.fake_responses is not None:
        llm: Runnable[Any, Any] = fake_tool_model(ctx.fake_responses)
    else:
        llm = chat_model(
            ctx,
            model=model,
            model_provider=model_provider,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            base_url=base_url,
            api_key=api_key,
            model_kwargs=model_kwargs,
        )
    try:
        bound = with_tools(llm, made)
    except (TypeError, NotImplementedError) as exc:
        raise BuildError(f"model {model!r} cannot call tools: {exc}", code="bad-param") from None
    return ToolAgent(bound, made, system_prompt=system_prompt, max_iterations=max_iterations)


def text(
    ctx: BuildContext, *, key: str | None = None, template: str | None = None, separator: str = "\n"
) -> Runnable[Any, Any]:
    """Its input as text: a string as it is, a message's or a prompt's text, a list (of messages) one item a line.

    ``key`` reads that key of an object input first. ``template`` shapes each item: ``{text}``, ``{sender}``
    (User or Machine) and ``{sender_name}`` (User or AI) are replaced, and an object item's own keys too; nothing
    else in it is interpreted.
    """
    from gitops_flow.textify import textify

    return textify(key=key, template=template, separator=separator)


def pick(ctx: BuildContext, *, key: Annotated[str, Field(min_length=1)]) -> Runnable[Any, Any]:
    """The value under ``key`` of its object input."""
    from langchain_core.runnables import RunnableLambda

    def read(value: Any) -> Any:
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"expected an object with the key {key!r}")
        return value[key]

    return RunnableLambda(read, name=f"pick_{key}")


def str_output_parser(ctx: BuildContext) -> Runnable[Any, Any]:
    """A model message (or its stream) as plain text."""
    from langchain_core.output_parsers import StrOutputParser

    return StrOutputParser()


def json_output_parser(ctx: BuildContext) -> Runnable[Any, Any]:
    """A model's text answer parsed as JSON (streams partial objects)."""
    from langchain_core.output_parsers import JsonOutputParser

    return JsonOutputParser()


def chat_history(
    ctx: BuildContext,
    *,
    input_key: str = "question",
    history_key: str = "history",
    max_messages: Annotated[int, Field(ge=1, le=10_000)] = 50,
) -> Runnable[Any, Any]:
    """The entry of a conversational flow: adds the session's past messages under ``history_key``.

    The flow builder wraps the whole flow in history.WithHistory, which reads the session's messages before the
    flow and saves each turn (``input_key`` and the answer) after it; the node itself hands its input on.
    """
    return RunnablePassthrough()


def _builtin(
    name: str,
    factory: Callable[..., Any],
    kind: ComponentKind,
    description: str,
    secrets: Iterable[str] = (),
    check: Callable[[Mapping[str, Any]], list[ParamIssue]] | None = None,
) -> Component:
    return Component(name, factory, kind, description, takes_context=True, secrets=frozenset(secrets), check=check)


BUILTIN_COMPONENTS = (
    _builtin("Passthrough", passthrough, "input", "Hands its input on unchanged."),
    _builtin("PromptTemplate", prompt_template, "prompt", "A text prompt with {variables}.", check=_prompt_check),
    _builtin(
        "ChatPromptTemplate",
        chat_prompt_template,
        "prompt",
        "A chat prompt from [role, template] pairs.",
        check=_chat_prompt_check,
    ),
    _builtin("ChatModel", chat_model, "model", "A chat model of any provider init_chat_model knows.", ["api_key"]),
    _builtin(FAKE_MODEL, fake_chat_model, "model", "Answers the given responses in turn; for demos and tests."),
    _builtin(
        "Agent", tool_agent, "agent", "A chat model that calls built-in tools (calculator, current_date).", ["api_key"]
    ),
    _builtin("StrOutputParser", str_output_parser, "parser", "A model message as text."),
    _builtin("Text", text, "parser", "Its input as text: strings, messages, prompts, lists of messages."),
    _builtin("Pick", pick, "transform", "One key of its object input."),
    _builtin("JsonOutputParser", json_output_parser, "parser", "A model's answer parsed as JSON."),
    _builtin("ChatHistory", chat_history, "memory", "The conversation so far, kept per session in the state store."),
)

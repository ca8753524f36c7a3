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
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from gitops_flow.components import control
from gitops_flow.components.base import FAKE_MODEL, FAKEABLE, Component, ComponentKind, ParamIssue
from gitops_flow.components.builtins import BUILTIN_COMPONENTS
from gitops_flow.config import Settings
from gitops_flow.exceptions import BuildError, ConfigError
from gitops_flow.flow.parts import MAP

ENTRY_POINT_GROUP = "gitops_flow.components"
SECRETS_ATTRIBUTE = "gitops_flow_secrets"  # an entry point's target declares its secret params in this attribute
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")  # a variable a secret param takes: NAME or PREFIX_*
_COMPONENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_IMPORT_PATH = re.compile(r"[.:/]")


class ComponentRegistry:
    """Name -> Component. Resolution never falls back to treating a name as an import path."""

    def __init__(self, components: Iterable[Component]) -> None:
        self._components = {c.name: c for c in components}
        self._factories: dict[str, Callable[..., Any]] = {}
        self._param_models: dict[str, type[BaseModel] | None] = {}
        self._secrets: dict[str, tuple[frozenset[str], dict[str, tuple[str, ...]]]] = {}

    def __reduce__(self) -> tuple[type[ComponentRegistry], tuple[list[Component]]]:
        """Pickled as its components only (the test sandbox sends a registry to its child process): the caches of
        parameter models are built again there, from classes made at run time that do not pickle."""
        return (type(self), (list(self._components.values()),))

    @classmethod
    def builtin(cls, *, map_max_items: int | None = None, map_max_concurrency: int | None = None) -> ComponentRegistry:
        """The built-in components; a Map bounded by the settings' defaults unless told otherwise."""
        defaults = Settings.model_fields
        items = map_max_items if map_max_items is not None else defaults["map_max_items"].default
        concurrency = (
            map_max_concurrency if map_max_concurrency is not None else defaults["map_max_concurrency"].default
        )
        return cls((*BUILTIN_COMPONENTS, *control.components(items, concurrency)))

    @classmethod
    def configured(cls, settings: Settings) -> ComponentRegistry:
        """The built-ins plus what the operator configured: entry points and a components file."""
        registry = cls.builtin(map_max_items=settings.map_max_items, map_max_concurrency=settings.map_max_concurrency)
        if settings.load_entry_points:
            registry = registry.with_entry_points()
        if settings.components_file is not None:
            registry = registry.with_file(settings.components_file)
        return registry

    def map_max_items(self) -> int:
        """The server's bound on the items one Map (with the maps inside it) may run its body on per run."""
        target = self._components[MAP].target
        assert isinstance(target, control.MapFactory)
        return target.max_items

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
        """Whether a node of this component would call a real model or reach a site (a model, an agent or a tool
        that sends requests out, but not the FakeChatModel): the nodes that tests must fake and ``--fake-models``
        replaces."""
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
    # a component's params may start with model_ (model_kwargs, model_provider): no pydantic namespace is reserved
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())
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
        if kind not in typing.get_args(ComponentKind) or kind == "control":  # control nodes are built-in only
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

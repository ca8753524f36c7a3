"""LangFlow's tweaks, allowed by the flow: a flow document names the params a caller may set for one request
(``tweakable``), and a request's tweaks are checked against that list and then as a committed param would be.

A tweak changes what runs, so what may change is the flow author's decision, reviewed in Git like the rest of the
flow: the declaration is validated (its nodes and params exist; no secret param, no base URL, no model provider or
kwargs, nothing credentials.py guards, ever), and each request's values are checked with the component's own
signature and checks and the secrets rules (no ``$env``, a base URL never). A tweaked flow is built as a commit's
flow is (the same registry, secrets and fakes), kept in a small cache, and runs like the flow itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gitops_flow.components import credentials
from gitops_flow.components.knowledge import Knowledge
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BuildError, GitOpsFlowError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.problems import Problem, json_path
from gitops_flow.runtime.compiler import BuiltFlow
from gitops_flow.security import references as secretrefs
from gitops_flow.security.policy import SecretPolicy

# what a model node's endpoint, credential and provider are made of: never set by a caller
GUARDED = frozenset({"api_key", "base_url", "model", "model_provider", "model_kwargs"})
MAX_TWEAKED = 64  # tweaked builds kept per server (the least recently used goes first)
MAX_TWEAK_BYTES = 64 * 1024  # one request's tweaks, as JSON


class BadTweak(GitOpsFlowError):
    """A request's tweak that the flow does not allow, or whose value its component refuses; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def problems(spec: FlowSpec, registry: ComponentRegistry) -> list[Problem]:
    """What is wrong with a flow's ``tweakable`` declaration, each at its path."""
    found: list[Problem] = []
    nodes = {n.id: n for n in spec.nodes}
    for node_id, params in spec.tweakable.items():
        where = ("tweakable", node_id)
        node = nodes.get(node_id)
        if node is None:
            found.append(Problem(code="unknown-node", message=f"no node {node_id!r} to tweak", path=json_path(where)))
            continue
        try:
            component = registry.get(node.component)
            secret = registry.secret_params(component)
        except BuildError:
            continue  # the node's own problem says so
        for index, param in enumerate(params):
            why = _never(param, component.name, secret)
            if why is None:
                unknown = [i for i in registry.check_params(component, {param: None}) if i[1] == "unknown-param"]
                why = unknown[0][2] if unknown else None
                code = "unknown-param"
            else:
                code = "tweak-not-allowed"
            if why is not None:
                found.append(Problem(code=code, message=why, path=json_path([*where, index])))
    return found


INDEXED = frozenset({"paths", "embeddings", "chunk_size", "chunk_overlap"})  # a Retriever's index is the build's
# where an HttpRequest's request, and its key, go: a caller could move the key to another allowed host
REQUEST_TARGET = frozenset({"url", "method", "headers", "api_key_header", "api_key_prefix"})


def _never(param: str, component: str, secret: frozenset[str]) -> str | None:
    if param in secret:
        return f"{component}.{param} takes a secret; a caller never sets it"
    if component in credentials.MODEL_COMPONENTS and param in GUARDED:
        return f"{component}.{param} says where a model's requests (and its key) go; a caller never sets it"
    if component == "Retriever" and param in INDEXED:
        return f"{component}.{param} says what is indexed, which builds do (never a request); only k may be tweaked"
    if component == "HttpRequest" and param in REQUEST_TARGET:
        return f"{component}.{param} says where its request (and its key) goes; a caller never sets it"
    return None


def check_request(tweaks: Any) -> dict[str, dict[str, Any]]:
    """A request's ``tweaks``, shaped ``{node id: {param: value}}``; BadTweak otherwise."""
    if not isinstance(tweaks, dict) or not all(isinstance(v, dict) for v in tweaks.values()):
        raise BadTweak("bad-tweak", "tweaks are {node id: {param: value}}")
    if len(orjson.dumps(tweaks)) > MAX_TWEAK_BYTES:
        raise BadTweak("bad-tweak", f"tweaks are at most {MAX_TWEAK_BYTES:,} bytes of JSON")
    if any(secretrefs.env_refs(tweaks)):
        raise BadTweak("tweak-not-allowed", "a tweak never reads the server's environment ($env)")
    return tweaks


class Tweaker:
    """Applies a request's tweaks to a served flow: checks them, then builds the tweaked flow with ``rebuild`` (the
    server's own builder), keeping the last MAX_TWEAKED builds."""

    def __init__(
        self,
        registry: ComponentRegistry,
        policy: SecretPolicy,
        rebuild: Callable[[FlowSpec, Knowledge | None], BuiltFlow],
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.rebuild = rebuild
        self._cache: OrderedDict[tuple[int, bytes], tuple[BuiltFlow, BuiltFlow]] = OrderedDict()
        self._lock = threading.Lock()  # builds run in worker threads

    def apply(self, flow: BuiltFlow, tweaks: Mapping[str, Mapping[str, Any]]) -> BuiltFlow:
        """``flow`` with ``tweaks`` applied (itself when there are none). Raises BadTweak. Blocking: builds."""
        if not tweaks:
            return flow
        spec = self.tweaked(flow.spec, tweaks)
        key = (id(flow), orjson.dumps(tweaks, option=orjson.OPT_SORT_KEYS))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] is flow:
                self._cache.move_to_end(key)
                return cached[1]
        try:
            built = self.rebuild(spec, flow.knowledge)  # a Retriever reads the documents of the flow's own commit
        except BuildError as exc:
            raise BadTweak("bad-tweak", f"the tweaked flow does not build: {exc}") from None
        with self._lock:
            self._cache[key] = (flow, built)  # holding ``flow`` keeps its id from being reused meanwhile
            while len(self._cache) > MAX_TWEAKED:
                self._cache.popitem(last=False)
        return built

    def tweaked(self, spec: FlowSpec, tweaks: Mapping[str, Mapping[str, Any]]) -> FlowSpec:
        """``spec`` with each tweaked node's params replaced, every tweak checked. Raises BadTweak."""
        allowed = spec.tweakable
        nodes = list(spec.nodes)
        by_id = {n.id: i for i, n in enumerate(nodes)}
        for node_id, values in tweaks.items():
            if node_id not in allowed:
                listed = ", ".join(sorted(allowed)) or "none"
                raise BadTweak("tweak-not-allowed", f"node {node_id!r} takes no tweaks (tweakable nodes: {listed})")
            refused = sorted(set(values) - set(allowed[node_id]))
            if refused:
                raise BadTweak(
                    "tweak-not-allowed",
                    f"{node_id}.{refused[0]} is not tweakable (tweakable: {', '.join(allowed[node_id]) or 'none'})",
                )
            index = by_id[node_id]
            node = nodes[index]
            params = {**node.params, **values}
            self._check(node.component, node_id, params, index)
            nodes[index] = node.model_copy(update={"params": params})
        return spec.model_copy(update={"nodes": nodes})

    def _check(self, name: str, node_id: str, params: dict[str, Any], index: int) -> None:
        component = self.registry.get(name)
        base = ("nodes", index, "params")
        found = credentials.check(self.registry, component, params, base, self.policy)
        if found:
            raise BadTweak("tweak-not-allowed", f"{node_id}: {found[0].message}")
        bare = secretrefs.resolve(dict(params), {}, missing=[])
        issues = self.registry.check_params(component, bare)
        if issues:
            loc, _, message = issues[0]
            raise BadTweak("bad-tweak", f"{node_id}.{'.'.join(map(str, loc))}: {message}")

"""Compile a FlowSpec into one LangChain Runnable: sequences stay sequences, fan-out runs in parallel, fan-in keys."""

from __future__ import annotations

import operator
import time
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnableParallel, RunnablePassthrough
from pydantic import BaseModel, RootModel, ValidationError, create_model

from gitops_flow.components import langchain_internals as internals
from gitops_flow.components.base import FAKEABLE, BuildContext
from gitops_flow.components.breaker import Breakers
from gitops_flow.components.control import Mapped
from gitops_flow.components.http_fetch import RUN_KEY, Tally
from gitops_flow.components.knowledge import Knowledge
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BadInput, BuildError
from gitops_flow.flow import parts
from gitops_flow.flow.document import FlowSpec, NodeSpec
from gitops_flow.flow.graph import FlowGraph, analyse
from gitops_flow.problems import Problem, json_path
from gitops_flow.runtime.conversations import UNSAVED, UNSAVED_KEY, HistoryStore, MemoryHistoryStore, WithHistory
from gitops_flow.runtime.lean.control import form_of as control_form
from gitops_flow.runtime.lean.forms import as_value, form_of
from gitops_flow.runtime.lean.program import LeanFlow, Plan
from gitops_flow.security import references as secretrefs
from gitops_flow.security.egress import EgressPolicy

FAKE_EMBEDDINGS_PREFIX, FAKE_EMBEDDINGS = "hashing:", "hashing:256"  # what `serve --fake-models` embeds with


@dataclass(frozen=True, slots=True)
class BuiltFlow:
    """A flow ready to run: the runnable plus what the build noticed (placeholders used, providers missing)."""

    spec: FlowSpec
    runnable: Runnable[Any, Any]
    graph: FlowGraph
    notes: tuple[Problem, ...] = field(default=())
    input_model: type[Any] | None = field(default=None, repr=False)  # the pydantic model /input_schema publishes
    output_model: type[Any] | None = field(default=None, repr=False)
    # the same graph as a plain async program (gitops_flow/runtime/lean/): what the server runs unless a request needs
    # LangChain's callbacks; it answers what ``runnable`` answers
    lean: LeanFlow | WithHistory | None = field(default=None, repr=False)
    # the repository's files it was built from (a Retriever's documents), so a tweaked build reads the same ones
    knowledge: Knowledge | None = field(default=None, repr=False, compare=False)
    # the JSON Schemas of input_model and output_model, computed once per build by the server's builder, off the event
    # loop (with_schemas): a flow with tens of thousands of fields takes a second to compute them
    input_schema: dict[str, Any] | None = field(default=None, repr=False)
    output_schema: dict[str, Any] | None = field(default=None, repr=False)

    def json_schema(self, which: str) -> dict[str, Any]:
        """The JSON Schema of the flow's ``input`` or ``output`` as published: the one computed with the build when
        there is one, else computed now (a build the server's builder did not make: a test's, a tweaked run's)."""
        cached = self.input_schema if which == "input" else self.output_schema
        if cached is not None:
            return cached
        return _schema_of(self.input_model if which == "input" else self.output_model)

    def check_input(self, value: Any) -> None:
        """Raise BadInput when ``value`` does not match the input schema the flow publishes, or (TurnTooLarge) when a
        conversational flow would keep a turn larger than its store's limit: what the server checks before it runs a
        request, and `gitops-flow test` before it runs a case. The message names the fields, never their values."""
        if self.input_model is None:
            return
        try:
            self.input_model.model_validate(value)
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors()[:5])
            raise BadInput(f"the input does not match the flow's input schema ({where})") from None
        if isinstance(self.runnable, WithHistory):
            self.runnable.check_turn(value)  # raises TurnTooLarge: a turn the conversation would not keep


def with_schemas(built: BuiltFlow) -> BuiltFlow:
    """``built`` with its input and output JSON Schemas computed, so that no request computes them again; blocking
    (the builder calls it in its thread, once per build)."""
    return replace(built, input_schema=_schema_of(built.input_model), output_schema=_schema_of(built.output_model))


def _schema_of(model: type[Any] | None) -> dict[str, Any]:
    if model is None or not hasattr(model, "model_json_schema"):
        return {}
    schema: dict[str, Any] = model.model_json_schema()
    return schema


def runnable_config(
    config: Mapping[str, Any], flow: str, run_id: uuid.UUID, metadata: Mapping[str, Any]
) -> RunnableConfig:
    """The config of one run of ``flow``: ``config`` (what the caller may set), the run's ``metadata`` added to
    the caller's, its ``run_id``, and the flow's name as the run's name unless the caller gave one; its
    ``configurable`` gets the run's Tally, which counts the outbound requests of all its tools (http_fetch.py).
    Every request the server runs is run with it, and so is every case of `gitops-flow test`."""
    merged = {**config.get("metadata", {}), **metadata}
    given = config.get("configurable", {})
    # a run that only repeats one answered (a shadow, a canary's check: it saves no turn) repeats no POST either
    configurable = {**given, RUN_KEY: Tally(repeats=given.get(UNSAVED_KEY) is UNSAVED)}
    return typing.cast(
        RunnableConfig,
        {
            **config,
            "configurable": configurable,
            "metadata": merged,
            "run_id": run_id,
            "run_name": config.get("run_name", flow),
        },
    )


def build_flow(
    spec: FlowSpec,
    registry: ComponentRegistry,
    *,
    secrets: Mapping[str, str] | None = None,
    history: HistoryStore | None = None,
    fakes: Mapping[str, Sequence[str]] | None = None,
    dry_run: bool = False,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    breakers: Breakers | None = None,
    knowledge: Knowledge | None = None,
    fake_embeddings: bool = False,
    egress: EgressPolicy | None = None,
) -> BuiltFlow:
    """Build ``spec``; raises BuildError (with the node's path) on the first node that cannot be built.

    ``dry_run`` builds without any secret or provider package (placeholders stand in, and ``notes`` say so).
    ``fakes`` replaces the named model nodes with fake models answering those responses (``gitops-flow test``).
    ``deadline`` (a ``clock()`` reading) is checked before each node: past it, BuildError ``build-timeout``.
    ``breakers``: the provider endpoints' circuit breakers the models call through (None: none).
    ``knowledge`` is the repository's files at the build's revision: a Retriever reads its documents there, and
    indexes them (embedding the chunks its cache lacks; never in a dry-build, except with ``hashing:``). ``egress``:
    where the tools (HttpRequest, WebSearch, an agent's fetch_url and web_search) may send requests when they run
    (None: nowhere, as in flow tests). Nothing else is invoked: building never calls a model, reads another file or
    touches the network.
    ``fake_embeddings`` (``serve --fake-models``): an embedding model is a model too, so every node's provider
    ``embeddings`` become the built-in ``hashing:256`` (no key, no network) and its ``api_key`` goes unread.
    """
    graph, problems = analyse(spec)
    if graph is None:
        first = problems[0]
        raise BuildError(first.message, path=first.path, code=first.code)
    notes: list[Problem] = []
    built: dict[str, Runnable[Any, Any]] = {}
    position = {node.id: index for index, node in enumerate(spec.nodes)}

    def build(index: int, parts: Mapping[str, Runnable[Any, Any]] | None = None) -> None:
        node = spec.nodes[index]
        if deadline is not None and clock() >= deadline:
            raise BuildError(
                f"the build ran past its time limit before node {node.id!r} ({index:,} of {len(spec.nodes):,} "
                "nodes built)",
                path=json_path(["nodes", index]),
                code="build-timeout",
            )
        built[node.id] = _build_node(
            spec,
            index,
            registry,
            secrets or {},
            fakes or {},
            dry_run,
            notes,
            breakers,
            knowledge,
            deadline,
            fake_embeddings,
            egress,
            parts,
        )

    controls = set(graph.controls)
    for index, node in enumerate(spec.nodes):
        if node.id not in controls:
            build(index)
    # a control node is built once its parts are: the innermost first (graph.controls), each part compiled as a flow
    leans = internals.HOOKS.runnables  # without LangChain's hooks the flow runs as its runnable
    compiled: dict[str, Runnable[Any, Any]] = {}
    programs: dict[str, LeanFlow] = {}
    runs: dict[str, int] = {}  # control node -> the most runs of a part's first node one run of it makes
    for control in graph.controls:
        node = spec.nodes[position[control]]
        inner = 1
        for _, root in parts.roots(node.component, node.params):
            part = graph.parts[root]
            inner = max([inner, *(runs[n] for n in part.order if n in runs)])
            if root not in compiled:
                members = {n: _named(built[n], n) for n in part.order}
                compiled[root] = _compile(part, members)
                if leans:
                    programs[root] = _lean(part, members, compiled[root], programs)
        build(position[control], compiled)
        runs[control] = _runs(registry, control, position[control], built[control], inner)
    _check_fan_in_variables(spec, graph, built)
    named = {node_id: _named(built[node_id], node_id) for node_id in graph.order}
    runnable = _compile(graph, named)
    lean: LeanFlow | WithHistory | None = _lean(graph, named, runnable, programs) if leans else None
    memory = [(i, n) for i, n in enumerate(spec.nodes) if registry.kind_of(n.component) == "memory"]
    if memory:
        if history is None and not dry_run:
            raise BuildError("this flow keeps chat history, but no history store was given", code="no-history-store")
        runnable = _with_history(runnable, graph, built, memory, history or MemoryHistoryStore())
        assert isinstance(runnable, WithHistory)
        lean = runnable.over(lean) if lean is not None else None
    runnable = _named(runnable, spec.name)
    return BuiltFlow(
        spec=spec,
        runnable=runnable,
        graph=graph,
        notes=tuple(notes),
        # the entry receives the request, so what it takes is what the flow takes. Not the compiled graph's own
        # schema: LangChain's RunnableParallel (the state of a fan-out graph) merges its steps' fields and takes
        # the ``root`` field of a step that accepts anything (a Passthrough entry) for a required property
        input_model=runnable.get_input_schema() if memory else _entry_input(graph, built),
        output_model=runnable.get_output_schema(),
        lean=lean,
        knowledge=knowledge,
    )


def _named(runnable: Runnable[Any, Any], name: str) -> Runnable[Any, Any]:
    """Callbacks see each node by its id and the flow by its name. Setting the name costs nothing per call,
    unlike a ``with_config(run_name=...)`` binding, which adds a layer to every invocation."""
    try:
        runnable.name = name
    except (AttributeError, TypeError, ValueError):
        return runnable.with_config(run_name=name)
    return runnable


def _build_node(
    spec: FlowSpec,
    index: int,
    registry: ComponentRegistry,
    secrets: Mapping[str, str],
    fakes: Mapping[str, Sequence[str]],
    dry_run: bool,
    notes: list[Problem],
    breakers: Breakers | None = None,
    knowledge: Knowledge | None = None,
    deadline: float | None = None,
    fake_embeddings: bool = False,
    egress: EgressPolicy | None = None,
    parts: Mapping[str, Runnable[Any, Any]] | None = None,
) -> Runnable[Any, Any]:
    node = spec.nodes[index]
    where = ("nodes", index)
    try:
        component = registry.get(node.component)
    except BuildError as exc:
        raise BuildError(str(exc), path=json_path([*where, "component"]), code=exc.code) from None
    params: dict[str, Any] = dict(node.params)
    embeddings = params.get("embeddings")
    if fake_embeddings and isinstance(embeddings, str) and not embeddings.startswith(FAKE_EMBEDDINGS_PREFIX):
        params = {k: v for k, v in params.items() if k != "api_key"} | {"embeddings": FAKE_EMBEDDINGS}
    fake_responses: list[str] | None = None
    if node.id in fakes:
        if component.kind not in FAKEABLE:
            raise BuildError(
                f"only model and tool nodes can be faked; {node.id!r} is a {component.name}", path=json_path(where)
            )
        if component.kind == "model" or not component.takes_context:
            # an operator's agent cannot be handed a scripted model, so the whole node answers from the script
            component, params = registry.get("FakeChatModel"), {"responses": list(fakes[node.id])}
        else:  # a built-in agent keeps its loop and tools; only its model answers from the script
            fake_responses = list(fakes[node.id])
    try:
        secret_params = registry.secret_params(component)
    except BuildError as exc:
        raise BuildError(str(exc), path=json_path([*where, "component"]), code=exc.code) from None
    stray = next((loc for loc, _ in secretrefs.env_refs(params) if loc not in {(p,) for p in secret_params}), None)
    if stray is not None:  # validation says so first; a flow built without it still never reads such a reference
        raise BuildError(
            f"{component.name} takes no secret there", path=json_path([*where, "params", *stray]), code="env-not-secret"
        )
    missing: list[str] = []
    try:
        unread = dry_run or fake_responses is not None  # a faked agent's model, and so its key, is never used
        params = secretrefs.resolve(params, secrets, missing=missing if unread else None)
    except KeyError as exc:
        raise BuildError(
            f"secret {exc.args[0]!r} is not set in the server's environment",
            path=json_path([*where, "params"]),
            code="missing-secret",
        ) from None
    for name in dict.fromkeys(missing if dry_run else []):
        notes.append(
            Problem(
                code="secret-placeholder",
                message=f"${name} was not read; the dry-build used a placeholder for it",
                path=json_path([*where, "params"]),
                severity="notice",
            )
        )
    params, issues = registry.coerce_params(component, params)
    if issues:
        loc, code, message = issues[0]
        raise BuildError(message, path=json_path([*where, "params", *loc]), code=code)
    ctx = BuildContext(
        dry_run=dry_run,
        node_id=node.id,
        fake_responses=fake_responses,
        breakers=breakers,
        knowledge=knowledge,
        deadline=deadline,
        egress=egress,
        parts=parts,
    )
    try:
        factory = registry.factory(component)
        built = factory(ctx, **params) if component.takes_context else factory(**params)
    except BuildError as exc:
        raise BuildError(str(exc), path=json_path([*where, "params"]), code=exc.code) from None
    except (ValidationError, ValueError, TypeError, ImportError) as exc:
        raise BuildError(
            f"{component.name} could not be built: {_first_line(exc)}", path=json_path([*where, "params"])
        ) from None
    notes.extend(Problem(code=n.code, message=n.message, path=json_path(where), severity=n.severity) for n in ctx.notes)
    if not isinstance(built, Runnable):
        raise BuildError(f"{component.name} did not produce a runnable", path=json_path(where))
    return built


def _runs(registry: ComponentRegistry, node: str, index: int, built: Runnable[Any, Any], inner: int) -> int:
    """How many runs of its parts' nodes one run of a control node may make: a map's items times what its body's
    own maps make, which the server's bound (GITOPS_FLOW_MAP_MAX_ITEMS) caps for maps inside maps too."""
    if not isinstance(built, Mapped):
        return inner
    total: int = built.each.max_items * inner
    bound = registry.map_max_items()
    if total > bound:
        raise BuildError(
            f"map {node!r} may run its body's nodes {total:,} times in one run ({built.each.max_items} items, times "
            f"{inner:,} for the maps inside it), above the server's bound of {bound:,} (GITOPS_FLOW_MAP_MAX_ITEMS)",
            path=json_path(["nodes", index, "params"]),
            code="map-limit",
        )
    return total


def _check_fan_in_variables(spec: FlowSpec, graph: FlowGraph, built: Mapping[str, Runnable[Any, Any]]) -> None:
    """A prompt fed by keyed edges must find each of its variables among the keys; otherwise it fails at run time."""
    for index, node in enumerate(spec.nodes):
        edges = graph.incoming[node.id]
        variables = getattr(built[node.id], "input_variables", None)
        if len(edges) < 2 or variables is None:
            continue
        keys = {str(e.key) for e in edges}
        missing = sorted(set(variables) - keys)
        if missing:
            raise BuildError(
                f"prompt {node.id!r} uses {', '.join(missing)}, but its inputs are {', '.join(sorted(keys))}",
                path=json_path(["nodes", index, "params"]),
                code="prompt-variables",
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _compile(graph: FlowGraph, runnables: Mapping[str, Runnable[Any, Any]]) -> Runnable[Any, Any]:
    """One runnable for the whole graph.

    A chain compiles to a RunnableSequence. Otherwise the nodes before the graph's final chain (its *tail*) fill a
    dict of node outputs, level by level, where nodes of one level run in parallel and every node runs once however
    many nodes read it; the tail then runs as a sequence, so the exit streams token by token.
    """
    if graph.is_chain:
        return _sequence([runnables[n] for n in graph.order])
    tail = _tail(graph)
    # one sequence made at once: piping step by step would copy the steps so far at every level (quadratic)
    steps: list[Runnable[Any, Any]] = [RunnableParallel({graph.entry: runnables[graph.entry]})]
    for level in _levels(graph, exclude={graph.entry, *tail}):
        steps.append(RunnablePassthrough.assign(**{n: _gather(graph, n) | runnables[n] for n in level}))
    steps.append(_gather(graph, tail[0]))
    steps += [runnables[n] for n in tail]
    return _sequence(steps)


def _tail(graph: FlowGraph) -> list[str]:
    tail = [graph.exit]  # from the exit back; reversed at the end
    while len(graph.incoming[tail[-1]]) == 1:
        parent = graph.incoming[tail[-1]][0].source
        if len(graph.outgoing[parent]) != 1 or parent == graph.entry:
            break
        tail.append(parent)
    return tail[::-1]


def _levels(graph: FlowGraph, exclude: set[str]) -> list[list[str]]:
    depth: dict[str, int] = {}
    for node in graph.order:
        depth[node] = 1 + max((depth[e.source] for e in graph.incoming[node]), default=-1)
    levels: dict[int, list[str]] = {}
    for node in graph.order:
        if node not in exclude:
            levels.setdefault(depth[node], []).append(node)
    return [levels[d] for d in sorted(levels)]


def _gather(graph: FlowGraph, node: str) -> Runnable[Any, Any]:
    """The input of ``node`` read from the dict of node outputs."""
    edges = graph.incoming[node]
    if len(edges) == 1:
        return RunnableLambda(operator.itemgetter(edges[0].source), name=f"{node}.input")
    keyed = {str(e.key): e.source for e in edges}
    return RunnableLambda(lambda state: {k: as_value(state[src]) for k, src in keyed.items()}, name=f"{node}.input")


def _lean(
    graph: FlowGraph,
    runnables: Mapping[str, Runnable[Any, Any]],
    whole: Runnable[Any, Any],
    parts: Mapping[str, LeanFlow],
) -> LeanFlow:
    """The lean program of the graph ``_compile`` made ``whole`` of: the same steps, as plain async code; a
    control node runs the lean programs of its ``parts``."""
    forms = {node: control_form(r, parts) or form_of(r) for node, r in runnables.items()}
    if graph.is_chain:
        return LeanFlow(Plan(chain=True, tail=tuple(graph.order)), forms, whole)
    tail = _tail(graph)
    levels = tuple(tuple(level) for level in _levels(graph, exclude={graph.entry, *tail}))
    reads: dict[str, str | dict[str, str]] = {}
    for node in graph.order:
        edges = graph.incoming[node]
        if edges:
            reads[node] = edges[0].source if len(edges) == 1 else {str(e.key): e.source for e in edges}
    plan = Plan(chain=False, tail=tuple(tail), entry=graph.entry, levels=levels, reads=reads)
    return LeanFlow(plan, forms, whole)


def _sequence(steps: list[Runnable[Any, Any]]) -> Runnable[Any, Any]:
    return steps[0] if len(steps) == 1 else steps[0].pipe(*steps[1:])


def _with_history(
    runnable: Runnable[Any, Any],
    graph: FlowGraph,
    built: Mapping[str, Runnable[Any, Any]],
    memory: list[tuple[int, NodeSpec]],
    store: HistoryStore,
) -> Runnable[Any, Any]:
    misplaced = [(i, n) for i, n in memory if n.id != graph.entry] or memory[1:]
    if misplaced:
        raise BuildError(
            "a flow has at most one ChatHistory node, and it must be the entry",
            path=json_path(["nodes", misplaced[0][0]]),
            code="history-not-entry",
        )
    params = memory[0][1].params
    input_key = str(params.get("input_key", "question"))
    history_key = str(params.get("history_key", "history"))
    return WithHistory(
        runnable,
        store,
        input_key=input_key,
        history_key=history_key,
        window=int(params.get("max_messages", 50)),  # type: ignore[arg-type]
        input_model=_history_input(graph, built, input_key, history_key),
    )


def _history_input(
    graph: FlowGraph, built: Mapping[str, Runnable[Any, Any]], input_key: str, history_key: str
) -> type[BaseModel]:
    """What a conversational flow takes: its text under ``input_key``, plus whatever else the nodes fed by the
    ChatHistory entry read from it (the history itself is the flow's to fill, not the caller's)."""
    fields: dict[str, Any] = {}
    for schema in _read_from_entry(graph, built).values():
        if schema is not None:
            fields.update((n, (f.annotation, f)) for n, f in schema.model_fields.items() if n != history_key)
    fields[input_key] = (str, ...)
    return create_model(f"{graph.entry}_input", **fields)


def _entry_input(graph: FlowGraph, built: Mapping[str, Runnable[Any, Any]]) -> type[Any]:
    """What the flow takes: what its entry takes; for an entry that hands its input on unchanged (Passthrough),
    what the nodes it feeds read from it, when each of them reads an object of named fields. Prompts that each take
    a single variable also take bare text (a prompt puts a lone value in its variable), so ``{"question": "…"}``
    and ``"…"`` both reach them, as both did before the check; prompts whose single variables differ (``{text}``
    and ``{input_value}``, a LangFlow file read by two nodes) each get the text, as LangFlow hands its one input to
    every node reading it."""
    entry = built[graph.entry]
    own = entry.get_input_schema()
    if not (type(entry) is RunnablePassthrough and entry.func is None and entry.afunc is None):
        return own
    readers = _read_from_entry(graph, built)
    if not readers or any(schema is None for schema in readers.values()):
        return own
    fields: dict[str, Any] = {}
    for schema in filter(None, readers.values()):
        for name, info in schema.model_fields.items():
            if name not in fields or info.is_required():
                fields[name] = (info.annotation, info)
    variables = [tuple(getattr(built[target], "input_variables", None) or ()) for target in readers]
    single = all(len(names) == 1 for names in variables)
    named: type[BaseModel] = create_model(f"{graph.entry}_{'fields' if single else 'input'}", **fields)
    if not single:
        return named
    text: type[BaseModel] = create_model(f"{graph.entry}_input", __base__=RootModel[str | named])  # type: ignore[valid-type]
    return text


def _read_from_entry(graph: FlowGraph, built: Mapping[str, Runnable[Any, Any]]) -> dict[str, type[BaseModel] | None]:
    """The input schema of each node that reads the entry's value as its whole input (a keyed fan-in reads it
    under its own key); None for one that takes something other than an object of named fields."""
    readers: dict[str, type[BaseModel] | None] = {}
    for edge in graph.outgoing[graph.entry]:
        if len(graph.incoming[edge.target]) == 1:
            schema = built[edge.target].get_input_schema()
            # not a pydantic.v1 model from an operator's component, nor a lambda's "anything" (a root model)
            named = issubclass(schema, BaseModel) and not issubclass(schema, RootModel) and bool(schema.model_fields)
            readers[edge.target] = schema if named and issubclass(schema, BaseModel) else None
    return readers

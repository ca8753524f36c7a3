"""HTTP handlers of the flows: LangServe-compatible endpoints, and what every flow request shares (reading the body,
choosing the version, running the flow and counting its outcome)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.config import Settings
from gitops_flow.delivery.attempts import Attempts, Failed, Run, Start, drained
from gitops_flow.delivery.choice import Ask, Chooser, Inputs
from gitops_flow.delivery.guard import Guard
from gitops_flow.delivery.published import Delivery
from gitops_flow.delivery.routing_table import Choice
from gitops_flow.exceptions import StoreError
from gitops_flow.experiments.ledger import RunLedger, new_run_id
from gitops_flow.experiments.outputs import output_scores
from gitops_flow.experiments.report_cache import ReportCache
from gitops_flow.experiments.scores import Scores
from gitops_flow.experiments.shadow import Shadows
from gitops_flow.flow.routing import CacheRule
from gitops_flow.githost.feedback import Feedback
from gitops_flow.guardrails.brake import Brake
from gitops_flow.guardrails.cache import Asked, Cached, Lookup, ResponseCache
from gitops_flow.observability.metrics import Metrics
from gitops_flow.observability.telemetry.context import current, hashed
from gitops_flow.observability.telemetry.runs import Telemetry, run_extras
from gitops_flow.runtime.compiler import BuiltFlow, runnable_config
from gitops_flow.runtime.conversations import UNSAVED, UNSAVED_KEY, MissingSession, WithHistory
from gitops_flow.runtime.executor import Executor
from gitops_flow.server import failures, sse
from gitops_flow.server.edge import RequestError, dumps, json_object, json_response, read_json, request_config
from gitops_flow.stores.base import StateStore

log = logging.getLogger("gitops_flow.server")
NO_OUTPUT: Any = object()  # note_answer without the run's output (a stream's): no output scores

VERSION_HEADER = "x-flow-version"
CACHE_HEADER = "x-flow-cache"  # hit or miss, on the answers of a flow whose answers are cached
SESSION_HEADER = "x-flow-session"
USER_HEADER = "x-flow-user"
SEGMENT_HEADER = "x-flow-segment"  # a route's segments match it; the gateway sets it (docs/security.md)


@dataclass(slots=True)
class Deps:
    """What the handlers work with; built by the app's lifespan and closed by it."""

    settings: Settings
    store: StateStore
    reconciler: Delivery  # the reconciler, seen through what the server may ask of it
    guard: Guard
    metrics: Metrics
    replica: str  # this process's name in the messages replicas send each other
    chooser: Chooser
    attempts: Attempts  # runs each request's attempt and counts it (attempts.py)
    feedback: Feedback | None = None  # statuses and notifications going out (githost/feedback.py)
    telemetry: Telemetry = field(default_factory=Telemetry)
    cache: ResponseCache | None = None
    executor: Executor = field(default_factory=Executor)  # which executor runs each run (executor.py)
    brake: Brake | None = None  # the brake on guessing tokens (brake.py); None: none (tests that build Deps alone)
    ledger: RunLedger | None = None  # the runs answered, that feedback may name (ledger.py)
    scores: Scores | None = None  # feedback on them (scores.py)
    reports: ReportCache = field(default_factory=lambda: ReportCache(0.0))  # experiment reports reused (5 s)
    shadows: Shadows | None = None  # candidates run beside the answering ref, off the response path (shadow.py)


def get_deps(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


# -- choosing the version and running the flow --------------------------------------------------------------------


async def choose(
    request: Request,
    flow: str,
    configurable: dict[str, Any],
    inputs: Inputs = (),
    *,
    limited: bool = True,
    tweaks: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Choice, BuiltFlow]:
    """SPEC 4 through choosing.Chooser, from the request's headers and ``configurable``. A session named by the header
    is put into ``configurable`` too, where the flow's chat history reads it. ``limited``: the flow's limits admit
    the request (a request that runs the flow; a schema's is not counted), its token budgets reserving for the flow
    with LangFlow's ``tweaks``."""
    headers = request.headers
    session = headers.get(SESSION_HEADER) or configurable.get("session_id")
    if session:
        configurable["session_id"] = session
    ask = Ask(
        flow,
        pin=headers.get(VERSION_HEADER) or configurable.get("flow_version"),
        session=session,
        user=headers.get(USER_HEADER) or configurable.get("user_id"),
        segment=headers.get(SEGMENT_HEADER),  # a header only: the body is the client's, the header the gateway's
        context=current() if limited else None,
        tweaks=tweaks or {},
    )
    deps = get_deps(request)
    choice, built = await deps.chooser.choose(ask, inputs)
    route = deps.reconciler.table.routes.get(flow)
    deps.telemetry.chosen(flow, choice.version.sha, choice.ref, route.name if route else None, session, ask.user)
    return choice, built


def note_answer(
    request: Request,
    flow: str,
    choice: Choice,
    run_id: uuid.UUID,
    configurable: Mapping[str, Any],
    output: Any = NO_OUTPUT,
) -> None:
    """Note in the ledger that ``choice`` answered ``run_id``, with the request's user (hashed, as telemetry keeps
    it); a pinned request's run takes feedback but is left out of the experiment report. With the run's
    ``output``, the scores the routing file takes from it are kept as the run's feedback (experiments.outputs)."""
    deps = get_deps(request)
    ledger = deps.ledger
    if ledger is None:
        return
    headers = request.headers
    user = headers.get(USER_HEADER) or configurable.get("user_id")
    pinned = bool(headers.get(VERSION_HEADER) or configurable.get("flow_version"))
    session = headers.get(SESSION_HEADER) or configurable.get("session_id")
    ref = choice.ref
    record = ledger.note(
        str(run_id),
        flow,
        choice.version.sha,
        ref,
        hashed(str(user)) if user else None,
        counted=not pinned,
        session=hashed(str(session)) if session else None,  # feedback may name the session's last run
    )
    rules = deps.reconciler.table.routing.experiments.get(flow) if deps.reconciler.table.routing else None
    built = choice.version.flows.get(flow)
    if rules is None or record is None or output is NO_OUTPUT or deps.scores is None or built is None:
        return
    for key, score in output_scores(rules, built.graph.exit, output):
        deps.scores.note(str(run_id), record, key, score)


def shadow(request: Request, flow: str, choice: Choice, value: Any, config: Mapping[str, Any], output: Any) -> None:
    """Offer an answer to the shadows of the ref that gave it (experiments/shadow.py: a draw, and a put on a bounded
    queue; never waited for). A pinned request is not shadowed: the client chose its version, not the route."""
    deps = get_deps(request)
    table = deps.reconciler.table
    route = table.routes.get(flow)
    if deps.shadows is None or route is None or not route.shadows or table.head is None:
        return
    configurable = config.get("configurable") or {}
    if request.headers.get(VERSION_HEADER) or configurable.get("flow_version"):
        return
    deps.shadows.offer(flow, route, choice.ref, choice.version.sha, value, config, output, table.head.rubrics)


def version_metadata(choice: Choice) -> dict[str, Any]:
    return {"flow_version": choice.version.sha, "ref": choice.ref}


def run_config(config: dict[str, Any], flow: str, choice: Choice, run_id: uuid.UUID) -> Any:
    """The RunnableConfig of one run, naming the version that serves it (build.runnable_config: `gitops-flow test`
    runs its cases with the same), with telemetry's callbacks while someone listens (telemetry.runs). A run that
    only judges a canary on its primary has a run id of its own and saves no conversation turn (history.UNSAVED)."""
    if choice.verifying:
        configurable = {**config.get("configurable", {}), UNSAVED_KEY: UNSAVED}
        return runnable_config({**config, "configurable": configurable}, flow, uuid.uuid4(), version_metadata(choice))
    return runnable_config({**config, **run_extras(run_id)}, flow, run_id, version_metadata(choice))


async def run_flow(deps: Deps, flow: str, choice: Choice, built: BuiltFlow, run_id: uuid.UUID, run: Run) -> Any:
    """Run a flow and count its outcome (attempts.py: a canary that fails is retried on its primary, one that is slow
    is judged against it); returns (the choice that answered, the result). The flow's own failures become 422 (a
    missing session), a model provider's the status it is (failures.py), anything else 500 with the run id, never a
    traceback."""

    async def timed(chosen: Choice, on: BuiltFlow) -> tuple[Any, float]:
        async with deps.telemetry.run(flow, chosen.version.sha, chosen.ref, on.spec):
            started = time.perf_counter()
            return await run(chosen, on), time.perf_counter() - started

    try:
        answered, (result, seconds) = await deps.attempts.attempt(flow, choice, built, timed)
    except MissingSession as exc:
        raise RequestError(422, "missing-session", str(exc)) from None
    except Failed as failed:
        said = failures.reported(flow, run_id, failed.cause)
        deps.attempts.ended(flow, failed.choice, False, failed.seconds, None, cause=said.cause)
        raise RequestError(said.status, said.code, said.message, said.headers) from None
    deps.attempts.ended(flow, answered, True, seconds, run)
    return answered, result


@dataclass(slots=True)
class FlowCall:
    """A request of one input to the flow its path names: its body, the client's config (with ``configurable`` as
    the chooser left it), the version chosen to answer it, and its run id."""

    name: str
    payload: dict[str, Any]
    config: dict[str, Any]
    choice: Choice
    flow: BuiltFlow
    run_id: uuid.UUID
    deps: Deps

    @property
    def configurable(self) -> dict[str, Any]:
        configurable: dict[str, Any] = self.config["configurable"]
        return configurable


async def one_input(request: Request, check: Callable[[dict[str, Any]], None] | None = None) -> FlowCall:
    """Read a body of one ``input`` (``check`` refuses what else the route takes), then choose its version."""
    name = request.path_params["flow"]
    payload = json_object(await read_json(request), "the body")
    if "input" not in payload:
        raise RequestError(422, "bad-body", "the body needs an 'input'")
    if check is not None:
        check(payload)
    config = request_config(request, payload.get("config"))
    configurable = dict(config.get("configurable", {}))
    choice, flow = await choose(request, name, configurable, [payload["input"]])
    config["configurable"] = configurable
    return FlowCall(name, payload, config, choice, flow, new_run_id(), get_deps(request))


# -- LangServe-compatible flow endpoints --------------------------------------------------------------------------


async def invoke(request: Request) -> Response:
    call = await one_input(request)
    deps, value = call.deps, call.payload["input"]
    looked, hit = await cached(deps, call.name, call.choice, call.flow, Asked(value, call.config))
    headers = {CACHE_HEADER: "hit" if hit else "miss"} if looked is not None else {}
    if hit is not None:
        note_answer(request, call.name, call.choice, call.run_id, call.configurable, hit.output)
        shadow(request, call.name, call.choice, value, call.config, hit.output)
        return _answer(hit.output, call.choice, call.run_id, headers)

    async def run(chosen: Choice, built: BuiltFlow) -> Any:
        return await deps.executor.runner(built).ainvoke(value, run_config(call.config, call.name, chosen, call.run_id))

    choice, output = await run_flow(deps, call.name, call.choice, call.flow, call.run_id, run)
    if looked is not None:
        await keep(deps, call.name, looked, choice, choice.version.flows.get(call.name), output)
    note_answer(request, call.name, choice, call.run_id, call.configurable, output)
    shadow(request, call.name, choice, value, call.config, output)
    return _answer(output, choice, call.run_id, headers)


def _answer(output: Any, choice: Choice, run_id: uuid.UUID, headers: Mapping[str, str]) -> Response:
    """LangServe's answer to an invoke: the output, and metadata with the run id and the version that answered."""
    body = {"output": output, "metadata": {"run_id": str(run_id), "feedback_tokens": [], **version_metadata(choice)}}
    return json_response(body, headers={VERSION_HEADER: choice.version.sha, **headers})


async def batch(request: Request) -> Response:
    name = request.path_params["flow"]
    payload = json_object(await read_json(request), "the body")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list):
        raise RequestError(422, "bad-body", "the body needs 'inputs', a list")
    settings = get_deps(request).settings
    if len(inputs) > settings.max_batch_inputs:
        limit = settings.max_batch_inputs
        raise RequestError(413, "batch-too-large", f"the batch has {len(inputs):,} inputs; the limit is {limit:,}")
    raw_config = payload.get("config")
    if isinstance(raw_config, list):
        configs = [request_config(request, c) for c in raw_config]
    else:
        configs = [request_config(request, raw_config)] * len(inputs)
    if len(configs) != len(inputs):
        raise RequestError(422, "bad-config", f"{len(configs)} configs for {len(inputs)} inputs")
    configurable = dict(configs[0].get("configurable", {})) if configs else {}
    choice, flow = await choose(request, name, configurable, inputs)
    run_ids = [new_run_id() for _ in inputs]
    deps = get_deps(request)

    async def run(chosen: Choice, built: BuiltFlow) -> Any:
        run_configs: list[Any] = [
            {
                **run_config({**c, "configurable": {**configurable, **c.get("configurable", {})}}, name, chosen, r),
                "max_concurrency": settings.batch_concurrency,  # LangChain reads it from the first config
            }
            for c, r in zip(configs, run_ids, strict=True)
        ]
        return await deps.executor.runner(built).abatch(inputs, run_configs)

    run_id = run_ids[0] if run_ids else new_run_id()
    choice, outputs = await run_flow(deps, name, choice, flow, run_id, run)
    for each, output in zip(run_ids, outputs, strict=False):
        note_answer(request, name, choice, each, configurable, output)
    for value, config, output in zip(inputs, configs, outputs, strict=False):
        shadow(request, name, choice, value, {**config, "configurable": configurable}, output)
    metadata = {
        "run_ids": [str(r) for r in run_ids],
        "responses": [{"run_id": str(r), "feedback_tokens": []} for r in run_ids],  # LangServe's, one per input
        **version_metadata(choice),
    }
    return json_response({"output": outputs, "metadata": metadata}, headers={VERSION_HEADER: choice.version.sha})


class Opened:
    """A flow's stream, started: which choice serves it (a failed canary's primary, maybe), its first chunk, and the
    rest. A stream is opened before the answer's headers go out, so a canary that fails before its first chunk is
    replaced by its primary, as run_flow does for invoke."""

    def __init__(self, choice: Choice, chunks: AsyncIterator[Any], started: float, again: Run | None) -> None:
        self.choice = choice
        self.started = started
        self.again = again  # the same input run again to its end (judging a canary against its primary), if it may
        self._chunks = chunks
        self._first: list[Any] = []
        self.failure: BaseException | None = None
        self.done = False

    async def first(self) -> None:
        try:
            self._first.append(await anext(self._chunks))
        except StopAsyncIteration:
            self.done = True

    async def rest(self) -> AsyncIterator[Any]:
        """The first chunk, then the others; raises what the flow raises."""
        for chunk in self._first:
            yield chunk
        if not self.done:
            async for chunk in self._chunks:
                yield chunk

    async def close(self) -> None:
        """Close the flow's stream (its generators' ``finally`` run now): after its end, or when left early."""
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


async def open_stream(
    deps: Deps, flow: str, choice: Choice, built: BuiltFlow, start: Start, run_id: uuid.UUID
) -> Opened:
    """Start ``flow``'s stream on ``choice`` and wait for its first chunk; a canary that fails first is replaced by
    its primary when the primary's stream starts (attempts.py). A model provider's failure before the first chunk is
    answered as the status it is, with its Retry-After (RequestError: nothing of the stream has gone out yet); any
    other failure that no fallback mends is left in ``failure`` for the caller to report in the stream
    (MissingSession included)."""

    async def first(chosen: Choice, on: BuiltFlow) -> Opened:
        opened = Opened(chosen, _observed(deps, flow, chosen, on, start), time.perf_counter(), drained(start))
        try:
            await opened.first()
        except BaseException:
            await opened.close()
            raise
        return opened

    try:
        _, opened = await deps.attempts.attempt(flow, choice, built, first)
    except MissingSession as exc:
        opened = Opened(choice, _nothing(), time.perf_counter(), None)
        opened.failure = exc
    except Failed as failed:
        if failures.has_status(failed.cause):
            said = failures.reported(flow, run_id, failed.cause)
            deps.attempts.ended(flow, failed.choice, False, failed.seconds, None, cause=said.cause)
            raise RequestError(said.status, said.code, said.message, said.headers) from None
        opened = Opened(failed.choice, _nothing(), time.perf_counter() - failed.seconds, None)
        opened.failure = failed.cause
    return opened


async def _nothing() -> AsyncIterator[Any]:
    return
    yield


def _observed(deps: Deps, flow: str, choice: Choice, built: BuiltFlow, start: Start) -> AsyncIterator[Any]:
    return deps.telemetry.stream(flow, choice.version.sha, choice.ref, built.spec, lambda: start(choice, built))


# -- the response cache (guardrails.cache) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Looked:
    """A request the cache was asked about: its entry, what it asked (the turns read included) and of which choice."""

    lookup: Lookup
    asked: Asked
    choice: Choice


async def cached(
    deps: Deps, flow: str, choice: Choice, built: BuiltFlow, asked: Asked
) -> tuple[Looked | None, Cached | None]:
    """Where the answer of ``asked`` of ``choice``'s version (``built``: its flow as it runs, tweaks applied) is kept
    (None: it is not cached), and the answer kept there, if any. ``asked`` gets the turns the run would read when
    the flow keeps a conversation and its answers may be cached. A cache that cannot be read is a miss (logged),
    never an error."""
    rule, content = _rule(deps, flow), choice.version.blobs.get(flow)
    if rule is None or content is None or deps.cache is None:
        return None, None
    if isinstance(built.runnable, WithHistory) and asked.session is not None:
        if deps.cache.judge(rule, built.spec, content, asked.tweaks).why_not is None:
            asked = replace(asked, history=tuple(await built.runnable.past(asked.session)))
    lookup = deps.cache.lookup(rule, built.spec, content, asked)
    if lookup is None:
        return None, None
    try:
        hit = await deps.cache.get(lookup)
    except StoreError as exc:
        log.warning("the response cache of flow %s could not be read: %s", flow, exc)
        hit = None
    deps.metrics.looked_up(flow, choice.version.sha, hit is not None)
    context = current()
    if context is not None:
        context.cache = "hit" if hit is not None else "miss"
    return Looked(lookup, asked, choice), hit


async def keep(deps: Deps, flow: str, looked: Looked, answered: Choice, built: BuiltFlow | None, output: Any) -> None:
    """Keep the answer of the version that gave it (``built``: its flow as it ran; a canary's primary, maybe), if
    that version's flow is cached. The turns a conversation's key holds were read for the version looked up: another
    version's answer to a conversation is not kept."""
    if deps.cache is None:
        return
    lookup: Lookup | None = looked.lookup
    if answered is not looked.choice:
        if looked.asked.history is not None or built is None:
            return
        lookup = deps.cache.lookup(_rule(deps, flow), built.spec, answered.version.blobs.get(flow), looked.asked)
    if lookup is None:
        return
    try:
        await deps.cache.put(lookup, dumps(output))
    except (StoreError, TypeError) as exc:
        log.warning("an answer of flow %s was not cached: %s", flow, exc)


def _rule(deps: Deps, flow: str) -> CacheRule | None:
    routing = deps.reconciler.table.routing
    return routing.cache.get(flow) if routing is not None else None


async def stream(request: Request) -> Response:
    """Server-sent events as LangServe sends them: ``metadata``, then ``data`` per chunk, then ``end``
    (or ``error``, whose data carries a status code and a message, never a traceback)."""
    call = await one_input(request)
    name, run_id, deps = call.name, call.run_id, call.deps

    def start(chosen: Choice, built: BuiltFlow) -> AsyncIterator[Any]:
        run = run_config(call.config, name, chosen, run_id)
        return deps.executor.runner(built).astream(call.payload["input"], run)

    opened = await open_stream(deps, name, call.choice, call.flow, start, run_id)
    if opened.failure is None:
        note_answer(request, name, opened.choice, run_id, call.configurable)
    metadata = _sse("metadata", {"run_id": str(run_id), **version_metadata(opened.choice)})
    form = LangServeEvents(lambda chunk: sse.frame(sse.DATA, dumps(chunk)), started=metadata)

    def ended(output: Any) -> None:  # the whole answer, once streamed: its shadows compare with it
        shadow(request, name, opened.choice, call.payload["input"], call.config, output)

    route = deps.reconciler.table.routes.get(name)
    on_end = ended if route is not None and route.shadows else None  # a stream is put together only for shadows
    return event_stream(deps, opened, streamed(deps, name, opened, run_id, form, on_end=on_end))


class StreamForm:
    """How a streaming route writes its events: ``started`` the frames before the flow's, ``chunk`` turns a chunk of
    the flow into frames (b"": none), ``failed`` writes an error (a status and a message, never a traceback),
    ``ended`` the last frames."""

    def started(self) -> bytes:
        return b""

    def chunk(self, chunk: Any) -> bytes:
        raise NotImplementedError

    def failed(self, status: int, message: str) -> bytes:
        raise NotImplementedError

    def ended(self) -> bytes:
        raise NotImplementedError


class LangServeEvents(StreamForm):
    """LangServe's: ``data`` events, then ``end``, or ``error`` with ``{"status_code", "message"}``."""

    def __init__(self, frames: Callable[[Any], bytes], started: bytes = b"") -> None:
        self._frames = frames
        self._started = started

    def started(self) -> bytes:
        return self._started

    def chunk(self, chunk: Any) -> bytes:
        return self._frames(chunk)

    def failed(self, status: int, message: str) -> bytes:
        return _sse("error", {"status_code": status, "message": message})

    def ended(self) -> bytes:
        return b"event: end\r\n\r\n"


async def streamed(
    deps: Deps,
    flow: str,
    opened: Opened,
    run_id: uuid.UUID,
    form: StreamForm,
    *,
    on_end: Callable[[Any], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The frames of an opened stream, in ``form``: a chunk's frame each, then the end; a failure of the flow is an
    error event (a missing session 422, a model provider's failure its status (failures.py), anything else 500,
    counted against the version and logged with the run id).
    A client that goes away ends it where it waits (sse.EventStream): neither a success nor a failure of the version.
    ``on_end`` hears the whole answer of a stream that ended well (its text chunks joined, else its last chunk), when
    it is at most MAX_WHOLE_ANSWER characters."""
    served = opened.choice
    whole = _Whole() if on_end is not None else None
    yield form.started()
    try:
        if opened.failure is not None:
            raise opened.failure
        async for chunk in opened.rest():
            if whole is not None:
                whole.add(chunk)
            yield form.chunk(chunk)
    except MissingSession as exc:
        yield form.failed(422, str(exc))
        return
    except Exception as exc:
        said = failures.reported(flow, run_id, exc)
        deps.attempts.ended(flow, served, False, time.perf_counter() - opened.started, opened.again, cause=said.cause)
        yield form.failed(said.status, said.message)
        return
    finally:
        await opened.close()  # at once, also when the client went away while a frame was being sent
    deps.attempts.ended(flow, served, True, time.perf_counter() - opened.started, opened.again)
    if on_end is not None and whole is not None and whole.fits:
        on_end(whole.value())
    yield form.ended()


MAX_WHOLE_ANSWER = 1024 * 1024  # characters of a streamed answer kept to compare a shadow's with


class _Whole:
    """A streamed answer put back together: text chunks joined (as a parser's stream splits its text), any other
    answer its last chunk; past MAX_WHOLE_ANSWER characters nothing is kept."""

    __slots__ = ("_last", "_size", "_texts")

    def __init__(self) -> None:
        self._texts: list[str] | None = []
        self._last: Any = None
        self._size = 0

    def add(self, chunk: Any) -> None:
        self._last = chunk
        if self._texts is None:
            return
        if not isinstance(chunk, str):
            self._texts = None
            return
        self._size += len(chunk)
        self._texts.append(chunk)

    @property
    def fits(self) -> bool:
        return self._size <= MAX_WHOLE_ANSWER

    def value(self) -> Any:
        return "".join(self._texts) if self._texts is not None else self._last


def event_stream(
    deps: Deps, opened: Opened, events: AsyncGenerator[bytes, None], *, ping: bytes = sse.PING
) -> sse.EventStream:
    """The response of a streaming route: ``events`` with the version that answers, keep-alive comments, and the
    run cancelled when the client goes away."""
    headers = {VERSION_HEADER: opened.choice.version.sha, "cache-control": "no-cache", "x-accel-buffering": "no"}
    return sse.EventStream(events, headers=headers, ping_interval=deps.settings.sse_ping_interval, ping=ping)


def _sse(event: str, data: Any) -> bytes:
    return sse.frame(sse.prefix(event), dumps(data))


async def input_schema(request: Request) -> Response:
    return await _schema(request, "input")


async def output_schema(request: Request) -> Response:
    return await _schema(request, "output")


async def config_schema(request: Request) -> Response:
    properties = {
        "configurable": {
            "type": "object",
            "properties": {
                "session_id": {"type": "string", "description": "keeps a conversation on one version"},
                "user_id": {"type": "string", "description": "the user, for sticky routing"},
                "flow_version": {"type": "string", "description": "a sha, short sha or ref to pin"},
            },
        }
    }
    return json_response({"title": f"{request.path_params['flow']}Config", "type": "object", "properties": properties})


async def _schema(request: Request, which: str) -> Response:
    name = request.path_params["flow"]
    choice, flow = await choose(request, name, {}, limited=False)
    schema = flow.json_schema(which)  # computed with the build, off the event loop (build.with_schemas)
    return json_response(schema, headers={VERSION_HEADER: choice.version.sha})

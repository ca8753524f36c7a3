"""HTTP handlers of experiments: feedback on a run (``POST /flows/{flow}/feedback`` and ``POST /feedback``, as
LangServe's feedback endpoint takes it) and a flow's experiment report (``GET /flows/{flow}/experiment``)."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from gitops_flow.exceptions import BadFeedback, FeedbackRefused, UnknownFlow, UnknownRun
from gitops_flow.experiments.report import Judging, arms, experiment_id, report
from gitops_flow.experiments.scores import parse
from gitops_flow.observability.telemetry.context import hashed
from gitops_flow.server.edge import RequestError, json_object, json_response, read_json
from gitops_flow.server.endpoints import USER_HEADER, Deps, get_deps
from gitops_flow.server.views import require_reader


async def flow_feedback(request: Request) -> Response:
    """Feedback on a run of the flow the path names: 404 for a run of another flow."""
    return await _feedback(request, request.path_params["flow"])


async def feedback(request: Request) -> Response:
    """Feedback on any run this server answered (LangServe's ``/feedback``)."""
    return await _feedback(request, None)


async def _feedback(request: Request, flow: str | None) -> Response:
    deps = get_deps(request)
    assert deps.scores is not None, "the app wires the feedback scores"
    body = json_object(await read_json(request, deps.settings.feedback_max_bytes), "the feedback")
    user = request.headers.get(USER_HEADER)
    try:
        given = parse(body)
        if given.session is not None and flow is None:
            raise BadFeedback("bad-session-id", "feedback on a session names its flow: POST /flows/<name>/feedback")
        kept = await deps.scores.take(given, flow=flow, user=hashed(user) if user else None)
    except BadFeedback as exc:
        raise RequestError(422, exc.code, str(exc)) from None
    except FeedbackRefused as exc:
        raise RequestError(422, "too-many-keys", str(exc)) from None
    except UnknownRun as exc:
        raise RequestError(404, "unknown-run", str(exc)) from None
    shown = {k: kept[k] for k in ("id", "run_id", "key", "score", "value", "comment", "flow", "version", "ref")}
    return json_response({**shown, "created_at": kept["created_at"]}, status=202)


async def experiment(request: Request) -> Response:
    """The experiment report of a flow (read token, like the other views); 404 for a flow no ref serves."""
    await require_reader(request)
    name = request.path_params["flow"]
    found = await flow_report(get_deps(request), name)
    if found is None:
        raise UnknownFlow(f"no flow {name!r}")
    return json_response(found)


async def flow_report(deps: Deps, name: str) -> dict[str, Any] | None:
    """The experiment report of flow ``name`` (the console shows it too); None for a flow the table has no route
    for. Raises StoreError when the scores cannot be read."""
    route = deps.reconciler.table.routes.get(name)
    if route is None:
        return None
    settings = deps.settings
    judging = Judging(settings.experiment_min_sample, settings.experiment_confidence)

    shadows = [(s, deps.shadows.figures(name, s).shown() if deps.shadows else {}) for s in route.shadows]

    async def make() -> dict[str, Any]:
        scores = await deps.store.scores(name)
        figures = deps.metrics.recent.figures(name)
        tokens = {(sha, ref): dict(models) for (f, sha, ref), models in deps.metrics.arm_tokens.items() if f == name}
        # grouping up to max_scores scores per flow takes a while in Python: off the event loop, so others go on
        made: dict[str, Any] = await anyio.to_thread.run_sync(
            report, name, route, figures, scores, judging, tokens, settings.prices(), shadows
        )
        return {**made, "generated_at": time.time()}

    # the same arms, no new feedback and no shadow run through this process: the report of a moment ago
    # (GITOPS_FLOW_EXPERIMENT_CACHE)
    generation = deps.scores.generations.get(name, 0) if deps.scores is not None else 0
    shares = tuple((bound, target.ref, target.serving) for bound, target in route.live)
    shadowed = repr([counts for _, counts in shadows])
    return await deps.reports.get(name, (experiment_id(arms(route)), shares, generation, shadowed), make)

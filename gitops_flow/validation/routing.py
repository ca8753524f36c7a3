"""Static checks of `gitops-flow.yaml`: YAML, the routing schema, routes, limits and cache entries -> problems."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath

import yaml
from pydantic import BaseModel, ValidationError

from gitops_flow.flow.routing import (
    DEFAULT_ROUTE,
    MAX_SHADOW_SCHEMA_BYTES,
    Analysis,
    CacheRule,
    EvalRules,
    EvalThreshold,
    ExperimentRules,
    FeedbackGate,
    FlowLimits,
    OutputScore,
    Rate,
    RefLimits,
    RouteTarget,
    RoutingConfig,
    SegmentMatch,
    Shadow,
    ShadowBudget,
    TokenBudget,
)
from gitops_flow.problems import Problem, capped, json_path
from gitops_flow.validation.datasets import inside
from gitops_flow.validation.documents import MAX_BYTES, MAX_PROBLEMS, schema_problem, too_large

_ROUTING_MODELS_AT: tuple[tuple[tuple[str, ...], type[BaseModel]], ...] = (
    (("routes", "#", "#"), RouteTarget),
    (("routes", "#", "#", "match"), SegmentMatch),
    (("routes", "#", "#", "shadow", "#"), Shadow),
    (("routes", "#", "#", "shadow", "#", "budget"), ShadowBudget),
    (("analysis",), Analysis),
    (("analysis", "feedback"), FeedbackGate),
    (("limits", "#"), FlowLimits),
    (("limits", "#", "per_user"), Rate),
    (("limits", "#", "tokens"), TokenBudget),
    (("limits", "#", "refs", "#"), RefLimits),
    (("limits", "#", "refs", "#", "tokens"), TokenBudget),
    (("cache", "#"), CacheRule),
    (("experiments", "#"), ExperimentRules),
    (("experiments", "#", "scores", "#"), OutputScore),
    (("evals",), EvalRules),
    (("evals", "flows", "#"), EvalThreshold),
    ((), RoutingConfig),
)


def validate_routing_bytes(
    raw: bytes, *, file: str, flow_names: Iterable[str] | None = None, read: ReadFile | None = None
) -> tuple[RoutingConfig | None, list[Problem]]:
    """Check `gitops-flow.yaml`; ``flow_names`` (when known) lets routes for flows that do not exist be flagged;
    ``read`` (when given) reads the repository's files beside it, for the rubrics its shadows' judges name."""
    config, problems = _check_routing(raw, flow_names, read)
    return config, capped([p.located(file, p.line) for p in problems], MAX_PROBLEMS)


RUBRIC_MAX_BYTES = 64 * 1024  # as a rubric of `gitops-flow eval` (validation/datasets.py)
ReadFile = Callable[[str], bytes | None]  # a repository file's bytes by its path from the root; None when absent


def worktree_reader(root: Path) -> ReadFile:
    """Reads the files of the working tree at ``root`` (a path that leads out of it reads as absent), at most one
    byte past a rubric's bound."""

    def read(name: str) -> bytes | None:
        target = inside(root, name)
        if target is None or not target.is_file():
            return None
        with target.open("rb") as file:
            return file.read(RUBRIC_MAX_BYTES + 1)

    return read


def load_rubrics(config: RoutingConfig, read: ReadFile, *, file: str) -> tuple[dict[str, str], list[Problem]]:
    """The text of every rubric the routes' shadow judges name, read with ``read`` (from the working tree, or from the
    commit the routing file is at), and the problems of those that are missing, outside the repository, too large or
    not UTF-8 text, each on the line of the first shadow naming it in ``file``."""
    texts: dict[str, str] = {}
    problems = []
    for name in config.rubrics():
        where = next(
            ("routes", route, index, "shadow", number, "scorer")
            for route, targets in config.routes.items()
            for index, target in enumerate(targets)
            for number, shadow in enumerate(target.shadow)
            if shadow.rubric == name
        )
        relative = PurePosixPath(name)
        raw = None if relative.is_absolute() or ".." in relative.parts or "\\" in name else read(name)
        if raw is None:
            problems.append(
                Problem(
                    code="rubric-missing",
                    message=f"the judge's rubric {name!r} is not a file of the repository (a path from its root)",
                    path=json_path(where),
                    file=file,
                )
            )
        elif len(raw) > RUBRIC_MAX_BYTES:
            problems.append(
                Problem(
                    code="rubric-too-large",
                    message=f"the rubric {name!r} is over {RUBRIC_MAX_BYTES:,} bytes, the bound of a rubric",
                    path=json_path(where),
                    file=file,
                )
            )
        else:
            try:
                texts[name] = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                problems.append(
                    Problem(
                        code="not-utf8",
                        message=f"the rubric {name!r} is not UTF-8 text",
                        path=json_path(where),
                        file=file,
                    )
                )
    return texts, problems


def _check_routing(
    raw: bytes, flow_names: Iterable[str] | None, read: ReadFile | None
) -> tuple[RoutingConfig | None, list[Problem]]:
    if len(raw) > MAX_BYTES:
        return None, [too_large(len(raw))]
    try:
        text = raw.decode("utf-8-sig")
        data = yaml.safe_load(text)
        lines = _yaml_lines(yaml.compose(text))
    except UnicodeDecodeError:
        return None, [Problem(code="not-utf8", message="the file is not UTF-8 text")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return None, [Problem(code="invalid-yaml", message=str(getattr(exc, "problem", exc)), line=line)]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [Problem(code="not-a-mapping", message="the routing file is a YAML mapping of settings")]
    try:
        config = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        problems = [schema_problem(err, _ROUTING_MODELS_AT) for err in exc.errors()]
        return None, [replace(p, line=_yaml_line(lines, p.path)) for p in problems]
    problems = []
    flows_dir = PurePosixPath(config.flows_dir)
    if flows_dir.is_absolute() or ".." in flows_dir.parts:
        problems.append(
            Problem(code="bad-flows-dir", message="flows_dir is a folder inside the repository", path="$.flows_dir")
        )
    known = set(flow_names) if flow_names is not None else None
    for route, targets in config.routes.items():
        where = ("routes", route)
        if route != DEFAULT_ROUTE and known is not None and route not in known:
            problems.append(
                Problem(
                    code="unknown-flow",
                    message=f"route {route!r} names no flow in {config.flows_dir}/",
                    path=json_path(where),
                    severity="warning",
                )
            )
        if sum(t.weight for t in targets if t.match is None) <= 0:
            message = f"route {route!r} sends no traffic anywhere"
            if any(t.match is not None for t in targets):
                message += " but to its segments: give a ref a weight for the requests no segment matches"
            problems.append(Problem(code="zero-weights", message=message, path=json_path(where)))
        problems += _segment_problems(route, targets)
        problems += _shadow_problems(route, targets)
        problems += _step_problems(route, targets, guarded=config.analysis is not None)
        refs = [t.ref if t.match is None else None for t in targets]
        for index, ref in enumerate(refs):
            if ref is not None and ref in refs[:index]:
                problems.append(
                    Problem(
                        code="duplicate-ref",
                        message=f"ref {ref!r} is listed twice in route {route!r}",
                        path=json_path([*where, index, "ref"]),
                    )
                )
    problems += _guardrail_problems(config, known)
    if read is not None:
        problems += load_rubrics(config, read, file="")[1]
    return config, [replace(p, line=_yaml_line(lines, p.path)) for p in problems]


def _segment_problems(route: str, targets: list[RouteTarget]) -> list[Problem]:
    """A segment that also has a weight (it takes the requests it matches, not a share), and a header value that
    two segments of one route both match (the first would take them all)."""
    problems = []
    seen: dict[tuple[str, str], int] = {}
    for index, target in enumerate(targets):
        if target.match is None:
            continue
        where = ("routes", route, index)
        if target.weight > 0:
            problems.append(
                Problem(
                    code="segment-weight",
                    message=f"segment {target.ref!r} takes the requests its match selects, not a weight: drop weight",
                    path=json_path([*where, "weight"]),
                )
            )
        for value in target.match.values:
            first = seen.setdefault((target.match.header, value), index)
            if first != index:
                problems.append(
                    Problem(
                        code="duplicate-segment",
                        message=f"{target.match.header} {value!r} is matched by route {route!r}'s entry {first} "
                        "already; a request goes to the first segment that matches",
                        path=json_path([*where, "match", "values"]),
                    )
                )
    return problems


def _shadow_problems(route: str, targets: list[RouteTarget]) -> list[Problem]:
    """A shadow on a segment (it is no arm of the experiment), a shadow of its own ref or of one ref twice, and a
    ``json_schema`` scorer with no schema to check (or a schema given to another scorer, which reads none)."""
    problems = []
    for index, target in enumerate(targets):
        seen: set[str] = set()
        for number, shadow in enumerate(target.shadow):
            where = ("routes", route, index, "shadow", number)
            if target.match is not None:
                problems.append(
                    Problem(
                        code="shadow-on-segment",
                        message=f"segment {target.ref!r} cannot be shadowed: shadow a weighted ref of the route",
                        path=json_path(where),
                    )
                )
            if shadow.ref == target.ref:
                problems.append(
                    Problem(
                        code="shadow-of-itself",
                        message=f"ref {target.ref!r} shadows itself: name another ref as the candidate",
                        path=json_path([*where, "ref"]),
                    )
                )
            elif shadow.ref in seen:
                problems.append(
                    Problem(
                        code="duplicate-shadow",
                        message=f"ref {target.ref!r} shadows {shadow.ref!r} twice",
                        path=json_path([*where, "ref"]),
                    )
                )
            seen.add(shadow.ref)
            if shadow.scorer == "json_schema" and shadow.answer_schema is None:
                problems.append(
                    Problem(
                        code="shadow-needs-schema",
                        message="the json_schema scorer checks the candidate's answer against a schema: give schema",
                        path=json_path([*where, "scorer"]),
                    )
                )
            elif shadow.scorer != "json_schema" and shadow.answer_schema is not None:
                problems.append(
                    Problem(
                        code="unused-schema",
                        message=f"the {shadow.scorer} scorer reads no schema: drop schema, or use json_schema",
                        path=json_path([*where, "schema"]),
                        severity="warning",
                    )
                )
            if shadow.answer_schema is not None and len(json.dumps(shadow.answer_schema)) > MAX_SHADOW_SCHEMA_BYTES:
                problems.append(
                    Problem(
                        code="too-large",
                        message=f"a shadow's schema is at most {MAX_SHADOW_SCHEMA_BYTES:,} bytes of JSON",
                        path=json_path([*where, "schema"]),
                    )
                )
    return problems


def _step_problems(route: str, targets: list[RouteTarget], *, guarded: bool) -> list[Problem]:
    """A progressive canary's steps (docs/delivery.md): increasing, on a canary (not the primary, not a segment, not
    beside a weight), one per route, under an analysis that judges them; an interval only with steps."""
    problems = []
    weighted = [index for index, target in enumerate(targets) if target.match is None]
    stepped = [index for index, target in enumerate(targets) if target.steps is not None]

    def problem(index: int, key: str, message: str) -> None:
        problems.append(Problem(code="bad-steps", message=message, path=json_path(("routes", route, index, key))))

    for index, target in enumerate(targets):
        if target.steps is None:
            if target.interval is not None:
                problem(index, "interval", "interval is how long a progressive canary holds each step: add steps")
            continue
        if any(later <= earlier for earlier, later in zip(target.steps, target.steps[1:], strict=False)):
            problem(index, "steps", f"steps must increase, each above the one before: {_shares(target.steps)}")
        if "weight" in target.model_fields_set:
            problem(index, "weight", "a progressive canary's share comes from its steps: drop weight")
        if target.match is not None:
            problem(index, "steps", "a segment takes the requests it matches: it has no steps")
        elif weighted and index == weighted[0]:
            problem(index, "steps", "the first ref is the primary; only a canary (a later ref) has steps")
        elif not guarded:
            problem(index, "steps", "steps advance while the canary analysis holds: add an analysis section")
        if index != stepped[0]:
            problem(index, "steps", f"one progressive canary per route: entry {stepped[0]} has steps already")
    return problems


def _shares(steps: list[float]) -> str:
    return "[" + ", ".join(f"{share:g}" for share in steps) + "]"


def _guardrail_problems(config: RoutingConfig, known: set[str] | None) -> list[Problem]:
    """``limits``, ``cache`` and ``evals.flows`` entries that name no flow (a warning: the flow may come in a later
    commit), a cache rule that caches conversations (a warning: what a cached answer does to one), and a limit that
    limits nothing."""
    problems = []
    sections = (("limits", config.limits), ("cache", config.cache), ("experiments", config.experiments))
    for section, names in sections:
        for name in names:
            if (name != DEFAULT_ROUTE or section != "limits") and known is not None and name not in known:
                problems.append(
                    Problem(
                        code="unknown-flow",
                        message=f"{section} entry {name!r} names no flow in {config.flows_dir}/",
                        path=json_path((section, name)),
                        severity="warning",
                    )
                )
    own = config.evals.flows if config.evals is not None else {}
    problems += [
        Problem(
            code="unknown-flow",
            message=f"evals threshold {name!r} names no flow in {config.flows_dir}/",
            path=json_path(("evals", "flows", name)),
            severity="warning",
        )
        for name in own
        if known is not None and name not in known
    ]
    for name, rule in config.cache.items():
        if "history" in rule.allow:
            problems.append(
                Problem(
                    code="cache-history",
                    message=(
                        "allow: [history] caches a conversation's answers: each is kept for its session and the turns"
                        " its run read, so answers never cross sessions, but an answer from the cache adds no turn to"
                        " the conversation"
                    ),
                    path=json_path(("cache", name, "allow")),
                    severity="warning",
                )
            )
    for name, entry_limits in config.limits.items():
        entries = [((name,), entry_limits), *(((name, "refs", ref), own) for ref, own in entry_limits.refs.items())]
        for where, entry in entries:
            if entry.requests_per_second is None and entry.concurrent is None and entry.tokens is None:
                if not (len(where) == 1 and (entry_limits.per_user or entry_limits.refs)):
                    problems.append(
                        Problem(
                            code="empty-limits",
                            message="this entry limits nothing: give requests_per_second, concurrent or tokens",
                            path=json_path(("limits", *where)),
                            severity="warning",
                        )
                    )
    return problems


def _yaml_lines(root: yaml.Node | None) -> dict[str, int]:
    """JSON path -> line of every node of a composed YAML document."""
    lines: dict[str, int] = {}
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, path = stack.pop()
        lines.setdefault(json_path(path), node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                # a problem about a key is shown on the key's line, not on its value's
                lines[json_path((*path, str(key.value)))] = key.start_mark.line + 1
                stack.append((value, (*path, str(key.value))))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return lines


def _yaml_line(lines: dict[str, int], path: str) -> int | None:
    while path not in lines and len(path) > 1:
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else "$"
    return lines.get(path)

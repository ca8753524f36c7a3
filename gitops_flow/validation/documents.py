"""Static checks of flow documents: parse, schema, graph, allowlist, params, secrets, tests, dry-build -> problems."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gitops_flow.components import credentials, outbound
from gitops_flow.components.base import FAKEABLE
from gitops_flow.components.knowledge import Knowledge
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BuildError
from gitops_flow.flow import bounds as limits
from gitops_flow.flow import locations as jsonpos
from gitops_flow.flow.document import NAME_PATTERN, EdgeSpec, EvalSpec, Expectation, FlowSpec, FlowTest, NodeSpec
from gitops_flow.flow.graph import analyse
from gitops_flow.flow.regexes import PatternError, compile_pattern
from gitops_flow.langflow import convert as langflow
from gitops_flow.problems import Problem, capped, json_path
from gitops_flow.runtime import tweaks
from gitops_flow.runtime.compiler import BuiltFlow, build_flow
from gitops_flow.security import references as secretrefs
from gitops_flow.security.policy import SecretPolicy

MAX_BYTES = 1024 * 1024
MAX_EXPORT_BYTES = 8 * MAX_BYTES  # LangFlow exports carry every node's source and field metadata: several times larger
MAX_DEPTH = 32  # nesting of the whole document; params deeper than this are surely a mistake or an attack
MAX_PROBLEMS = 50  # problems reported per file; the rest are counted in one `too-many-problems`


@dataclass(slots=True)
class FileReport:
    """What validation found in one file; ``spec`` is set when the document parsed into a FlowSpec."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    spec: FlowSpec | None = None
    built: BuiltFlow | None = None
    conversion: langflow.Conversion | None = None  # how a LangFlow export became a flow document (None: native)

    def origin(self, path: str) -> str:
        """Where a path of the flow document is in the file: itself for native files, mapped for exports."""
        return self.conversion.origin(path) if self.conversion is not None else path

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def flow_name(stem: str) -> str:
    """The name a file serves its flow as: its stem, or, for a stem that is no flow name (a LangFlow export saved
    under LangFlow's own name, ``Basic Prompting.json``), the stem made one (``basic-prompting``). A native document's
    ``name`` must still equal its stem."""
    return stem if re.match(NAME_PATTERN, stem) and len(stem) <= 64 else langflow.slug(stem)


def duplicate_names(files: Iterable[tuple[str, str]]) -> list[Problem]:
    """A ``duplicate-name`` problem for each file whose flow name (``(file, name)`` pairs) another file has too."""
    by_name: dict[str, list[str]] = {}
    for file, name in files:
        by_name.setdefault(name, []).append(file)
    return [
        Problem(
            code="duplicate-name",
            message=f"{' and '.join(files)} are each the flow {name!r} (a file's name, made a flow name, is the "
            "flow's URL name); rename all but one",
            file=file,
        )
        for name, files in sorted(by_name.items())
        if len(files) > 1
        for file in files
    ]


def validate_file(
    path: Path,
    registry: ComponentRegistry,
    *,
    display: str | None = None,
    stem: str | None = None,
    policy: SecretPolicy | None = None,
    knowledge: Knowledge | None = None,
) -> FileReport:
    """Validate one flow file; an unreadable file is a problem of its own, never an exception. ``knowledge``: the
    repository's files (a Retriever's documents are read and bounded by the dry-build)."""
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_EXPORT_BYTES:
            return FileReport(name, [too_large(size)])
        raw = path.read_bytes()
    except OSError as exc:
        return FileReport(name, [Problem(code="unreadable", message=f"cannot read the file: {exc.strerror}")])
    stem = path.stem if stem is None else stem
    return validate_bytes(raw, registry, file=name, stem=stem, policy=policy, knowledge=knowledge)


def validate_bytes(
    raw: bytes,
    registry: ComponentRegistry,
    *,
    file: str,
    stem: str | None = None,
    dry_build: bool = True,
    policy: SecretPolicy | None = None,
    knowledge: Knowledge | None = None,
    tools_faked: bool = False,
) -> FileReport:
    """Validate the bytes of a flow document. ``stem`` is the file name the document's ``name`` must equal.

    ``dry_build=False`` stops after the static checks, for a caller that builds the flow for real next (the server)
    and turns that build's BuildError into the problem the dry-build would have found. ``policy`` is the operator's
    word on secrets (default: the provider key names, no base URLs) and on outbound requests; ``tools_faked``: every
    tool node will be answered by a fake (``serve --fake-models``), so where its requests would go is not judged.
    """
    report = FileReport(file)
    checks = _Checks(registry, policy or SecretPolicy(), dry_build, knowledge, tools_faked)
    report.problems = capped([p.located(file, p.line) for p in _check(raw, checks, stem, report)], MAX_PROBLEMS)
    return report


@dataclass(frozen=True, slots=True)
class _Checks:
    """What a document is checked against."""

    registry: ComponentRegistry
    policy: SecretPolicy
    dry_build: bool
    knowledge: Knowledge | None = None
    tools_faked: bool = False


def too_large(size: int, limit: int = MAX_BYTES) -> Problem:
    """The problem of a file over its size limit (flow documents, exports and the routing file share it)."""
    what = "flow documents" if limit == MAX_BYTES else "LangFlow exports"
    return Problem(code="too-large", message=f"the file is {size:,} bytes; {what} are at most {limit:,}")


def _check(raw: bytes, checks: _Checks, stem: str | None, report: FileReport) -> list[Problem]:
    if len(raw) > MAX_EXPORT_BYTES:
        return [too_large(len(raw), MAX_EXPORT_BYTES)]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [Problem(code="not-utf8", message=f"the file is not UTF-8 text (byte {exc.start})")]
    try:
        data, repeated = jsonpos.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        return [Problem(code="invalid-json", message=f"{exc.msg} (column {exc.colno})", line=exc.lineno)]
    except _NotJson as exc:
        line = text.count("\n", 0, max(text.find(str(exc)), 0)) + 1
        return [Problem(code="invalid-json", message=f"{exc} is not a JSON value", line=line)]
    except RecursionError:
        return [Problem(code="too-deep", message=f"the document nests deeper than {MAX_DEPTH} levels")]
    if not isinstance(data, dict):
        return [Problem(code="not-an-object", message=f"a flow document is a JSON object, not {_json_type(data)}")]
    if len(raw) > MAX_BYTES and not langflow.is_export(data):
        return [too_large(len(raw))]
    lines = jsonpos.LineIndex(text, max_depth=MAX_DEPTH, repeated=repeated)
    if langflow.is_export(data):
        too_many = limits.size_problems(data["data"]["nodes"], data["data"]["edges"], ("data",), what="the export")
    else:
        too_many = limits.size_problems(data.get("nodes"), data.get("edges"), what="the flow")
    if too_many:  # before any check whose cost grows with the flow
        return [replace(p, line=lines.line(p.path)) for p in too_many]
    deep = _too_deep(data)
    if deep is not None:
        message = f"the document nests deeper than {MAX_DEPTH} levels"
        return [Problem(code="too-deep", message=message, path=deep, line=lines.line(deep))]
    problems = [
        Problem(code="duplicate-key", message=f"key {path.rsplit('.', 1)[-1]!r} appears twice here", path=path)
        for path in lines.duplicates
    ]
    problems += _check_document(data, checks, stem, report)
    found = lines.lines(p.path for p in problems if p.line is None)  # one pass over the text for all of them
    return [p if p.line is not None else replace(p, line=found[p.path]) for p in problems]


def _check_document(data: dict[str, Any], checks: _Checks, stem: str | None, report: FileReport) -> list[Problem]:
    if langflow.is_export(data):
        return _check_export(data, checks, stem, report)
    registry = checks.registry
    misplaced = _misplaced_env_refs(data)
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as exc:
        taken = {p.path for p in misplaced}
        return misplaced + [p for p in map(schema_problem, exc.errors()) if not _under(p.path, taken)]
    report.spec = spec
    problems: list[Problem] = list(misplaced)
    if stem is not None and spec.name != stem:
        problems.append(
            Problem(
                code="name-mismatch", message=f"name {spec.name!r} must equal the file name {stem!r}", path="$.name"
            )
        )
    graph, graph_problems = analyse(spec)
    problems += graph_problems
    problems += _node_problems(spec, registry, checks.policy, checks.tools_faked)
    problems += tweaks.problems(spec, registry)
    problems += _test_problems(spec, registry)
    if problems or not checks.dry_build:
        return problems
    try:
        report.built = build_flow(spec, registry, dry_run=True, knowledge=checks.knowledge)
    except BuildError as exc:
        return [Problem(code=exc.code, message=str(exc), path=exc.path)]
    first_of_each: dict[tuple[str, str], Problem] = {}
    for note in report.built.notes:  # one note per secret, not one per node using it, in document order
        first_of_each.setdefault((note.code, note.message), note)
    return list(first_of_each.values())


def _check_export(data: dict[str, Any], checks: _Checks, stem: str | None, report: FileReport) -> list[Problem]:
    """A LangFlow export: converted, then checked as the flow document it became, every problem pointing back
    into the export (``Conversion.origin``)."""
    name = flow_name(stem) if stem is not None else langflow.slug(str(data.get("name") or "flow"))
    conversion = langflow.convert(data, name=name)
    if not conversion.ok or conversion.document is None:
        return conversion.problems
    document = conversion.document
    # a LangFlow component becomes up to four nodes: the flow it becomes is held to the limits too, so the document
    # `import-langflow` writes validates on its own
    what = "the flow this export converts to"
    too_many = limits.size_problems(document["nodes"], document["edges"], ("data",), what=what)
    if too_many:
        return conversion.problems + too_many
    report.conversion = conversion
    found = _check_document(document, checks, name, report)
    return conversion.problems + [replace(p, path=conversion.origin(p.path)) for p in found]


def _misplaced_env_refs(data: dict[str, Any]) -> list[Problem]:
    """Secret references outside node params (in tests, descriptions, ...): never resolved, always a mistake."""
    found: list[tuple[tuple[str | int, ...], Any]] = []
    for key, value in data.items():
        if key == "nodes" and isinstance(value, list):
            for index, node in enumerate(value):
                if isinstance(node, dict):
                    for field_name, item in node.items():
                        if field_name != "params":
                            found += secretrefs.env_refs(item, ("nodes", index, field_name))
                else:
                    found += secretrefs.env_refs(node, ("nodes", index))
        else:
            found += secretrefs.env_refs(value, (key,))
    message = "a secret reference is read only in a node's params, where the component takes a secret"
    return [Problem(code="env-not-secret", message=message, path=json_path(where)) for where, _ in found]


def _under(path: str, roots: set[str]) -> bool:
    return any(path == root or path.startswith((root + ".", root + "[")) for root in roots)


class _NotJson(ValueError):
    """NaN and Infinity: Python's json reads them, JSON does not have them."""


def _no_constant(name: str) -> Any:
    raise _NotJson(name)


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _too_deep(data: Any) -> str | None:
    """The path of the first value nested deeper than MAX_DEPTH, found without recursion; only containers are
    walked (a scalar nests nothing), in the order a walk of every value would take."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            children: list[tuple[str | int, Any]] = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            continue
        if children and len(path) >= MAX_DEPTH:
            return json_path((*path, children[-1][0]))  # the child a walk of every value would meet first
        stack.extend((v, (*path, k)) for k, v in children if isinstance(v, dict | list))
    return None


# models whose keys a misspelt key is compared with, by the shape of its location
_MODELS_AT: tuple[tuple[tuple[str, ...], type[BaseModel]], ...] = (
    (("nodes", "#"), NodeSpec),
    (("edges", "#"), EdgeSpec),
    (("tests", "#", "expect"), Expectation),
    (("tests", "#"), FlowTest),
    (("evals", "#"), EvalSpec),
    ((), FlowSpec),
)


def schema_problem(err: Any, models_at: tuple[tuple[tuple[str, ...], type[BaseModel]], ...] = _MODELS_AT) -> Problem:
    """One pydantic error of a flow document (or, with ``models_at``, of the routing file) as a problem that names
    the key, and for a misspelt key the one it was likely meant to be."""
    loc = tuple(part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-")))
    path = json_path(loc)
    kind = err["type"]
    field_name = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        parent = tuple("#" if isinstance(p, int) or _named_by_user(loc, i) else p for i, p in enumerate(loc[:-1]))
        model = next((m for shape, m in models_at if shape == parent), None)
        known = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(field_name, known, n=1)
        suffix = f"; did you mean {hint[0]!r}?" if hint else (f"; allowed: {', '.join(known)}" if known else "")
        return Problem(code="unknown-key", message=f"unknown key {field_name!r}{suffix}", path=path)
    if kind == "missing":
        return Problem(code="missing-key", message=f"{field_name!r} is required", path=path)
    if kind == "literal_error" and loc == ("version",):
        return Problem(code="unsupported-version", message='this is format version 1: set "version": 1', path=path)
    if kind == "string_pattern_mismatch" and loc and loc[0] == "yanked":
        return Problem(code="bad-sha", message="yanked lists commits by sha: 7 to 40 hex digits", path=path)
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "scorer":
        return Problem(
            code="unknown-scorer",
            message="a shadow's scorer is exact, contains, json_schema, similarity or judge:<rubric file>",
            path=path,
        )
    if kind == "string_pattern_mismatch":
        what = "names" if loc == ("name",) else "ids"
        return Problem(code=f"bad-{what[:-1]}", message=f"{what} match {err['ctx']['pattern']}", path=path)
    code = "wrong-type" if kind.endswith("_type") else "invalid-value"
    return Problem(code=code, message=str(err["msg"]).removeprefix("Value error, "), path=path)


def _named_by_user(loc: tuple[Any, ...], index: int) -> bool:
    """Whether ``loc[index]`` is a name the file chose (a flow's, a ref's), not one of the schema's keys."""
    if index == 1:
        return loc[0] in ("routes", "limits", "cache")
    if index == 2 and loc[:2] == ("evals", "flows"):
        return True
    return index == 3 and loc[0] == "limits" and loc[2] == "refs"


def _node_problems(
    spec: FlowSpec, registry: ComponentRegistry, policy: SecretPolicy, tools_faked: bool = False
) -> list[Problem]:
    problems: list[Problem] = []
    for index, node in enumerate(spec.nodes):
        where = ("nodes", index)
        try:
            component = registry.get(node.component)
            secret_params = registry.secret_params(component)
        except BuildError as exc:  # not registered, or an operator component whose module does not load
            problems += secretrefs.check(node.params, (*where, "params"))
            problems.append(Problem(code=exc.code, message=str(exc), path=json_path([*where, "component"])))
            continue
        problems += secretrefs.check(node.params, (*where, "params"), secret_params=secret_params, policy=policy)
        problems += credentials.check(registry, component, node.params, (*where, "params"), policy)
        if component.name in outbound.SENDERS and component.takes_context and not tools_faked:  # a built-in's
            problems += outbound.problems(component.name, node.params, (*where, "params"), policy.egress)
        bare = secretrefs.resolve(dict(node.params), {}, missing=[])
        try:
            issues = registry.check_params(component, bare)
        except BuildError as exc:  # an operator component whose module does not load
            problems.append(Problem(code=exc.code, message=str(exc), path=json_path([*where, "component"])))
            continue
        problems += [
            Problem(code=code, message=message, path=json_path([*where, "params", *loc]))
            for loc, code, message in issues
        ]
    return problems


def _test_problems(spec: FlowSpec, registry: ComponentRegistry) -> list[Problem]:
    problems: list[Problem] = []
    kinds = {n.id: registry.kind_of(n.component) for n in spec.nodes}
    seen: set[str] = set()
    for index, case in enumerate(spec.tests):
        where = ("tests", index)
        if case.name in seen:
            problems.append(
                Problem(code="duplicate-test", message=f"two tests are named {case.name!r}", path=json_path(where))
            )
        seen.add(case.name)
        for node_id in case.fakes:
            if node_id not in kinds:
                problems.append(
                    Problem(
                        code="bad-fake",
                        message=f"fakes name {node_id!r}, which is not a node",
                        path=json_path([*where, "fakes", node_id]),
                    )
                )
            elif kinds[node_id] not in (*FAKEABLE, None):
                problems.append(
                    Problem(
                        code="bad-fake",
                        message=f"only model and tool nodes can be faked; {node_id!r} is neither",
                        path=json_path([*where, "fakes", node_id]),
                    )
                )
        if case.expect.matches is not None:
            try:
                compile_pattern(case.expect.matches)
            except PatternError as exc:
                problems.append(Problem(code=exc.code, message=str(exc), path=json_path([*where, "expect", "matches"])))
    return problems

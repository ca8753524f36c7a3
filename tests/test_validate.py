"""Bad-input suite of validate: every problem code from a file named after it, locations, hints and the allowlist."""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.cli import main as cli
from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.problems import Problem
from gitops_flow.validation.documents import MAX_BYTES, MAX_DEPTH, FileReport, validate_bytes, validate_file
from gitops_flow.validation.routing import validate_routing_bytes

DATA = Path(__file__).parent / "data" / "flows"
VALID = sorted((DATA / "valid").glob("*.json"))
INVALID = sorted((DATA / "invalid").glob("*.json"))

# (JSON path, line) of the problem each invalid file is named after; None: the problem is about the whole file
# (or, for too-deep, see test_too_deep_has_a_line).
LOCATIONS: dict[str, tuple[str, int | None]] = {
    "bad-env-ref": ("$.nodes[0].params.api_key", 8),
    "base-url-not-allowed": ("$.nodes[0].params.base_url", 8),
    "env-not-allowed": ("$.nodes[0].params.api_key", 8),
    "env-not-secret": ("$.nodes[0].params.responses[0]", 8),
    "env-wrong-provider": ("$.nodes[0].params.api_key", 8),
    "redirect-kwarg": ("$.nodes[0].params.model_kwargs.openai_api_base", 9),
    "bad-fake": ("$.tests[0].fakes.answer", 13),
    "bad-id": ("$.nodes[0].id", 5),
    "bad-name": ("$.name", 3),
    "bad-output": ("$.output", 4),
    "bad-param": ("$.nodes[0].params.temperature", 8),
    "bad-regex": ("$.tests[0].expect.matches", 9),
    "unsupported-regex": ("$.tests[0].expect.matches", 9),  # a backreference: RE2 runs in linear time, without them
    "bad-template": ("$.nodes[0].params.messages[1][1]", 8),
    "build-failed": ("$.nodes[0].params", 6),
    "cycle": ("$.edges", 11),
    "crosses-part": ("$.edges[1]", 13),  # a branch's node read from outside the branch
    "dangling-edge": ("$.edges[1].target", 10),
    "dead-end": ("$.nodes[2]", 8),
    "duplicate-edge": ("$.edges[1]", 10),
    "duplicate-edge-key": ("$.edges[3]", 14),
    "duplicate-id": ("$.nodes[1]", 6),
    "duplicate-test": ("$.tests[1]", 9),
    "history-not-entry": ("$.nodes[1]", 7),
    "import-path": ("$.nodes[1].component", 6),
    "invalid-json": ("$", 6),
    "invalid-value": ("$.tests[0].expect", 9),
    "literal-secret": ("$.nodes[0].params.api_key", 8),
    "map-limit": ("$.nodes[0].params.max_items", 6),
    "missing-edge-key": ("$.edges[3]", 14),
    "missing-key": ("$.nodes", 1),  # an absent key has no line of its own: the object that lacks it
    "missing-param": ("$.nodes[0].params.template", 5),
    "name-mismatch": ("$.name", 3),
    "no-default-branch": ("$.nodes[0].params.default", 6),  # absent: the params that lack it
    "not-an-object": ("$", None),
    "several-entrys": ("$.nodes", 4),
    "several-exits": ("$.nodes", 4),
    "shared-part": ("$.nodes[3]", 9),
    "too-deep": ("$.nodes[0].params.model_kwargs" + ".nested" * (MAX_DEPTH + 1 - 4), None),
    "unknown-component": ("$.nodes[1].component", 7),
    "unknown-input": ("$.input", 4),
    "unknown-key": ("$.edgs", 8),
    "unknown-node": ("$.nodes[0].params.default", 7),  # a router's default names no node
    "unknown-param": ("$.nodes[0].params.temprature", 8),
    "unreachable": ("$.nodes[1]", 7),
    "unreachable-branch": ("$.nodes[0].params.branches.Yes", 7),
    "unsupported-version": ("$.version", 2),
    "wrong-type": ("$.nodes", 4),
}
REQUIRED_CODES = {
    "invalid-json",
    "not-an-object",
    "unknown-key",
    "missing-key",
    "unsupported-version",
    "bad-name",
    "duplicate-id",
    "dangling-edge",
    "cycle",
    "several-entrys",
    "several-exits",
    "missing-edge-key",
    "duplicate-edge-key",
    "import-path",
    "unknown-component",
    "unknown-param",
    "bad-param",
    "missing-param",
    "literal-secret",
    "bad-env-ref",
    "env-not-secret",
    "env-not-allowed",
    "env-wrong-provider",
    "base-url-not-allowed",
    "redirect-kwarg",
    "too-deep",
    "bad-fake",
    "bad-regex",
    "unsupported-regex",
    "duplicate-test",
    "name-mismatch",
    "history-not-entry",
}
FAKE = {"id": "llm", "component": "FakeChatModel", "params": {"responses": ["Hi!"]}}
API_KEY = "sk-proj-Zq8Lr2Vx7Nc4Tb1Wm6Hd3Ks9Fa5Ge0Jy"


@pytest.fixture(scope="module")
def registry() -> ComponentRegistry:
    return ComponentRegistry.builtin()


def _validate(doc: dict[str, Any], registry: ComponentRegistry) -> FileReport:
    return validate_bytes(json.dumps(doc, indent=2).encode(), registry, file="flow.json")


def _flow(*nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "name": "flow", "nodes": list(nodes), **extra}


def _errors(report: FileReport) -> list[Problem]:
    return [p for p in report.problems if p.severity == "error"]


def _only(report: FileReport, code: str) -> Problem:
    found = [p for p in report.problems if p.code == code]
    assert len(found) == 1, report.problems
    return found[0]


def _invalid_report(path: Path, registry: ComponentRegistry) -> FileReport:
    # The stems are problem codes, not flow names: only name-mismatch is checked against its file name.
    stem = path.stem if path.stem == "name-mismatch" else None
    return validate_bytes(path.read_bytes(), registry, file=path.name, stem=stem)


# -- the data files --------------------------------------------------------------------------------------------------


def test_data_files_cover_the_required_codes() -> None:
    assert len(VALID) >= 3
    stems = {p.stem for p in INVALID}
    assert REQUIRED_CODES <= stems
    assert stems == set(LOCATIONS), "every invalid file needs its expected location in LOCATIONS"


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_flow_has_no_errors(path: Path, registry: ComponentRegistry) -> None:
    report = validate_file(path, registry)

    assert _errors(report) == []
    assert report.ok
    assert report.spec is not None and report.spec.name == path.stem
    assert report.built is not None  # the dry-build ran
    assert all(p.file == str(path) for p in report.problems)


@pytest.mark.parametrize(
    ("stem", "entry", "exit_", "chain"),
    [
        ("single-node", "llm", "llm", True),
        ("diamond", "question", "reply", False),
        ("explicit-ends", "prompt", "answer", True),
        ("json-extractor", "prompt", "parse", True),
    ],
    ids=["single-node", "diamond", "explicit-ends", "json-extractor"],
)
def test_valid_flow_shape(stem: str, entry: str, exit_: str, chain: bool, registry: ComponentRegistry) -> None:
    report = validate_file(DATA / "valid" / f"{stem}.json", registry)

    assert report.built is not None
    graph = report.built.graph
    assert (graph.entry, graph.exit, graph.is_chain) == (entry, exit_, chain)
    assert graph.order[0] == entry and graph.order[-1] == exit_


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_flow_reports_its_code(path: Path, registry: ComponentRegistry) -> None:
    report = _invalid_report(path, registry)

    codes = {p.code for p in _errors(report)}
    assert codes == {path.stem}, [p.describe() for p in report.problems]
    assert not report.ok
    assert all(p.file == path.name for p in report.problems)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_flow_problem_location(path: Path, registry: ComponentRegistry) -> None:
    report = _invalid_report(path, registry)
    expected_path, expected_line = LOCATIONS[path.stem]

    problem = next(p for p in report.problems if p.code == path.stem)
    assert problem.path == expected_path
    if expected_line is not None:
        assert problem.line == expected_line
        assert problem.describe().startswith(f"{path.name}:{expected_line}: error[{path.stem}] {expected_path}: ")


def test_unknown_component_points_at_its_line(registry: ComponentRegistry) -> None:
    path = DATA / "invalid" / "unknown-component.json"
    problem = _only(_invalid_report(path, registry), "unknown-component")

    assert problem.path == "$.nodes[1].component"
    assert '"component": "ChatModle"' in path.read_text().splitlines()[problem.line - 1]


def test_too_deep_has_a_line(registry: ComponentRegistry) -> None:
    problem = _only(_invalid_report(DATA / "invalid" / "too-deep.json", registry), "too-deep")

    assert problem.line is not None


def test_cycle_message_names_only_the_cycle(registry: ComponentRegistry) -> None:
    doc = _flow(
        *({"id": n, "component": "Passthrough"} for n in ("question", "side", "draft", "review", "out")),
        edges=[
            {"source": "question", "target": "side"},
            {"source": "question", "target": "draft", "key": "question"},
            {"source": "draft", "target": "review"},
            {"source": "review", "target": "draft", "key": "review"},
            {"source": "review", "target": "out", "key": "review"},
            {"source": "side", "target": "out", "key": "side"},
        ],
    )

    problem = _only(_validate(doc, registry), "cycle")

    assert "draft" in problem.message and "review" in problem.message
    assert "side" not in problem.message


def test_name_mismatch_only_with_a_stem(registry: ComponentRegistry) -> None:
    raw = (DATA / "invalid" / "name-mismatch.json").read_bytes()

    assert validate_bytes(raw, registry, file="x.json").ok
    assert validate_bytes(raw, registry, file="x.json", stem="some-other-flow").ok
    problem = _only(validate_bytes(raw, registry, file="x.json", stem="name-mismatch"), "name-mismatch")
    assert "'some-other-flow'" in problem.message and "'name-mismatch'" in problem.message


def test_validate_file_checks_the_name_against_the_file_name(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = tmp_path / "renamed.json"
    path.write_bytes((DATA / "valid" / "single-node.json").read_bytes())

    assert [p.code for p in validate_file(path, registry).problems] == ["name-mismatch"]


# -- hints -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "hint"),
    [
        ("unknown-component", "component 'ChatModle' is not allowlisted; did you mean 'ChatModel'?"),
        ("unknown-param", "ChatModel has no parameter 'temprature'; did you mean 'temperature'?"),
        ("unknown-key", "unknown key 'edgs'; did you mean 'edges'?"),
    ],
    ids=["component", "param", "top-level-key"],
)
def test_did_you_mean(stem: str, hint: str, registry: ComponentRegistry) -> None:
    problem = _only(_invalid_report(DATA / "invalid" / f"{stem}.json", registry), stem)

    assert problem.message == hint


@pytest.mark.parametrize(
    ("doc", "code", "path", "hint"),
    [
        (_flow({"id": "a", "componnet": "Passthrough"}), "unknown-key", "$.nodes[0].componnet", "'component'"),
        (_flow(FAKE, edges=[{"source": "llm", "traget": "llm"}]), "unknown-key", "$.edges[0].traget", "'target'"),
        (
            _flow(FAKE, tests=[{"name": "t", "input": "x", "expect": {"contain": "Hi"}}]),
            "unknown-key",
            "$.tests[0].expect.contain",
            "'contains'",
        ),
        (
            _flow({"id": "p", "component": "PromptTemplate", "params": {"templte": "{x}"}}),
            "unknown-param",
            "$.nodes[0].params.templte",
            "'template'",
        ),
        (_flow({"id": "p", "component": "Passthru"}), "unknown-component", "$.nodes[0].component", "'Passthrough'"),
    ],
    ids=["node-key", "edge-key", "expect-key", "prompt-param", "component"],
)
def test_did_you_mean_nested(doc: dict[str, Any], code: str, path: str, hint: str, registry: ComponentRegistry) -> None:
    problem = _only(_validate(doc, registry), code)

    assert problem.path == path
    assert problem.message.endswith(f"did you mean {hint}?")


def test_no_close_match_lists_what_is_allowed(registry: ComponentRegistry) -> None:
    report = _validate(_flow({"id": "x", "component": "Zzzzzz", "params": {"qqqqqq": 1}}, bogus=1), registry)

    component = _only(report, "unknown-key")  # a schema error: the nodes are not looked at yet
    assert component.message.endswith(
        "allowed: version, name, description, input, output, nodes, edges, tests, aliases, tweakable, evals"
    )
    component = _only(_validate(_flow({"id": "x", "component": "Zzzzzz"}), registry), "unknown-component")
    assert "registered: " in component.message and "FakeChatModel" in component.message
    param = _only(
        _validate(_flow({"id": "x", "component": "StrOutputParser", "params": {"q": 1}}), registry), "unknown-param"
    )
    assert param.message.endswith("accepted: none")


# -- all problems, not the first -------------------------------------------------------------------------------------


def test_collects_every_schema_problem(registry: ComponentRegistry) -> None:
    doc = {"version": 3, "name": "Bad Name", "nodes": [FAKE], "edgs": []}

    codes = sorted(p.code for p in _validate(doc, registry).problems)

    assert codes == ["bad-name", "unknown-key", "unsupported-version"]


def test_collects_graph_node_and_test_problems(registry: ComponentRegistry) -> None:
    doc = _flow(
        FAKE,
        {"id": "answer", "component": "StrOutputParsr"},
        {"id": "prompt", "component": "PromptTemplate", "params": {"template": "{q}", "temprature": 1}},
        edges=[
            {"source": "prompt", "target": "llm"},
            {"source": "llm", "target": "answer"},
            {"source": "answer", "target": "ghost"},
        ],
        tests=[{"name": "t", "input": "x", "fakes": {"llm": ["a"]}, "expect": {"matches": "(a"}}],
    )

    found = {(p.code, p.path) for p in _validate(doc, registry).problems}

    assert found == {
        ("dangling-edge", "$.edges[2].target"),
        ("unknown-component", "$.nodes[1].component"),
        ("unknown-param", "$.nodes[2].params.temprature"),
        ("bad-regex", "$.tests[0].expect.matches"),
    }


def test_reports_every_instance_of_a_code(registry: ComponentRegistry) -> None:
    doc = _flow(
        {"id": "a", "component": "Nope"},
        {"id": "b", "component": "AlsoNope"},
        {"id": "c", "component": "os.path"},
        edges=[{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
    )

    found = [(p.code, p.path) for p in _validate(doc, registry).problems]

    assert found == [
        ("unknown-component", "$.nodes[0].component"),
        ("unknown-component", "$.nodes[1].component"),
        ("import-path", "$.nodes[2].component"),
    ]


def test_problem_lines_follow_the_document(registry: ComponentRegistry) -> None:
    doc = _flow(
        {"id": "a", "component": "Nope"}, {"id": "b", "component": "Nada"}, edges=[{"source": "a", "target": "b"}]
    )
    report = _validate(doc, registry)

    # json.dumps(indent=2) puts each key on its own line: the components are on lines 7 and 11
    assert [(p.code, p.line) for p in report.problems] == [("unknown-component", 7), ("unknown-component", 11)]


# -- bytes that are not a flow document ------------------------------------------------------------------------------


def _padded(size: int) -> bytes:
    doc = _flow(FAKE, description="")
    raw = json.dumps(doc).encode()
    doc["description"] = "x" * (size - len(raw))
    raw = json.dumps(doc).encode()
    assert len(raw) == size
    return raw


def test_too_large(tmp_path: Path, registry: ComponentRegistry) -> None:
    raw = _padded(MAX_BYTES + 1)
    path = tmp_path / "flow.json"
    path.write_bytes(raw)

    for report in (validate_bytes(raw, registry, file="flow.json"), validate_file(path, registry)):
        problem = _only(report, "too-large")
        assert problem.severity == "error"
        assert f"{MAX_BYTES + 1:,}" in problem.message
        assert report.spec is None


def test_exactly_max_bytes_is_allowed(tmp_path: Path, registry: ComponentRegistry) -> None:
    path = tmp_path / "flow.json"
    path.write_bytes(_padded(MAX_BYTES))

    assert validate_file(path, registry).ok


def test_not_utf8(registry: ComponentRegistry) -> None:
    raw = b'{"version": 1, "name": "caf\xe9", "nodes": []}'

    bad = raw.index(b"\xe9")
    problem = _only(validate_bytes(raw, registry, file="flow.json"), "not-utf8")

    assert f"byte {bad}" in problem.message


def test_utf8_bom_is_accepted(registry: ComponentRegistry) -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(_flow(FAKE)).encode()

    assert validate_bytes(raw, registry, file="flow.json").problems == []


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "invalid-json"),
        (b"   \n", "invalid-json"),
        (b"null", "not-an-object"),
        (b'"flow"', "not-an-object"),
        (b"42", "not-an-object"),
        (b"[" * 100_000 + b"]" * 100_000, "too-deep"),  # deeper than the parser's recursion limit
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "too-deep"),
    ],
    ids=["empty", "blank", "null", "string", "number", "deep-array", "deep-object"],
)
def test_not_a_flow_document(raw: bytes, code: str, registry: ComponentRegistry) -> None:
    assert [p.code for p in validate_bytes(raw, registry, file="flow.json").problems] == [code]


def test_invalid_json_line(registry: ComponentRegistry) -> None:
    raw = b'{\n  "version": 1,\n  "name": "x"\n  "nodes": []\n}\n'

    problem = _only(validate_bytes(raw, registry, file="flow.json"), "invalid-json")

    assert problem.line == 4
    assert "column 3" in problem.message


def test_nan_is_not_json(registry: ComponentRegistry) -> None:
    raw = b'{"version": 1, "name": "x", "nodes": [{"id": "m", "component": "ChatModel",'
    raw += b' "params": {"model": "openai:gpt-4o-mini", "temperature": NaN}}]}'

    assert "invalid-json" in {p.code for p in validate_bytes(raw, registry, file="flow.json").problems}


def test_a_broken_file_does_not_hide_the_others(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"version": 1,\n "name": "broken",\n')
    (tmp_path / "typo.json").write_text(json.dumps({**_flow({"id": "a", "component": "ChatModle"}), "name": "typo"}))
    (tmp_path / "good.json").write_text(json.dumps({**_flow(FAKE), "name": "good"}))
    (tmp_path / "wrong-name.json").write_text(json.dumps(_flow(FAKE)))
    buffer = io.StringIO()

    code = cli.main(["validate", str(tmp_path), "--format", "json"], environ={}, out=buffer)

    output = json.loads(buffer.getvalue())
    assert code == 1
    assert output["files"] == 4
    found = {(Path(p["file"]).name, p["code"]) for p in output["problems"]}
    assert found == {
        ("broken.json", "invalid-json"),
        ("typo.json", "unknown-component"),
        ("wrong-name.json", "name-mismatch"),
    }
    assert output["errors"] == 3
    typo = next(p for p in output["problems"] if p["code"] == "unknown-component")
    assert (typo["path"], typo["line"]) == ("$.nodes[0].component", 1)
    assert "did you mean 'ChatModel'?" in typo["message"]


def test_cli_valid_folder_exits_zero() -> None:
    buffer = io.StringIO()

    code = cli.main(["validate", str(DATA / "valid"), "--format", "json"], environ={}, out=buffer)

    output = json.loads(buffer.getvalue())
    assert code == 0
    assert output["files"] == len(VALID)
    assert output["errors"] == 0


def test_cli_invalid_folder_reports_every_file() -> None:
    buffer = io.StringIO()

    code = cli.main(["validate", str(DATA / "invalid"), "--format", "json"], environ={}, out=buffer)

    output = json.loads(buffer.getvalue())
    assert code == 1
    assert output["files"] == len(INVALID)
    # every file's name equals its stem but for name-mismatch's, so each reports exactly its own code
    found = {(Path(p["file"]).stem, p["code"]) for p in output["problems"] if p["severity"] == "error"}
    assert found == {(p.stem, p.stem) for p in INVALID}


def test_unloadable_operator_component_is_a_problem(registry: ComponentRegistry) -> None:
    extended = registry.extended([Component("Mine", "gf_no_such_module_anywhere:thing")])

    report = _validate(_flow({"id": "a", "component": "Mine"}), extended)

    assert _only(report, "component-unavailable").path.startswith("$.nodes[0]")


# -- security: nothing is imported, evaluated or echoed --------------------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on sys.path whose import (or call) writes a marker file."""
    name = f"gf_canary_{uuid.uuid4().hex}"
    marker = tmp_path / "marker"
    code = (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "def thing(*args, **kwargs):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('called')\n"
    )
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_canary_detects_an_import(canary: tuple[str, Path]) -> None:
    """The canary itself works, so the test below would see an import."""
    name, marker = canary

    __import__(name)

    assert marker.read_text() == "imported"


def test_nothing_in_a_flow_is_imported_or_executed(canary: tuple[str, Path], registry: ComponentRegistry) -> None:
    name, marker = canary
    expected = {
        f"{name}:thing": "import-path",
        f"{name}.thing": "import-path",
        f"{name}/thing": "import-path",
        "os.system": "import-path",
        "subprocess:Popen": "import-path",
        "builtins.eval": "import-path",
        "importlib:import_module": "import-path",
        f"__import__('{name}')": "unknown-component",
        f"exec('import {name}')": "unknown-component",
        name: "unknown-component",
    }
    for component, code in expected.items():
        report = _validate(_flow({"id": "n", "component": component, "params": {"target": name}}), registry)
        assert [(p.code, p.path) for p in report.problems] == [(code, "$.nodes[0].component")], component

    # code-looking text in params is only ever text: the flow builds (dry) and nothing runs
    payload = f"__import__('{name}').thing()"
    doc = _flow(
        {"id": "prompt", "component": "PromptTemplate", "params": {"template": payload}},
        {"id": "llm", "component": "FakeChatModel", "params": {"responses": [payload, f"{{{payload}}}"]}},
        {"id": "answer", "component": "StrOutputParser"},
        edges=[{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
        tests=[{"name": payload, "input": payload, "fakes": {"llm": [payload]}, "expect": {"equals": payload}}],
    )
    report = _validate(doc, registry)
    assert report.problems == [] and report.built is not None
    # a template that reaches for attributes is refused, not evaluated
    attr = _validate(
        _flow({"id": "p", "component": "PromptTemplate", "params": {"template": "{x.__class__}"}}), registry
    )
    assert [(p.code, p.path) for p in attr.problems] == [("bad-template", "$.nodes[0].params.template")]
    # jinja2 (a template language that is code) is not an accepted template format
    jinja = _validate(
        _flow(
            {"id": "p", "component": "PromptTemplate", "params": {"template": "{{ x }}", "template_format": "jinja2"}}
        ),
        registry,
    )
    assert [(p.code, p.path) for p in jinja.problems] == [("bad-param", "$.nodes[0].params.template_format")]

    assert not marker.exists()
    assert name not in sys.modules


@pytest.mark.parametrize(
    ("params", "paths"),
    [
        ({"model": "openai:gpt-4o-mini", "api_key": API_KEY}, ["$.nodes[0].params.api_key"]),
        ({"model": "openai:gpt-4o-mini", "base_url": f"https://x/?k={API_KEY}"}, ["$.nodes[0].params.base_url"]),
        ({"model": "openai:gpt-4o-mini", "model_kwargs": {"token": API_KEY}}, ["$.nodes[0].params.model_kwargs.token"]),
        ({"model": "openai:gpt-4o-mini", "stop": ["a", API_KEY]}, ["$.nodes[0].params.stop[1]"]),
        (
            {"model": "openai:gpt-4o-mini", "temperature": API_KEY, "api_key": API_KEY},
            ["$.nodes[0].params.api_key", "$.nodes[0].params.temperature"],
        ),
        (
            {"model": "openai:gpt-4o-mini", "api_key": API_KEY, "apikey2": API_KEY},
            ["$.nodes[0].params.api_key", "$.nodes[0].params.apikey2"],
        ),
    ],
    ids=["api-key", "in-url", "nested-token", "in-list", "also-bad-param", "also-unknown-param"],
)
def test_literal_secret_is_never_echoed(
    params: dict[str, Any], paths: list[str], tmp_path: Path, registry: ComponentRegistry
) -> None:
    report = _validate(_flow({"id": "llm", "component": "ChatModel", "params": params}), registry)

    assert sorted(p.path for p in report.problems if p.code == "literal-secret") == paths
    for problem in report.problems:
        assert API_KEY not in json.dumps(problem.as_dict())
        assert API_KEY not in problem.describe()
        assert API_KEY[3:15] not in problem.message  # not even a part of it
    # nor through the command line
    (tmp_path / "flow.json").write_text(json.dumps(_flow({"id": "llm", "component": "ChatModel", "params": params})))
    for fmt in ("text", "json", "github"):
        buffer = io.StringIO()
        assert cli.main(["validate", str(tmp_path), "--format", fmt], environ={}, out=buffer) == 1
        assert API_KEY[3:15] not in buffer.getvalue()


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param({"$env": "OPENAI-API-KEY"}, id="dash"),
        pytest.param({"$env": ""}, id="empty"),
        pytest.param({"$env": None}, id="null"),
        pytest.param({"$env": 42}, id="number"),
        pytest.param({"$env": "KEY", "default": "x"}, id="extra-key"),
        pytest.param({"$env": ["KEY"]}, id="list"),
        pytest.param({"$env": {"name": "KEY"}}, id="object"),
    ],
)
def test_bad_env_ref(ref: dict[str, Any], registry: ComponentRegistry) -> None:
    report = _validate(
        _flow({"id": "llm", "component": "ChatModel", "params": {"model": "m:x", "api_key": ref}}), registry
    )

    assert [(p.code, p.path) for p in report.problems] == [("bad-env-ref", "$.nodes[0].params.api_key")]


def test_env_ref_is_a_notice_not_an_error(registry: ComponentRegistry) -> None:
    params = {"model": "openai:gpt-4o-mini", "api_key": {"$env": "OPENAI_API_KEY"}}

    report = _validate(_flow({"id": "llm", "component": "ChatModel", "params": params}), registry)

    assert report.ok
    assert "secret-placeholder" in {p.code for p in report.problems}
    assert all(p.severity != "error" for p in report.problems)


# -- the routing file ------------------------------------------------------------------------------------------------

GOOD_ROUTING = """\
flows_dir: flows
routes:
  default:
    - {ref: stable, weight: 90}
    - {ref: main, weight: 10}
  support-bot:
    - {ref: support-bot/stable, weight: 100}
sticky: user
session_ttl: 30m
analysis:
  window: 60s
  min_requests: 20
  max_error_rate: 0.05
  max_p99_ms: 3000
"""


def _routing(text: str, flow_names: list[str] | None = None) -> tuple[Any, list[Problem]]:
    return validate_routing_bytes(text.encode(), file="gitops-flow.yaml", flow_names=flow_names)


def test_good_routing_file() -> None:
    config, problems = _routing(GOOD_ROUTING, ["support-bot"])

    assert problems == []
    assert config.session_ttl == 1800.0
    assert config.analysis.window == 60.0
    assert [(t.ref, t.weight) for t in config.routes["default"]] == [("stable", 90), ("main", 10)]


def test_empty_routing_file_is_the_defaults() -> None:
    config, problems = _routing("")

    assert problems == []
    assert config.routes == {} and config.flows_dir == "flows"


@pytest.mark.parametrize(
    ("text", "code", "path", "line", "message"),
    [
        ("sticky: user\nrouts:\n  default: []\n", "unknown-key", "$.routs", None, "did you mean 'routes'?"),
        ("analysis:\n  max_eror_rate: 0.1\n", "unknown-key", "$.analysis.max_eror_rate", 2, "'max_error_rate'?"),
        pytest.param(
            "routes:\n  default:\n    - {ref: stable, wieght: 1}\n",
            "unknown-key",
            "$.routes.default[0].wieght",
            3,
            "did you mean 'weight'?",
        ),
        ("session_ttl: 30 minutes\n", "invalid-value", "$.session_ttl", 1, "'30 minutes' is not a duration"),
        ("analysis:\n  window: soon\n", "invalid-value", "$.analysis.window", 2, "'soon' is not a duration"),
        ("session_ttl: 0\n", "invalid-value", "$.session_ttl", 1, "greater than 0"),
        (
            "routes:\n  default:\n    - {ref: 'a..b', weight: 1}\n",
            "invalid-value",
            "$.routes.default[0].ref",
            3,
            "'a..b' is not a valid git ref name",
        ),
        (
            "routes:\n  default:\n    - {ref: stable, weight: 1}\n    - {ref: stable, weight: 2}\n",
            "duplicate-ref",
            "$.routes.default[1].ref",
            4,
            "ref 'stable' is listed twice in route 'default'",
        ),
        ("routes:\n  default: []\n", "zero-weights", "$.routes.default", 2, "sends no traffic"),
        ("flows_dir: ../elsewhere\n", "bad-flows-dir", "$.flows_dir", 1, "inside the repository"),
        ("flows_dir: /etc\n", "bad-flows-dir", "$.flows_dir", 1, "inside the repository"),
        ("sticky: user\nsession_ttl: 30m\n  analysis: x\n", "invalid-yaml", "$", 3, "mapping values"),
        ("- stable\n- main\n", "not-a-mapping", "$", None, "YAML mapping"),
        (
            "session_ttl: !!python/object/apply:os.system ['true']\n",
            "invalid-yaml",
            "$",
            1,
            "could not determine a constructor",
        ),
        (
            "limits:\n  echo:\n    requests_per_secnd: 3\n",
            "unknown-key",
            "$.limits.echo.requests_per_secnd",
            3,
            "did you mean 'requests_per_second'?",
        ),
        (
            "limits:\n  echo:\n    refs:\n      main: {concurent: 1}\n",
            "unknown-key",
            "$.limits.echo.refs.main.concurent",
            4,
            "did you mean 'concurrent'?",
        ),
        (
            "limits:\n  echo:\n    per_user: {concurrent: 0}\n",
            "invalid-value",
            "$.limits.echo.per_user.concurrent",
            3,
            "greater than or equal to 1",
        ),
        (
            "limits:\n  echo:\n    tokens: {budget: 10, window: soon}\n",
            "invalid-value",
            "$.limits.echo.tokens.window",
            3,
            "'soon' is not a duration",
        ),
        ("limits:\n  echo:\n    tokens: {window: 1h}\n", "missing-key", "$.limits.echo.tokens.budget", 3, "required"),
        (
            "limits:\n  echo:\n    requests_per_second: -1\n",
            "invalid-value",
            "$.limits.echo.requests_per_second",
            3,
            "greater than 0",
        ),
        (
            "cache:\n  echo: {ttl: 10m, allow: [temprature]}\n",
            "invalid-value",
            "$.cache.echo.allow[0]",
            2,
            "'temperature' or 'history'",
        ),
        ("cache:\n  echo: {tll: 10m}\n", "unknown-key", "$.cache.echo.tll", 2, "did you mean 'ttl'?"),
    ],
    ids=[
        "unknown-key",
        "unknown-analysis-key",
        "unknown-target-key",
        "bad-duration",
        "bad-window",
        "zero-duration",
        "bad-ref",
        "duplicate-ref",
        "zero-weights-empty",
        "flows-dir-up",
        "flows-dir-absolute",
        "invalid-yaml",
        "not-a-mapping",
        "python-tag",
        "unknown-limit-key",
        "unknown-ref-limit-key",
        "zero-user-runs",
        "bad-token-window",
        "budget-missing",
        "negative-rate",
        "unknown-cache-allowance",
        "unknown-cache-key",
    ],
)
def test_bad_routing_file(text: str, code: str, path: str, line: int | None, message: str) -> None:
    _, problems = _routing(text)

    problem = next((p for p in problems if p.code == code), None)
    assert problem is not None, problems
    assert (problem.path, problem.file, problem.severity) == (path, "gitops-flow.yaml", "error")
    if line is not None:
        assert problem.line == line
    assert message in problem.message


GUARDED_ROUTING = """\
limits:
  default: {requests_per_second: 50}
  support-bot:
    requests_per_second: 20
    concurrent: 8
    per_user: {requests_per_second: 0.5, concurrent: 2}
    tokens: {budget: 200000, window: 1h}
    refs:
      main: {requests_per_second: 2, tokens: {budget: 20000}}
cache:
  support-bot: {ttl: 10m, allow: [temperature]}
"""


def test_limits_and_cache_of_the_routing_file() -> None:
    config, problems = _routing(GUARDED_ROUTING, ["support-bot", "echo"])

    assert problems == []
    bot = config.limits_of("support-bot")
    assert (bot.requests_per_second, bot.concurrent, bot.tokens.budget, bot.tokens.window) == (20, 8, 200000, 3600)
    assert bot.per_user.requests_per_second == 0.5
    assert bot.for_ref("support-bot", "support-bot/main").tokens.budget == 20000  # a flow-scoped ref finds its entry
    assert bot.for_ref("support-bot", "stable") is None
    assert config.limits_of("echo").requests_per_second == 50  # the default entry
    assert config.cache["support-bot"].ttl == 600 and config.cache["support-bot"].allow == ["temperature"]


def test_limits_and_cache_naming_no_flow_or_limiting_nothing_are_warnings() -> None:
    text = "limits:\n  gone: {concurrent: 1}\n  echo:\n    refs:\n      main: {}\ncache:\n  elsewhere: {}\n"

    config, problems = _routing(text, ["echo"])

    assert config is not None
    found = {(p.code, p.path, p.line, p.severity) for p in problems}
    assert found == {
        ("unknown-flow", "$.limits.gone", 2, "warning"),
        ("empty-limits", "$.limits.echo.refs.main", 5, "warning"),
        ("unknown-flow", "$.cache.elsewhere", 7, "warning"),
    }


def test_output_scores_of_the_routing_file() -> None:
    text = "experiments:\n  echo:\n    scores:\n      - {key: resolved, from: verdict.resolved}\n  gone: {}\n"

    config, problems = _routing(text, ["echo"])

    assert config is not None
    (score,) = config.experiments["echo"].scores
    assert (score.key, score.node, score.field) == ("resolved", "verdict", "resolved")
    assert {(p.code, p.path, p.severity) for p in problems} == {("unknown-flow", "$.experiments.gone", "warning")}


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ("{key: resolved, from: resolved}", "$.experiments.echo.scores[0].from"),  # no node
        ("{key: 'has space', from: verdict.resolved}", "$.experiments.echo.scores[0].key"),
        ("{key: resolved, from: verdict.resolved, weight: 2}", "$.experiments.echo.scores[0].weight"),
    ],
    ids=["no-node", "bad-key", "unknown-field"],
)
def test_a_wrong_output_score_is_a_problem_naming_where(entry: str, path: str) -> None:
    config, problems = _routing(f"experiments:\n  echo:\n    scores:\n      - {entry}\n", ["echo"])

    assert config is None
    assert [p.path for p in problems] == [path]
    assert problems[0].line == 4


def test_routing_zero_weights() -> None:
    text = "routes:\n  default:\n    - {ref: stable, weight: 0}\n    - {ref: main, weight: 0}\n"

    config, problems = _routing(text)

    assert config is not None  # well-formed, but sends no traffic
    assert [(p.code, p.path) for p in problems] == [("zero-weights", "$.routes.default")]


def test_routing_collects_every_problem() -> None:
    text = "analysis:\n  window: soon\n  max_eror_rate: 0.1\nsticky: always\n"

    config, problems = _routing(text)

    assert config is None
    assert sorted((p.code, p.path) for p in problems) == [
        ("invalid-value", "$.analysis.window"),
        ("invalid-value", "$.sticky"),
        ("unknown-key", "$.analysis.max_eror_rate"),
    ]


def test_routing_unknown_flow_is_a_warning() -> None:
    text = "routes:\n  default:\n    - {ref: main, weight: 1}\n  suport-bot:\n    - {ref: main, weight: 1}\n"

    _, problems = _routing(text, ["support-bot"])
    _, unknown_names = _routing(text, None)

    assert [(p.code, p.path, p.severity) for p in problems] == [("unknown-flow", "$.routes['suport-bot']", "warning")]
    assert unknown_names == []  # without the flow names nothing can be said about them


def test_routing_not_utf8() -> None:
    _, problems = validate_routing_bytes(b"sticky: \xff\n", file="gitops-flow.yaml")

    assert [p.code for p in problems] == ["not-utf8"]


def test_routing_too_large() -> None:
    _, problems = validate_routing_bytes(b"#" * (MAX_BYTES + 1), file="gitops-flow.yaml")

    assert [p.code for p in problems] == ["too-large"]


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        ("sticky: user\nrouts:\n  default: []\n", "$.routs", 2),
        ("routes:\n  default:\n    - {ref: stable, weight: 0}\n", "$.routes.default", 2),
        (
            "routes:\n  default:\n    - {ref: main, weight: 1}\n  suport-bot:\n    - {ref: main, weight: 1}\n",
            "$.routes['suport-bot']",
            4,
        ),
    ],
    ids=["unknown-key", "zero-weights", "unknown-flow"],
)
def test_routing_problem_is_on_the_key_line(text: str, path: str, line: int) -> None:
    _, problems = _routing(text, ["support-bot"])

    assert [p.line for p in problems if p.path == path] == [line]


def test_a_key_written_twice_is_reported_where_it_repeats(registry: ComponentRegistry) -> None:
    text = (
        '{\n  "version": 1,\n  "name": "flow",\n  "name": "other",\n'
        '  "nodes": [{"id": "p", "component": "Passthrough"}]\n}'
    )
    report = validate_bytes(text.encode(), registry, file="flow.json")
    problem = _only(report, "duplicate-key")
    assert (problem.path, problem.line) == ("$.name", 4)


def test_a_second_chat_history_is_the_one_reported(registry: ComponentRegistry) -> None:
    doc = _flow(
        {"id": "memory", "component": "ChatHistory"},
        {"id": "again", "component": "ChatHistory"},
        {"id": "p", "component": "PromptTemplate", "params": {"template": "{question}"}},
        edges=[{"source": "memory", "target": "again"}, {"source": "again", "target": "p"}],
    )
    problem = _only(_validate(doc, registry), "history-not-entry")
    assert problem.path == "$.nodes[1]"


def test_a_flows_dir_outside_the_repository_is_never_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "gitops-flow.yaml").write_text("flows_dir: ../outside\n")
    out = io.StringIO()
    code = cli.main(["validate", str(repo), "--format", "json"], environ={}, out=out)
    body = json.loads(out.getvalue())
    assert code == 1
    assert [p["code"] for p in body["problems"]] == ["bad-flows-dir"]


def test_caching_a_conversation_is_a_warning_of_gitops_flow_validate(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "echo.json").write_text(json.dumps({**_flow(FAKE), "name": "echo"}))
    (tmp_path / "gitops-flow.yaml").write_text("cache:\n  echo: {allow: [history]}\n  other: {allow: [temperature]}\n")
    buffer = io.StringIO()

    code = cli.main(["validate", str(tmp_path), "--format", "json"], environ={}, out=buffer)

    found = [(p["code"], p["path"], p["severity"]) for p in json.loads(buffer.getvalue())["problems"]]
    assert code == 0  # a warning: the file is valid
    assert ("cache-history", "$.cache.echo.allow", "warning") in found
    assert not any(p[0] == "cache-history" and "other" in p[1] for p in found)
    assert "adds no turn" in next(
        p["message"] for p in json.loads(buffer.getvalue())["problems"] if p["code"] == "cache-history"
    )

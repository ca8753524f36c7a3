"""Modules import only from lower layers, and third-party packages only where STYLE.md allows them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gitops_flow"

# one concept per module, each in a layer; a module may import only from layers below its own
LAYERS: dict[str, int] = {
    "problems": 0,
    "committext": 0,
    "redaction": 0,
    "providers": 0,
    "secretpolicy": 1,
    "exceptions": 1,
    "jsonpos": 1,
    "limits": 1,
    "config": 2,
    "spec": 2,
    "routing": 2,
    "secretrefs": 2,
    "calculator": 0,
    "nesting": 0,
    "sqlitetx": 0,
    "agent": 2,
    "fakemodel": 2,
    "textify": 2,
    "templates": 2,
    "component": 1,
    "builtins": 3,
    "components": 4,
    "graph": 3,
    "history": 3,
    "build": 5,
    # the lean executor (gitops_flow/lean/): the flow's graph as plain async code, beside its runnable
    "lean": 0,
    "lean.models": 1,
    "lean.identity": 1,
    "lean.forms": 2,
    "lean.program": 3,
    "runtime": 6,
    "credentials": 5,
    # the LangFlow boundary (gitops_flow/langflow/): its package file imports nothing
    "langflow": 0,
    "langflow.export": 1,
    "langflow.models": 2,
    "langflow.builder": 3,
    "langflow.refusals": 2,
    "langflow.nodes": 5,
    "langflow.chat": 5,
    "langflow.convert": 6,
    "tweaks": 6,
    "fakeanswers": 5,
    "validate": 7,
    "routingcheck": 8,  # gitops-flow.yaml; shares the schema-error wording with validate
    "testing": 7,
    "contract": 8,
    "report": 8,
    "demo": 21,
    "workers": 21,
    "servercli": 3,  # the commands that ask a running server
    "cli": 22,
    "__main__": 23,
    "__init__": 0,
    # the runtime server
    "source": 2,
    "webhook": 2,
    "recent": 1,
    "metrics": 2,
    "stores.base": 2,
    "stores.memory": 3,
    "stores.sqlite": 3,
    "stores.redis_scripts": 2,
    "stores.redis": 3,
    "stores": 5,
    "versions": 7,
    "traffic": 8,
    "builder": 9,
    "rebuilds": 8,
    "pins": 9,
    "deploylog": 8,
    "canaries": 9,
    "analysis": 9,
    "leader": 9,
    "reconcile": 10,
    "choosing": 11,
    "sse": 2,
    "httpio": 3,  # the edge every handler shares: refusals, JSON answers, reading requests
    "endpoints": 12,
    "views": 13,
    "langflow.api": 13,
    "langserve_api": 13,
    "openapi": 13,
    "pages": 2,
    "confighash": 0,
    "app": 20,
    # the operator console (gitops_flow/console/)
    "console": 0,
    "console.auth": 1,
    "console.commands": 3,
    "console.terminal": 1,
    "console.shown": 3,
    "console.drawing": 5,
    "console.diff": 5,
    "console.documents": 9,
    "console.feed": 1,
    "console.trail": 1,
    "console.overview": 14,
    "console.pending": 14,
    "console.flowpage": 15,
    "console.pages": 15,
    "console.context": 16,
    "console.access": 17,
    "console.actions": 18,
    "console.routes": 19,
    "http_server": 14,
    # observability and guardrails (issue 16)
    "telemetry": 0,
    "telemetry.context": 0,
    "telemetry.logs": 1,
    "telemetry.tracing": 2,
    "telemetry.nodes": 3,
    "telemetry.middleware": 3,
    "telemetry.runs": 5,
    "guardrails": 0,
    "guardrails.counters": 0,
    "guardrails.memory": 2,
    "guardrails.sqlite": 2,
    "guardrails.redis": 2,
    "guardrails.gate": 3,
    "guardrails.cache": 5,
    "guardrails.backends": 6,
    # the loop back to the Git host and the operator's receivers
    "githost": 0,
    "githost.repos": 0,
    "githost.sinks": 1,
    "githost.http": 2,
    "githost.outbox": 2,
    "githost.github": 3,
    "githost.deploys": 3,
    "githost.notify": 5,
    "githost.statuses": 5,
    "githost.feedback": 6,
    "githost.comment": 5,
    "githost.gitlab": 3,
    "githost.gitea": 3,
    "receivers": 13,
    # gitops-flow plan
    "plan": 0,
    "install": 0,
    "gitauth": 0,
    "plan.diff": 3,
    "plan.compute": 9,
    "plan.render": 10,
    # experiments (issue 24): answered runs, feedback scores, the statistics and the report
    "posterior": 1,
    "ledger": 3,
    "scores": 4,
    "experiment": 9,
    "experiments_api": 14,
}
# third-party packages and the only modules that may import them
CONFINED = {
    "langchain_core": {
        "builtins",
        "history",
        "build",
        "testing",
        "agent",
        "textify",
        "fakemodel",
        "templates",
        "telemetry.nodes",  # LangChain's callbacks, as node events
        # the lean executor does what LangChain's runnables do without their machinery: it calls the same
        # prompts', models' and parsers' own methods, and reuses LangChain's chunk-adding and id helpers
        "lean.models",
        "lean.forms",
        "lean.program",
        "lean.identity",  # messages and prompt values compared as data
    },
    "langchain": {"builtins"},
    "git": {"source"},
    "starlette": {
        "app",
        "endpoints",
        "httpio",
        "views",
        "langflow.api",
        "langserve_api",
        "experiments_api",
        "openapi",
        "pages",
        "receivers",
        "sse",
        "console.pages",
        "console.routes",
        "console.access",
        "console.actions",
    },
    "jinja2": {"console.pages"},
    "markupsafe": {"console.pages"},
    "uvicorn": {"cli", "demo", "http_server", "workers"},
    "httptools": {"http_server"},
    "sqlite3": {"stores.sqlite", "guardrails.sqlite", "sqlitetx"},
    "redis": {"stores.redis", "guardrails.redis"},
    "prometheus_client": {"metrics"},
    "limits": {"guardrails.memory", "guardrails.redis"},
    "opentelemetry": {"telemetry.tracing"},
    "httpx": {"githost.http"},
    "numpy": {"posterior"},
    "scipy": {"posterior"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    """``stores/sqlite.py`` -> ``stores.sqlite``; a package's ``__init__.py`` is the package itself."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in ("gitops_flow", "gitops_flow.stores", "gitops_flow.langflow"):
                found += [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return found


def test_every_module_has_a_layer() -> None:
    assert {_name(p) for p in _modules()} == set(LAYERS)


def _target(name: str) -> str | None:
    """The module of ours that an import names (``gitops_flow.stores.base.X`` -> ``stores.base``)."""
    parts = name.split(".")[1:]
    while parts and ".".join(parts) not in LAYERS:
        parts.pop()
    return ".".join(parts) if parts else None


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_imports_go_down_the_layers(path: Path) -> None:
    me = _name(path)
    own = LAYERS[me]
    for name in _imports(path):
        if not name.startswith("gitops_flow.") or name == "gitops_flow.__version__":
            continue
        target = _target(name)
        assert target is not None, f"{me} imports unknown module {name}"
        assert LAYERS[target] < own or me == "__init__", f"{me} (L{own}) imports {target} (L{LAYERS[target]})"


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_third_party_packages_stay_in_their_modules(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        if top in CONFINED:
            assert _name(path) in CONFINED[top], f"{_name(path)} imports {name}"


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_no_eval_or_exec_anywhere(path: Path) -> None:
    tree = ast.parse(path.read_text())
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile", "__import__"}

"""Third-party packages stay in the modules that own them, and nothing evaluates code.

The layers themselves (no module imports upward, the request path never imports the reconciler, only
delivery/source.py imports GitPython) are import-linter contracts in pyproject.toml, run by `lint-imports`. This file
keeps what those contracts cannot say as briefly: which of our modules may name each library, down to a subpackage of
one (``langchain_core.language_models``).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gitops_flow"

# a library (or one of its subpackages) -> the modules or packages of ours that may import it
CONFINED: dict[str, set[str]] = {
    "langchain_core": {
        "components",
        "runtime",  # the compiler, conversations, flow tests and the lean executor (LangChain's own helpers)
        "flow.prompts",  # what a prompt template may hold, checked with LangChain's own parser
        "observability.telemetry.nodes",  # LangChain's callbacks, as node events
    },
    # LangChain's model classes: named only where a node can be a model
    "langchain_core.language_models": {"components"},
    "langchain_core.chat_models": {"components"},
    "starlette": {"app", "server", "console.renderer", "console.routes", "console.access", "console.actions"},
    "jinja2": {"console.renderer"},
    "markupsafe": {"console.renderer"},
    "uvicorn": {"cli.main", "cli.demo", "cli.workers", "server.listener"},
    "httptools": {"server.listener"},
    "sqlite3": {"stores.sqlite", "stores.sqlitetx", "guardrails.sqlite", "stores.embeddings"},
    "redis": {"stores.redis", "guardrails.redis", "stores.embeddings"},
    # a Retriever's documents and vectors: read, split, embedded and searched in components/ alone; and the
    # experiments' posteriors
    "numpy": {"components.vectors", "components.retriever", "experiments.posterior"},
    "pypdf": {"components.documents"},
    "langchain_text_splitters": {"components.documents"},
    "langchain.embeddings": {"components.vectors", "components.langchain_internals"},  # the second: its private table
    "prometheus_client": {"observability.metrics"},
    "limits": {"guardrails.memory", "guardrails.redis"},
    "opentelemetry": {"observability.telemetry.tracing"},
    # the Git host's API; model providers' transport (the circuit breaker) and the errors of their clients
    "httpx": {"githost.http", "components.breaker", "components.provider_errors", "components.http_fetch"},
    "re2": {"flow.regexes"},  # authors' regular expressions run on RE2 (linear time), never on Python's re
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    """``stores/sqlite.py`` -> ``stores.sqlite``; a package's ``__init__.py`` is the package itself."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


# Each module is parsed in a process of its own making: after a deep recursion elsewhere in this process (the lean
# executor's random flows), CPython 3.11's AST recursion counter can be left off and ast.parse fails (cpython#106905).
_SCAN = """
import ast, json, sys
found = {}
for path in sys.argv[1:]:
    imports, calls = [], set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            imports += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.add(node.func.id)
    found[path] = {"imports": imports, "calls": sorted(calls)}
print(json.dumps(found))
"""


@functools.cache
def _scanned() -> dict[str, dict[str, list[str]]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCAN, *map(str, _modules())], capture_output=True, text=True, check=True
    )
    found: dict[str, dict[str, list[str]]] = json.loads(done.stdout)
    return found


def _imports(path: Path) -> list[str]:
    return _scanned()[str(path)]["imports"]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_third_party_packages_stay_in_their_modules(path: Path) -> None:
    me = _name(path)
    for name in _imports(path):
        for library, owners in CONFINED.items():
            if _within(name, library):
                assert any(_within(me, owner) for owner in owners), f"{me} imports {name}"


def test_the_confinement_names_modules_that_exist() -> None:
    names = {_name(p) for p in _modules()}
    for owners in CONFINED.values():
        for owner in owners:
            assert any(_within(name, owner) for name in names), f"no module {owner}"


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_no_eval_or_exec_anywhere(path: Path) -> None:
    calls = set(_scanned()[str(path)]["calls"])
    assert not calls & {"eval", "exec", "compile", "__import__"}

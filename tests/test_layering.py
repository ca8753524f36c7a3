"""Modules import only from lower layers, and third-party packages only where STYLE.md allows them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gitops_flow"

# one concept per module, each in a layer; a module may import only from layers below its own
LAYERS: dict[str, int] = {
    "problems": 0,
    "exceptions": 1,
    "jsonpos": 1,
    "config": 2,
    "spec": 2,
    "routing": 2,
    "secretrefs": 2,
    "components": 3,
    "graph": 3,
    "history": 3,
    "build": 4,
    "validate": 5,
    "testing": 5,
    "report": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 0,
}
# third-party packages and the only modules that may import them
CONFINED = {
    "langchain_core": {"components", "history", "build", "testing"},
    "langchain": {"components"},
    "git": {"source"},
    "starlette": {"app", "endpoints"},
    "uvicorn": {"cli"},
    "redis": {"stores.redis"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py"))


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "gitops_flow":
                found += [f"gitops_flow.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return found


def test_every_module_has_a_layer() -> None:
    assert {p.stem for p in _modules()} == set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_imports_go_down_the_layers(path: Path) -> None:
    own = LAYERS[path.stem]
    for name in _imports(path):
        if not name.startswith("gitops_flow."):
            continue
        target = name.split(".")[1]
        if target == "__version__":
            continue
        assert target in LAYERS, f"{path.stem} imports unknown module {name}"
        assert LAYERS[target] < own or path.stem == "__init__", (
            f"{path.stem} (L{own}) imports {target} (L{LAYERS[target]})"
        )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_third_party_packages_stay_in_their_modules(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        if top in CONFINED:
            assert path.stem in CONFINED[top], f"{path.stem} imports {name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_no_eval_or_exec_anywhere(path: Path) -> None:
    tree = ast.parse(path.read_text())
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile", "__import__"}

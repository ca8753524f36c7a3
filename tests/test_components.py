"""registry.py: the allowlist resolves registered names only; operators extend it by file or entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry, load_components_file
from gitops_flow.exceptions import BuildError, ConfigError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.validation.documents import validate_bytes
from tests.helpers import chain

MODULE = """
from pathlib import Path
from langchain_core.runnables import RunnableLambda
Path(__file__).with_suffix(".imported").write_text("yes")
def exclaim(*, times: int = 1):
    return RunnableLambda(lambda text: text + "!" * times)
def keyed(*, token: str, label: str = ""):
    return RunnableLambda(lambda text: f"{label}{text} with a key of {len(token)} characters")
keyed.gitops_flow_secrets = {"token": ["OPENAI_API_KEY"]}
def open_keyed(*, token: str):
    return RunnableLambda(lambda text: text)
open_keyed.gitops_flow_secrets = ["token"]
def miswritten(*, token: str):
    return RunnableLambda(lambda text: text)
miswritten.gitops_flow_secrets = "token"
"""


@pytest.fixture
def operator_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module an operator registers; it leaves a marker file when it is imported."""
    name = f"gf_operator_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / f"{name}.py"
    sys.modules.pop(name, None)


def test_builtin_names_resolve_and_nothing_else_does() -> None:
    registry = ComponentRegistry.builtin()
    assert registry.get("ChatModel").kind == "model"
    for name, code in [("os.system", "import-path"), ("json:loads", "import-path"), ("Nope", "unknown-component")]:
        with pytest.raises(BuildError) as caught:
            registry.get(name)
        assert caught.value.code == code


def test_a_components_file_is_imported_lazily_and_params_are_checked(operator_module: Path, tmp_path: Path) -> None:
    listing = tmp_path / "components.yaml"
    listing.write_text(f"components:\n  Exclaim:\n    target: {operator_module.stem}:exclaim\n    kind: parser\n")
    registry = ComponentRegistry.builtin().with_file(listing)
    marker = operator_module.with_suffix(".imported")
    assert registry.get("Exclaim").kind == "parser"
    assert not marker.exists(), "registering must not import the operator's module"
    built = build_flow(FlowSpec.model_validate(chain(("e", "Exclaim", {"times": 3}))), registry)
    assert marker.exists()
    assert built.runnable.invoke("hey") == "hey!!!"
    issues = registry.check_params(registry.get("Exclaim"), {"tims": 3})
    assert issues[0][1] == "unknown-param" and "did you mean 'times'" in issues[0][2]


def test_entry_points_register_components(operator_module: Path, tmp_path: Path) -> None:
    dist = tmp_path / "gf_operator_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gf-operator-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[gitops_flow.components]\nExclaim = {operator_module.stem}:exclaim\n")
    registry = ComponentRegistry.builtin().with_entry_points()
    assert "Exclaim" in registry
    built = build_flow(FlowSpec.model_validate(chain(("e", "Exclaim", {}))), registry)
    assert built.runnable.invoke("hey") == "hey!"


def _problems(registry: ComponentRegistry, params: dict[str, object], name: str = "Keyed") -> list[tuple[str, str]]:
    raw = json.dumps(chain(("k", name, params))).encode()
    return [(p.code, p.path) for p in validate_bytes(raw, registry, file="flow.json").problems if p.severity == "error"]


def test_a_components_file_declares_the_params_that_take_a_secret(operator_module: Path, tmp_path: Path) -> None:
    listing = tmp_path / "components.yaml"
    listing.write_text(
        f"components:\n  Keyed:\n    target: {operator_module.stem}:keyed\n    secrets: {{token: [OPENAI_API_KEY]}}\n"
        f"  Open:\n    target: {operator_module.stem}:open_keyed\n    secrets: [token]\n"
    )
    registry = ComponentRegistry.builtin().with_file(listing)
    assert registry.secret_params(registry.get("Keyed")) == frozenset({"token"})
    assert registry.secret_names(registry.get("Keyed")) == {"token": ("OPENAI_API_KEY",)}
    assert registry.secret_params(registry.get("Open")) == frozenset({"token"})
    assert registry.secret_names(registry.get("Open")) == {}
    assert _problems(registry, {"token": {"$env": "OPENAI_API_KEY"}}) == []
    assert _problems(registry, {"token": {"$env": "ANTHROPIC_API_KEY"}}) == [
        ("env-not-allowed", "$.nodes[0].params.token")
    ]
    assert _problems(registry, {"token": {"$env": "OPENAI_API_KEY"}}, "Open") == [
        ("env-wrong-provider", "$.nodes[0].params.token")  # a provider's key goes only where it is named
    ]
    assert _problems(registry, {"token": {"$env": "OPENAI_API_KEY"}, "label": {"$env": "OPENAI_API_KEY"}}) == [
        ("env-not-secret", "$.nodes[0].params.label")
    ]
    assert _problems(registry, {"token": "hunter2-hunter2"}) == [("literal-secret", "$.nodes[0].params.token")]
    built = build_flow(
        FlowSpec.model_validate(chain(("k", "Keyed", {"token": {"$env": "OPENAI_API_KEY"}}))),
        registry,
        secrets={"OPENAI_API_KEY": "sk-0123456789"},
    )
    assert built.runnable.invoke("hey") == "hey with a key of 13 characters"


def test_an_entry_points_target_declares_its_secret_params(operator_module: Path, tmp_path: Path) -> None:
    dist = tmp_path / "gf_operator_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gf-operator-pkg\nVersion: 1.0\n")
    module = operator_module.stem
    entries = f"Keyed = {module}:keyed\nExclaim = {module}:exclaim\nMiswritten = {module}:miswritten\n"
    (dist / "entry_points.txt").write_text(f"[gitops_flow.components]\n{entries}")
    registry = ComponentRegistry.builtin().with_entry_points()
    assert registry.secret_params(registry.get("Keyed")) == frozenset({"token"})
    assert registry.secret_params(registry.get("Exclaim")) == frozenset()  # declares nothing: takes no secret
    assert _problems(registry, {"token": {"$env": "OPENAI_API_KEY"}}) == []
    with pytest.raises(BuildError, match="must be a list of parameter names") as caught:
        registry.secret_params(registry.get("Miswritten"))
    assert caught.value.code == "component-unavailable"


def test_an_operator_target_that_does_not_load_is_a_build_error(tmp_path: Path) -> None:
    registry = ComponentRegistry.builtin().extended([Component("Gone", "gf_no_such_module_xyz:thing")])
    with pytest.raises(BuildError) as caught:
        build_flow(FlowSpec.model_validate(chain(("g", "Gone", {}))), registry)
    assert caught.value.code == "component-unavailable"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("components: [1]\n", "expected a mapping under 'components'"),
        ("components:\n  X: os.system\n", "target of the form 'module:attr'"),
        ("components:\n  X: {target: 'a:b', color: red}\n", "unknown keys ['color']"),
        ("components:\n  X: {target: 'a:b', kind: magic}\n", "unknown kind 'magic'"),
        ("components:\n  X: {target: 'a:b', secrets: api_key}\n", "secrets must be a list of parameter names"),
        ("components:\n  X: {target: 'a:b', secrets: [1]}\n", "secrets must be a list of parameter names"),
        ("components:\n  X: {target: 'a:b', secrets: {k: [GITOPS_FLOW_ADMIN_TOKEN]}}\n", "never GITOPS_FLOW_"),
        ("components:\n  X: {target: 'a:b', secrets: {k: ['A-B']}}\n", "must name variables"),
        ("components: {\n", "components file"),
    ],
    ids=[
        "not-mapping",
        "bad-target",
        "unknown-key",
        "bad-kind",
        "secrets-not-a-list",
        "secrets-not-names",
        "secrets-naming-own",
        "secrets-naming-badly",
        "bad-yaml",
    ],
)
def test_a_bad_components_file_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    listing = tmp_path / "components.yaml"
    listing.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_components_file(listing)


def test_operator_components_cannot_shadow_builtins_or_look_like_paths() -> None:
    registry = ComponentRegistry.builtin()
    with pytest.raises(ConfigError, match="already registered"):
        registry.extended([Component("ChatModel", "a:b")])
    with pytest.raises(ConfigError, match="must match"):
        registry.extended([Component("os.system", "a:b")])

"""docs/configuration.md, made from the models: every key of the routing file (from its JSON Schema, with each
field's description) and every setting (from the settings model). A test keeps the page equal to ``page()``:

    python -m gitops_flow.cli.reference > docs/configuration.md
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gitops_flow.config import Settings, env_name
from gitops_flow.flow.routing import ROUTING_FILE, RoutingConfig

_INTRO = f"""# Configuration reference

This page is generated from the models (`python -m gitops_flow.cli.reference > docs/configuration.md`; a test keeps
it equal): every key of the routing file `{ROUTING_FILE}`, then every setting of the server and the command line.

## The routing file: `{ROUTING_FILE}`

At the root of the flow repository; every key is optional, and without the file the branch head serves every flow.
How routes, canaries, segments, limits and the cache behave is in [delivery.md](delivery.md) and
[server.md](server.md); the problems `validate` reports for the file are in [problems.md](problems.md).

Its JSON Schema is printed by `gitops-flow schema --config` and ships in the package as
`gitops_flow/flow/schema/gitops-flow.v1.json`. An editor with the YAML language server (VS Code's YAML extension,
Neovim's yamlls, JetBrains' IDEs) checks and completes the file when its first line names the schema:

```yaml
# yaml-language-server: $schema=https://example.com/gitops-flow.v1.json
routes:
  default:
    - ref: stable
      weight: 90
    - ref: main
      weight: 10
```

(the URL or path where you keep the file, for example `gitops-flow schema --config > .gitops-flow.schema.json` and
`$schema=.gitops-flow.schema.json`, relative to the routing file). `FLOW` stands for a flow's name (or `default`),
`REF` for a ref's name; a duration is seconds, or a number with a unit: `500ms`, `30s`, `5m`, `1h`, `1d`.

| key | type | default | what it is |
| --- | --- | --- | --- |
"""

_SETTINGS = """
## Settings

Each setting is read from its `GITOPS_FLOW_*` variable, from `--env-file FILE` (`KEY=VALUE` lines), or from a flag
of `serve` where it has one (a flag beats the environment, which beats the file). `gitops-flow settings` prints the
values in force and where each came from (`--json` for a program). The commands that ask a running server
(`status`, `versions`, `history`, `experiment`, `abort`, `resume`) take `--server URL`, else `GITOPS_FLOW_SERVER`.
Notification receivers are set with `GITOPS_FLOW_NOTIFY_URL` and its companions
([delivery.md](delivery.md#notifications)).

| variable | setting | default | what it is |
| --- | --- | --- | --- |
"""


def page() -> str:
    """The whole of docs/configuration.md."""
    schema = RoutingConfig.json_schema()
    rows = [_row(key, kind, default, text) for key, kind, default, text in routing_keys(schema)]
    settings = [
        _row(f"`{env_name(name)}`" if env_name(name) else "—", name, _default(info.default), info.description or "")
        for name, info in Settings.model_fields.items()
    ]
    return _INTRO + "\n".join(rows) + "\n" + _SETTINGS + "\n".join(settings) + "\n"


def routing_keys(schema: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """Every key of the routing file as ``(dotted path, type, default, description)``, depth first."""
    yield from _properties(schema, schema, "")


def _properties(root: dict[str, Any], node: dict[str, Any], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    required = set(node.get("required", ()))
    for name, prop in node.get("properties", {}).items():
        yield from _key(root, prop, prefix + name, name in required)


def _key(
    root: dict[str, Any], prop: dict[str, Any], path: str, required: bool = False
) -> Iterator[tuple[str, str, str, str]]:
    target = _resolve(root, _non_null(prop))
    default = "required" if required else _default(prop["default"]) if "default" in prop else "—"
    text = prop.get("description") or target.get("description") or ""
    yield path, _type(root, prop), default, text
    one = next((kind for kind in target.get("anyOf", []) if "$ref" in kind), None)
    if one is not None and "properties" in _resolve(root, one):  # one mapping, or a list of them (a shadow)
        yield from _properties(root, _resolve(root, one), f"{path}.")
    elif target.get("type") == "array":
        items = _resolve(root, target["items"])
        if "properties" in items:
            yield from _properties(root, items, f"{path}[].")
    elif "properties" in target:
        yield from _properties(root, target, f"{path}.")
    elif isinstance(target.get("additionalProperties"), dict):
        inner = _resolve(root, _non_null(target["additionalProperties"]))
        name = "REF" if path.endswith("refs") else "FLOW"
        entry = {**target["additionalProperties"], "description": inner.get("description", "")}
        yield from _key(root, entry, f"{path}.{name}")


def _type(root: dict[str, Any], prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        kinds = [k for k in prop["anyOf"] if k.get("type") != "null"]
        if {k.get("type") for k in kinds} == {"number", "string"}:
            return "duration"
        return " or ".join(_type(root, k) for k in kinds)
    if "$ref" in prop:
        return "mapping"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(root, prop['items'])}"
    if kind == "object":
        inner = prop.get("additionalProperties")
        return f"mapping of names to {_type(root, inner)}" if isinstance(inner, dict) else "mapping"
    names = {"integer": "whole number", "number": "number", "string": "text", "boolean": "true or false"}
    return names.get(str(kind), str(kind))


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    kinds = [k for k in prop.get("anyOf", []) if k.get("type") != "null"]
    return kinds[0] if len(kinds) == 1 else prop


def _resolve(root: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        resolved: dict[str, Any] = root["$defs"][prop["$ref"].rsplit("/", 1)[1]]
        return resolved
    return prop


def _default(value: Any) -> str:
    if value is None or value == {} or value == [] or value == ():
        return "—"
    if not isinstance(value, str | int | float | bool):
        value = str(value)
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("``", "`").replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


if __name__ == "__main__":
    print(page(), end="")

"""Pydantic models of a flow document (FlowSpec, NodeSpec, EdgeSpec, FlowTest) and its JSON Schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from gitops_flow.flow.parts import PARAMS_SCHEMA

FORMAT_VERSION = 1
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
NODE_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
ALIAS_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
SCHEMA_ID = "https://gitops-flow.dev/schema/flow.v1.json"

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _control_params(schema: dict[str, Any]) -> None:
    """The params of control nodes (Router, Map), as JSON Schema conditions on the component's name."""
    schema["allOf"] = [
        {
            "if": {"properties": {"component": {"const": name}}, "required": ["component"]},
            "then": {"properties": {"params": params}, "required": ["params"]},
        }
        for name, params in PARAMS_SCHEMA.items()
    ]


class NodeSpec(BaseModel):
    """One component of the graph: a registered component name and its keyword arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_control_params)

    id: str = Field(pattern=NODE_ID_PATTERN, max_length=100, description="Unique within the flow.")
    component: str = Field(
        min_length=1, max_length=100, description="A name from the component registry, never an import path."
    )
    params: dict[str, JsonValue] = Field(
        default_factory=dict,
        description='Keyword arguments of the component. {"$env": "NAME"} is a secret read from the environment. '
        "A Router's branches and default, and a Map's body, name nodes of this flow that start its parts: "
        "sub-graphs detached from the main graph.",
    )
    description: str = ""


class EdgeSpec(BaseModel):
    """Data flows from ``source``'s output into ``target``; ``key`` names it when the target has several inputs."""

    model_config = _STRICT

    source: str = Field(max_length=100)
    target: str = Field(max_length=100)
    key: str | None = Field(default=None, min_length=1, max_length=100)


class Expectation(BaseModel):
    """What a test case's output must satisfy; every given check must hold."""

    model_config = _STRICT

    equals: JsonValue = None
    contains: str | None = None
    matches: str | None = Field(default=None, description="A regular expression searched in the output.")

    @model_validator(mode="after")
    def _at_least_one(self) -> Expectation:
        if not self.model_fields_set:
            raise ValueError("expect needs at least one of 'equals', 'contains', 'matches'")
        return self


class FlowTest(BaseModel):
    """A test case run by `gitops-flow test`: model nodes answer from ``fakes``, never from a real model."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=200)
    input: JsonValue
    fakes: dict[str, list[str]] = Field(default_factory=dict, description="Model node id -> responses, in turn.")
    session: str | None = Field(default=None, description="Cases sharing a session share chat history, in order.")
    expect: Expectation


SCORER_PATTERN = r"^(exact|contains|json_schema|judge:[A-Za-z0-9_][A-Za-z0-9_./-]*)$"
MAX_EVALS = 20  # datasets per flow
MAX_SCORERS = 10  # scorers per dataset


class EvalSpec(BaseModel):
    """A dataset committed in the repository that `gitops-flow eval` runs the flow on, and how each answer is scored."""

    model_config = _STRICT

    dataset: str = Field(
        min_length=1,
        max_length=300,
        description="A JSON Lines file, relative to the repository's root: one case a line, an 'input' and an "
        "'expected' (or a 'schema', or a 'rubric').",
    )
    scorers: list[Annotated[str, Field(pattern=SCORER_PATTERN, max_length=300)]] = Field(
        min_length=1,
        max_length=MAX_SCORERS,
        description="exact, contains, json_schema, or judge:<rubric file> (a model judges with the rubric).",
    )


class FlowSpec(BaseModel):
    """A flow document, format version 1."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"$id": SCHEMA_ID})

    version: Literal[1] = Field(description="The document format.")
    name: str = Field(pattern=NAME_PATTERN, max_length=64, description="Must equal the file's stem.")
    description: str = ""
    input: str | None = Field(default=None, description="The entry node, when not the only one without inputs.")
    output: str | None = Field(default=None, description="The exit node, when not the only one without outputs.")
    nodes: list[NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = Field(default_factory=list)
    tests: list[FlowTest] = Field(default_factory=list)
    aliases: list[Annotated[str, Field(pattern=ALIAS_PATTERN, max_length=200)]] = Field(
        default_factory=list,
        max_length=20,
        description="Other names LangFlow's run API answers to for this flow (/api/v1/run/{alias}): a LangFlow "
        "export's id and endpoint name.",
    )
    tweakable: dict[str, list[Annotated[str, Field(max_length=100)]]] = Field(
        default_factory=dict,
        description="Node id -> the params a caller may set for one request with LangFlow's tweaks; every other "
        "tweak is refused. Never a secret, a base_url or a model's provider.",
    )
    evals: list[EvalSpec] = Field(
        default_factory=list,
        max_length=MAX_EVALS,
        description="Datasets `gitops-flow eval` scores the flow on, compared with the base of a change.",
    )


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of flow documents (kept equal to schema/flow.v1.json by a test)."""
    schema = FlowSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}

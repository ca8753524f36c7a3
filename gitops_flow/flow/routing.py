"""The repository's routing file, `gitops-flow.yaml`: which refs serve which flows, by weight, and the canary guard."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gitops_flow.flow.commit_text import MAX_REF_NAME

ROUTING_FILE = "gitops-flow.yaml"
DEFAULT_ROUTE = "default"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
YANKED_SHA = r"^[0-9a-fA-F]{7,40}$"
_BAD_REF = re.compile(r"\.\.|//|@\{|[\x00-\x20~^:?*\[\\\x7f]|^[-/.]|[./]$|\.lock$")


def check_ref(value: str) -> str:
    """A ref name as ``git check-ref-format`` would accept it (short names: ``stable``, ``support-bot/stable``)."""
    if not value or _BAD_REF.search(value):
        raise ValueError(f"{value!r} is not a valid git ref name")
    return value


def parse_duration(value: Any) -> float:
    """``30m`` -> 1800.0; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 5m, 1h")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; write it like 500ms, 30s, 5m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
# in the JSON Schema a duration is what the file may say: seconds as a number, or text such as 30s, 5m, 1h
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or a number with a unit: 500ms, 30s, 5m, 1h, 1d",
        }
    ),
]
_STRICT = ConfigDict(extra="forbid", frozen=True)
MAX_RATE = 1_000_000.0  # requests per second a limit may allow
MAX_CONCURRENT = 100_000


# the headers a segment may match: set by the gateway after authentication, never by the client (docs/security.md)
SEGMENT_HEADERS = ("x-flow-segment", "x-flow-user")
MAX_SEGMENT_VALUES = 1000
MAX_SEGMENT_VALUE = 256
MAX_STEPS = 20  # steps a progressive canary may take
MAX_STEP_INTERVAL = 30 * 86400.0  # the longest a step may be held


class SegmentMatch(BaseModel):
    """Which requests a segment takes: those whose ``header`` (X-Flow-Segment or X-Flow-User) is one of ``values``."""

    model_config = _STRICT

    header: str = Field(description="the header matched: X-Flow-Segment or X-Flow-User (set by the gateway)")
    values: list[Annotated[str, Field(min_length=1, max_length=MAX_SEGMENT_VALUE)]] = Field(
        min_length=1, max_length=MAX_SEGMENT_VALUES, description="the header's values this segment takes"
    )

    @field_validator("header")
    @classmethod
    def _trusted(cls, value: str) -> str:
        if value.lower() not in SEGMENT_HEADERS:
            raise ValueError(
                f"a segment matches X-Flow-Segment or X-Flow-User (headers the gateway sets), not {value!r}"
            )
        return value.lower()


# how a shadow compares the candidate's answer with the primary's (docs/experiments.md, "Shadow and judge")
SHADOW_SCORERS = ("exact", "contains", "json_schema", "similarity")
JUDGE_PREFIX = "judge:"
SHADOW_SCORER_PATTERN = r"^(exact|contains|json_schema|similarity|judge:[^\s]{1,500})$"
MAX_SHADOWS = 4  # candidates one route entry may shadow
MAX_SHADOW_SCHEMA_BYTES = 16 * 1024


class ShadowBudget(BaseModel):
    """What one shadow may spend: candidate runs per second (shared by every replica), and tokens (the candidate's
    and its judge's) per window. Past either, a shadow run is dropped and counted, never queued."""

    model_config = _STRICT

    requests_per_second: float = Field(
        default=1.0, gt=0, le=MAX_RATE, description="candidate runs per second, shared by all replicas"
    )
    tokens: int | None = Field(
        default=None, ge=1, le=10**12, description="tokens the candidate and its judge may spend per window"
    )
    window: Duration = Field(default=3600.0, le=31 * 86400.0, description="the token budget's window (at most 31 days)")


class Shadow(BaseModel):
    """A candidate ref run on a share of a route entry's requests, off the response path: its answer is never sent,
    only compared with the answer that was, by ``scorer``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    ref: Annotated[str, AfterValidator(check_ref), Field(max_length=MAX_REF_NAME)] = Field(
        description="the candidate: a tag or branch (a flow-scoped tag is tried first)"
    )
    share: float = Field(gt=0, le=100, description="the percentage of the entry's requests also run on the candidate")
    scorer: Annotated[str, Field(pattern=SHADOW_SCORER_PATTERN)] = Field(
        description="exact, contains, json_schema, similarity, or judge: and a rubric file of the repository"
        " (judge:evals/helpful.md)"
    )
    answer_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="for json_schema: the JSON Schema the candidate's answer must meet",
    )
    budget: ShadowBudget = Field(default_factory=ShadowBudget, description="what the shadow may spend")

    @property
    def rubric(self) -> str | None:
        """The rubric file a judge scorer names, relative to the repository's root."""
        return self.scorer.removeprefix(JUDGE_PREFIX) if self.scorer.startswith(JUDGE_PREFIX) else None


def _one_or_many(value: Any) -> Any:
    """``shadow:`` names one candidate (a mapping) or a list of them."""
    return [value] if isinstance(value, dict) else value


class RouteTarget(BaseModel):
    """A git ref (tag or branch) and its share of the traffic, relative to the route's other refs; or, with
    ``match``, a segment: the ref that serves the requests the match selects, before the weights are drawn."""

    model_config = _STRICT

    ref: Annotated[str, AfterValidator(check_ref), Field(max_length=MAX_REF_NAME)] = Field(
        description="a tag or branch; a flow-scoped tag (support-bot/stable) is tried first"
    )
    weight: float = Field(
        default=0.0, ge=0, description="the ref's share of new traffic, relative to the route's other weights"
    )
    match: SegmentMatch | None = Field(
        default=None, description="a segment: the requests it selects go to this ref, before the weights are drawn"
    )
    shadow: Annotated[list[Shadow], BeforeValidator(_one_or_many), Field(max_length=MAX_SHADOWS)] = Field(
        default_factory=list,
        description="a candidate (or a list of them) run on a share of this ref's requests: its answers are scored"
        " against this ref's, never sent",
    )
    steps: list[Annotated[float, Field(ge=1, le=100)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STEPS,
        description="a progressive canary: its share of the route's traffic (percent) at each step, increasing;"
        " the server moves to the next step while the analysis holds",
    )
    interval: Duration | None = Field(
        default=None,
        le=MAX_STEP_INTERVAL,
        description="a progressive canary holds each step at least this long (default: the analysis window)",
    )

    @model_validator(mode="after")
    def _weighted_or_matched(self) -> RouteTarget:
        if "weight" not in self.model_fields_set and self.match is None and self.steps is None:
            raise ValueError(
                "a route entry needs a weight (its share of the traffic) or a match (a segment), or steps (a"
                " progressive canary)"
            )
        return self


class FeedbackGate(BaseModel):
    """A feedback key the canary must not do worse on than the primary (experiments/posterior.py): the canary is
    aborted once each arm has ``min_sample`` scores of ``key`` and the primary beats it with a probability of at
    least ``min_probability``."""

    model_config = _STRICT

    key: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="the feedback key judged (thumbs, helpful, ...)"
    )
    min_probability: float = Field(
        default=0.9,
        ge=0.5,
        lt=1,
        description="the probability that the primary is better, on this key, at which the canary is aborted",
    )
    min_sample: int = Field(
        default=30, ge=1, le=1_000_000, description="scores of the key each arm needs before it is judged"
    )


class Analysis(BaseModel):
    """Thresholds that abort a canary: every ref of a route but the first is guarded."""

    model_config = _STRICT

    window: Duration = Field(default=60.0, description="the span of traffic each verdict judges")
    min_requests: int = Field(
        default=20, ge=1, description="requests a canary serves in the window before it is judged"
    )
    max_error_rate: float = Field(
        default=0.05, ge=0, le=1, description="the canary's share of failed requests in the window that aborts it"
    )
    max_p99_ms: float = Field(
        default=3000, gt=0, description="the canary's 99th percentile latency (ms) in the window that aborts it"
    )
    # a count, so that traffic a client adds cannot dilute a broken canary below the error rate
    max_failures: int = Field(
        default=25, ge=1, description="failures of the canary its primary did not share, in the window, that abort it"
    )
    feedback: FeedbackGate | None = Field(
        default=None, description="a feedback key on which the canary must not do worse than the primary"
    )


class Rate(BaseModel):
    """Requests and runs at once, for one flow, one ref of it or one user of it: shared by every replica through the
    state store. A key left out is not limited."""

    model_config = _STRICT

    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=MAX_RATE,
        description="requests per second, shared by all replicas (a sliding window); 0.5 is one every two seconds",
    )
    concurrent: int | None = Field(
        default=None, ge=1, le=MAX_CONCURRENT, description="runs at once (a stream counts until its end)"
    )


class TokenBudget(BaseModel):
    """Tokens the models of a flow may spend in a window (input and output, as the providers report them)."""

    model_config = _STRICT

    budget: int = Field(ge=1, le=10**12, description="tokens (input and output) the flow's models may spend per window")
    window: Duration = Field(default=3600.0, le=31 * 86400.0, description="the budget's window (at most 31 days)")


class RefLimits(Rate):
    """The limits of the requests one ref of a flow serves (a canary, say), on top of the flow's."""

    tokens: TokenBudget | None = Field(default=None, description="a token budget over a window")


class FlowLimits(RefLimits):
    """A flow's limits (``limits:`` in the routing file): on all its requests, on each user's (when a request names
    one), and on the requests each ref serves."""

    per_user: Rate | None = Field(default=None, description="the limits of each user's requests (X-Flow-User)")
    refs: dict[Annotated[str, AfterValidator(check_ref)], RefLimits] = Field(
        default_factory=dict, max_length=100, description="the limits of the requests each ref serves, by ref name"
    )

    def for_ref(self, flow: str, ref: str | None) -> RefLimits | None:
        """The limits of ``ref`` (as a route names it, or flow-scoped: ``support-bot/stable``), if it has any."""
        if ref is None or not self.refs:
            return None
        return self.refs.get(ref) or self.refs.get(ref.removeprefix(f"{flow}/"))


CacheAllowance = Literal["temperature", "history"]


class CacheRule(BaseModel):
    """A flow's response cache (``cache:`` in the routing file): answers kept per version of the flow and input."""

    model_config = _STRICT

    ttl: Duration = Field(default=600.0, le=30 * 86400.0, description="how long an answer is kept (at most 30 days)")
    allow: list[CacheAllowance] = Field(
        default_factory=list,
        max_length=2,
        description="cache although a model samples (temperature) or the flow keeps a conversation (history)",
    )


class EvalThreshold(BaseModel):
    """What `gitops-flow eval` (and the check that runs it) holds a change to, per scorer of each dataset: a score
    may fall by at most ``-min_delta`` from the base's, and must be at least ``min_score``."""

    model_config = _STRICT

    min_delta: float | None = Field(default=None, ge=-1, le=1)
    min_score: float | None = Field(default=None, ge=0, le=1)


class EvalRules(EvalThreshold):
    """``evals:`` in the routing file: the threshold of every flow, and under ``flows`` a flow's own instead."""

    flows: dict[str, EvalThreshold] = Field(default_factory=dict, max_length=1000)

    def for_flow(self, name: str) -> EvalThreshold:
        return self.flows.get(name) or self


MAX_OUTPUT_SCORES = 20  # scores a flow takes from its own output (as many as a flow's feedback keys by default)


class OutputScore(BaseModel):
    """A score the flow gives its own runs: the number or true/false a field of its output node holds, kept as
    feedback of key ``key`` on each run (docs/experiments.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    key: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="the feedback key the score is kept under"
    )
    source: str = Field(
        alias="from",
        pattern=r"^[A-Za-z0-9_.-]{1,128}\.[A-Za-z0-9_-]{1,128}$",
        description="<node>.<field>: the field of the flow's output node (its answer) that holds the score",
    )

    @property
    def node(self) -> str:
        return self.source.rpartition(".")[0]

    @property
    def field(self) -> str:
        return self.source.rpartition(".")[2]


class ExperimentRules(BaseModel):
    """A flow's experiment (``experiments:`` in the routing file): the scores it takes from its own output."""

    model_config = _STRICT

    scores: list[OutputScore] = Field(
        default_factory=list,
        max_length=MAX_OUTPUT_SCORES,
        description="fields of the flow's answer kept as feedback on each run: {key, from: <node>.<field>}",
    )


class RoutingConfig(BaseModel):
    """The whole routing file; every key optional. Without the file, the branch head serves all traffic."""

    model_config = _STRICT

    flows_dir: str = Field(default="flows", description="the folder of the flow documents, in the repository")
    routes: dict[str, list[RouteTarget]] = Field(
        default_factory=dict,
        description="per flow (or `default`: every flow without a route), the refs that serve it; the first is the"
        " primary, the others canaries",
    )
    sticky: Literal["user", "none"] = Field(
        default="user", description="`user`: a user (X-Flow-User) always lands on the same ref; `none`: random"
    )
    session_ttl: Duration = Field(
        default=1800.0, description="a session stays on its version until it is idle this long"
    )
    analysis: Analysis | None = Field(
        default=None, description="the canary guard's thresholds; without it, canaries are not guarded"
    )
    yanked: list[Annotated[str, Field(pattern=YANKED_SHA)]] = Field(
        default_factory=list,
        max_length=1000,
        description="commits that must never serve again (a leaked secret, a harmful prompt): full or short"
        " (7+ hex digits) shas",
    )
    limits: dict[str, FlowLimits] = Field(
        default_factory=dict,
        max_length=1000,
        description="guardrails per flow (`default`: every flow without an entry)",
    )
    cache: dict[str, CacheRule] = Field(
        default_factory=dict, max_length=1000, description="the flows whose answers are cached, and for how long"
    )
    evals: EvalRules | None = Field(
        default=None, description="thresholds of `gitops-flow eval` that fail a pull request's check"
    )
    experiments: dict[str, ExperimentRules] = Field(
        default_factory=dict, max_length=1000, description="per flow, the scores it takes from its own output"
    )

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The published JSON Schema of the routing file (kept equal to schema/gitops-flow.v1.json by a test)."""
        schema = cls.model_json_schema()
        shadow = schema["$defs"]["RouteTarget"]["properties"]["shadow"]
        many = {key: shadow.pop(key) for key in ("type", "items", "maxItems")}
        shadow["anyOf"] = [many["items"], many]  # one candidate, or a list of them (_one_or_many)
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}

    def rubrics(self) -> list[str]:
        """The rubric files the routes' shadows' judges name, each once, in the file's order."""
        found = [s.rubric for targets in self.routes.values() for t in targets for s in t.shadow if s.rubric]
        return list(dict.fromkeys(found))

    def limits_of(self, flow: str) -> FlowLimits | None:
        return self.limits.get(flow) or self.limits.get(DEFAULT_ROUTE)

    def is_yanked(self, sha: str) -> bool:
        return any(sha.startswith(prefix.lower()) for prefix in self.yanked)

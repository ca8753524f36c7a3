"""The repository's routing file, `gitops-flow.yaml`: which refs serve which flows, by weight, and the canary guard."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

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


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
_STRICT = ConfigDict(extra="forbid", frozen=True)
MAX_RATE = 1_000_000.0  # requests per second a limit may allow
MAX_CONCURRENT = 100_000


# the headers a segment may match: set by the gateway after authentication, never by the client (docs/security.md)
SEGMENT_HEADERS = ("x-flow-segment", "x-flow-user")
MAX_SEGMENT_VALUES = 1000
MAX_SEGMENT_VALUE = 256


class SegmentMatch(BaseModel):
    """Which requests a segment takes: those whose ``header`` (X-Flow-Segment or X-Flow-User) is one of ``values``."""

    model_config = _STRICT

    header: str
    values: list[Annotated[str, Field(min_length=1, max_length=MAX_SEGMENT_VALUE)]] = Field(
        min_length=1, max_length=MAX_SEGMENT_VALUES
    )

    @field_validator("header")
    @classmethod
    def _trusted(cls, value: str) -> str:
        if value.lower() not in SEGMENT_HEADERS:
            raise ValueError(
                f"a segment matches X-Flow-Segment or X-Flow-User (headers the gateway sets), not {value!r}"
            )
        return value.lower()


class RouteTarget(BaseModel):
    """A git ref (tag or branch) and its share of the traffic, relative to the route's other refs; or, with
    ``match``, a segment: the ref that serves the requests the match selects, before the weights are drawn."""

    model_config = _STRICT

    ref: Annotated[str, AfterValidator(check_ref), Field(max_length=MAX_REF_NAME)]
    weight: float = Field(default=0.0, ge=0)
    match: SegmentMatch | None = None

    @model_validator(mode="after")
    def _weighted_or_matched(self) -> RouteTarget:
        if "weight" not in self.model_fields_set and self.match is None:
            raise ValueError("a route entry needs a weight (its share of the traffic) or a match (a segment)")
        return self


class Analysis(BaseModel):
    """Thresholds that abort a canary: every ref of a route but the first is guarded."""

    model_config = _STRICT

    window: Duration = 60.0
    min_requests: int = Field(default=20, ge=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float = Field(default=3000, gt=0)
    # failures of the canary that its primary did not share, in the window: a count, so that traffic a client adds
    # cannot dilute a broken canary below the error rate
    max_failures: int = Field(default=25, ge=1)


class Rate(BaseModel):
    """Requests and runs at once, for one flow, one ref of it or one user of it: shared by every replica through the
    state store. A key left out is not limited."""

    model_config = _STRICT

    # a number of requests per second, shared by all replicas; 0.5 is one every two seconds (a sliding window)
    requests_per_second: float | None = Field(default=None, gt=0, le=MAX_RATE)
    concurrent: int | None = Field(default=None, ge=1, le=MAX_CONCURRENT)  # runs at once, streams until their end


class TokenBudget(BaseModel):
    """Tokens the models of a flow may spend in a window (input and output, as the providers report them)."""

    model_config = _STRICT

    budget: int = Field(ge=1, le=10**12)
    window: Duration = Field(default=3600.0, le=31 * 86400.0)


class RefLimits(Rate):
    """The limits of the requests one ref of a flow serves (a canary, say), on top of the flow's."""

    tokens: TokenBudget | None = None


class FlowLimits(RefLimits):
    """A flow's limits (``limits:`` in the routing file): on all its requests, on each user's (when a request names
    one), and on the requests each ref serves."""

    per_user: Rate | None = None
    refs: dict[Annotated[str, AfterValidator(check_ref)], RefLimits] = Field(default_factory=dict, max_length=100)

    def for_ref(self, flow: str, ref: str | None) -> RefLimits | None:
        """The limits of ``ref`` (as a route names it, or flow-scoped: ``support-bot/stable``), if it has any."""
        if ref is None or not self.refs:
            return None
        return self.refs.get(ref) or self.refs.get(ref.removeprefix(f"{flow}/"))


CacheAllowance = Literal["temperature", "history"]


class CacheRule(BaseModel):
    """A flow's response cache (``cache:`` in the routing file): answers kept per version of the flow and input."""

    model_config = _STRICT

    ttl: Duration = Field(default=600.0, le=30 * 86400.0)
    # cached although a model samples (a temperature that is not 0) or the flow keeps a conversation
    allow: list[CacheAllowance] = Field(default_factory=list, max_length=2)


class RoutingConfig(BaseModel):
    """The whole routing file; every key optional. Without the file, the branch head serves all traffic."""

    model_config = _STRICT

    flows_dir: str = "flows"
    routes: dict[str, list[RouteTarget]] = Field(default_factory=dict)
    sticky: Literal["user", "none"] = "user"
    session_ttl: Duration = 1800.0
    analysis: Analysis | None = None
    # commits that must never serve again (a leaked secret, a harmful prompt): full or short (7+ hex digits) shas
    yanked: list[Annotated[str, Field(pattern=YANKED_SHA)]] = Field(default_factory=list, max_length=1000)
    # guardrails per flow ("default": every flow without an entry) and the flows whose answers are cached
    limits: dict[str, FlowLimits] = Field(default_factory=dict, max_length=1000)
    cache: dict[str, CacheRule] = Field(default_factory=dict, max_length=1000)

    def limits_of(self, flow: str) -> FlowLimits | None:
        return self.limits.get(flow) or self.limits.get(DEFAULT_ROUTE)

    def is_yanked(self, sha: str) -> bool:
        return any(sha.startswith(prefix.lower()) for prefix in self.yanked)

"""Settings: the operator's configuration as one model, each field with its type, bounds and doc; resolved once, by
the command line, from flags, the environment, an env file and the defaults (``Settings.resolve``)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gitops_flow.exceptions import ConfigError
from gitops_flow.githost.repos import API_URL, check_repo
from gitops_flow.githost.sinks import SinkError, SinkSpec, load_sinks
from gitops_flow.security.egress import TAVILY_URL, EgressLimits, EgressPolicy
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.providers import default_secret_names

# which versions an explicit pin (X-Flow-Version) may reach: none; the versions the flow's refs serve now; or any
# version that served as the branch head or through a ref and is still on the branch
PinPolicy = Literal["off", "current", "history"]
ENV_PREFIX = "GITOPS_FLOW_"
LogFormat = Literal["text", "json"]
# which executor runs flows (docs/server.md, "Runtime"): the lean program unless a run needs LangChain's callbacks,
# or LangChain's runnables always
Runtime = Literal["lean", "langchain"]
# where the Retrievers' indexes live (docs/components.md, "Retriever backends"): in each process's memory, or on
# disk in an embedded sqlite-vec file per process (the extra gitops-flow[sqlite-vec]), for large corpora
VectorStore = Literal["memory", "sqlite-vec"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
# where a setting's value came from, lowest precedence first: a flag beats the environment, which beats the env file
Source = Literal["default", "file", "env", "flag"]
MAX_WORKERS = 256
MAX_RUNS = 1_000_000  # answered runs the ledger keeps by default (GITOPS_FLOW_FEEDBACK_MAX_RUNS)
MEMORY_MAX_RUNS = 100_000  # with memory://: about 460 bytes each in the server's own memory, 46 MB
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")  # the names a client on this machine reaches a loopback server by
# settings that no GITOPS_FLOW_<NAME> variable sets: notifications come from GITOPS_FLOW_NOTIFY_* (githost/sinks.py)
# and LangSmith's tracing from its own variables; load_entry_points is the embedding program's choice
_NOT_FROM_ENV = frozenset({"notifications", "langsmith_tracing", "load_entry_points"})


def _env(name: str, field: str) -> Any:
    """A field read from ``GITOPS_FLOW_<name>`` rather than from its own upper-cased name (kept for the names the
    docs have always used); the field's own name still works as a keyword."""
    return AliasChoices(field, ENV_PREFIX + name)


CommaSeparated = Annotated[tuple[str, ...], NoDecode]  # `A,B` in the environment, not JSON


class Settings(BaseSettings):
    """Everything the process is configured with; tests construct it directly, and constructing it never reads the
    environment (``resolve`` and ``from_env`` do, given it explicitly)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", populate_by_name=True, env_ignore_empty=True
    )

    components_file: Path | None = Field(
        default=None, validation_alias=_env("COMPONENTS", "components_file"), description="operator components (YAML)"
    )
    load_entry_points: bool = Field(default=True, description="load components that installed packages declare")

    # the runtime server
    repo_url: str | None = Field(
        default=None, validation_alias=_env("REPO", "repo_url"), description="the flow repository: a URL or a path"
    )
    branch: str = Field(default="main", min_length=1, description="the branch served")
    host: str = Field(default="127.0.0.1", description="the address to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="the port to listen on")
    poll_interval: float = Field(default=30.0, gt=0, description="seconds between fetches when no webhook comes")
    workers: int | None = Field(
        default=None, ge=1, le=MAX_WORKERS, description="processes serving one port; none: one per available core"
    )
    fetch_timeout: float = Field(default=30.0, gt=0, le=3600, description="seconds one fetch may take")
    state: str = Field(
        default="sqlite://", description="sqlite:///PATH, memory:// or redis://; an empty sqlite path: data_dir"
    )
    data_dir: Path = Field(default=Path(".gitops-flow"), description="where the clone and the state file live")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="a request body's size")
    keep_versions: int = Field(default=10, ge=1, le=1000, description="newest ready versions kept built")
    pins: PinPolicy = Field(default="current", description="which versions X-Flow-Version may reach")
    rebuilds_kept: int = Field(
        default=8, ge=1, le=1000, description="old versions rebuilt for pins and sessions, kept at once"
    )
    run_tests: bool = Field(default=True, description="run each flow's tests before it goes live")
    canary_fallback: bool = Field(
        default=True,
        description="retry a canary's failed request on its primary, and count it only when the primary succeeds",
    )
    canary_verifications: int = Field(
        default=8,
        ge=0,
        le=1000,
        description="runs on the primary at once that judge a canary's mid-stream failure or slow answer (0: none)",
    )
    shadow_queue: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="shadow runs waiting for a place, per process; past it a drawn shadow run is dropped and counted",
    )
    shadow_concurrency: int = Field(
        default=2, ge=1, le=1000, description="shadow runs (a candidate and its judge) at once, per process"
    )
    shadow_timeout: float = Field(
        default=60.0, gt=0, le=3600, description="seconds a shadow run (the candidate, then its judge) may take"
    )
    build_timeout: float = Field(default=30.0, gt=0, description="seconds one flow's build may take")
    knowledge_max_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="bytes of documents one Retriever may read (its corpus at one commit)",
    )
    knowledge_max_files: int = Field(default=5_000, ge=1, le=200_000, description="documents one Retriever may read")
    knowledge_max_chunks: int = Field(
        default=50_000,
        ge=1,
        le=2_000_000,
        description="chunks one Retriever may index: each a vector in memory and, with a provider, an embedding paid",
    )
    map_max_items: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="items one Map node may run its body on per run: the most a flow's max_items may say",
    )
    map_max_concurrency: int = Field(
        default=8, ge=1, le=256, description="runs of one Map node's body at once: the most its concurrency may say"
    )
    vector_store: VectorStore = Field(
        default="memory",
        description="where Retrievers' indexes live: memory (in each process), or sqlite-vec (on disk, for large "
        "corpora; needs gitops-flow[sqlite-vec]); flows cannot choose",
    )
    vector_store_path: Path | None = Field(
        default=None,
        description="the folder of the sqlite-vec files (one per process, deleted when it stops); none: "
        "data_dir/vectors",
    )
    embeddings_max_entries: int = Field(
        default=200_000,
        ge=1_000,
        le=100_000_000,
        description="chunk vectors the shared embeddings store keeps, of every model together (memory, SQLite, "
        "Redis); past it, the oldest (memory) or arbitrary ones (SQLite, Redis) are evicted, embedded again if met",
    )
    test_budget: float = Field(
        default=60.0, gt=0, le=3600, description="seconds one flow's tests may take in all, in their own process"
    )
    test_memory_mb: int = Field(
        default=2048, ge=256, le=1024 * 1024, description="address space of the process running one flow's tests"
    )
    test_processes: int = Field(default=2, ge=1, le=64, description="flows built and tested at once (processes)")
    provider_breaker_failures: int = Field(
        default=5,
        ge=0,
        le=10_000,
        description="failed calls (unreachable, 5xx, timeout) to one provider endpoint, across workers and replicas, "
        "within provider_breaker_window that open its circuit (0: no circuit breaker)",
    )
    provider_breaker_window: float = Field(
        default=30.0, ge=1, le=3600, description="seconds over which a provider endpoint's failures are counted"
    )
    provider_breaker_cooldown: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="seconds an open circuit refuses calls at once before one call probes the endpoint again",
    )
    eval_judge_model: str = Field(
        default="",
        max_length=200,
        description="provider:model that scores `judge:` scorers of `gitops-flow eval` (empty: judges are skipped); "
        "its key is read from the provider's variable (OPENAI_API_KEY, ...)",
    )
    eval_judge_base_url: str | None = Field(
        default=None, max_length=2000, description="the judge model's base URL (must be in allowed_base_urls)"
    )
    eval_judge_calls: int = Field(
        default=1000, ge=0, le=100_000, description="calls the judge may make in one `gitops-flow eval` run"
    )
    fake_models: bool = Field(default=False, description="answer every model with a fake (demos, trials)")
    analysis_interval: float = Field(default=1.0, gt=0, description="seconds between the canary guard's ticks")
    freeze_heap: bool = Field(default=True, description="gc.freeze() after each deploy")
    admin_token: SecretStr | None = Field(default=None, description="the token of /admin and the console's actions")
    read_token: SecretStr | None = Field(default=None, description="when set, read views need it (or the admin's)")
    webhook_secret: SecretStr | None = Field(
        default=None, description="GitHub's webhook HMAC key: /webhooks/github is off without it"
    )
    gitlab_webhook_token: SecretStr | None = Field(
        default=None, description="GitLab's webhook secret token: /webhooks/gitlab is off without it"
    )
    gitea_webhook_secret: SecretStr | None = Field(
        default=None, description="Gitea's (Forgejo's) webhook HMAC key: /webhooks/gitea is off without it"
    )
    guess_limit: int = Field(
        default=10, ge=1, le=10_000, description="failed token or webhook-secret checks per client address per window"
    )
    guess_window: float = Field(default=60.0, ge=1, le=86_400, description="seconds the failed checks are counted over")
    log_request_text: bool = Field(
        default=False, description="request text (inputs, exception messages quoting them) in log lines"
    )
    max_turn_bytes: int = Field(default=64 * 1024, gt=0, description="one conversation turn's text")
    max_turns: int = Field(default=200, ge=1, description="turns kept per conversation")
    history_ttl: float = Field(default=30 * 86_400.0, gt=0, description="seconds a conversation is kept idle")
    max_conversations: int = Field(
        default=100_000, ge=1, description="conversations kept in all; past it the ones idle longest are deleted"
    )
    max_conversation_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="bytes of all conversations; past it the idlest go"
    )

    # what flows may do with secrets (policy.py); `validate` and `test` read these too, so CI judges as served
    allowed_secrets: CommaSeparated = Field(
        default_factory=default_secret_names,
        validation_alias=_env("SECRETS", "allowed_secrets"),
        description="environment variables flows may read as secrets (comma-separated; NAME or PREFIX_*)",
    )
    allowed_base_urls: CommaSeparated = Field(default=(), description="base URLs a model's key may be sent to")

    # where the tools' outbound requests may go, and what each may take (security/egress.py, docs/security.md)
    allowed_fetch_urls: CommaSeparated = Field(
        default=(),
        description="where HttpRequest, WebSearch and the agent's fetch_url and web_search may send requests "
        "(comma-separated URL prefixes, hosts, *.domains, *, addresses or networks; none: nowhere)",
    )
    egress_timeout: float = Field(
        default=10.0, gt=0, le=600, description="seconds one outbound tool request may take, its redirects included"
    )
    egress_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=100 * 1024 * 1024,
        description="bytes of an outbound tool request's answer read (the rest is cut, and the answer says so)",
    )
    egress_max_redirects: int = Field(default=5, ge=0, le=20, description="redirects an outbound request follows")
    egress_max_requests: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="outbound requests (redirects included) one run of a flow makes, all its tools together",
    )
    web_search_url: str = Field(
        default=TAVILY_URL, max_length=2000, description="the Tavily API WebSearch and web_search ask (its /search)"
    )

    # repository credentials apart from the URL (repo_credentials.py): an HTTPS token, or an SSH deploy key
    git_token: SecretStr | None = Field(default=None, description="an HTTPS token for the repository")
    git_token_file: Path | None = Field(default=None, description="a file holding that token, read at each fetch")
    git_token_user: str = Field(
        default="x-access-token", min_length=1, max_length=100, pattern=r"^[^\s:@/]+$", description="its user name"
    )
    git_ssh_key_file: Path | None = Field(default=None, description="an SSH deploy key for the repository")
    git_known_hosts: Path | None = Field(default=None, description="the SSH host keys trusted")

    # the command line's commands that ask a running server (status, versions, history, experiment, abort, resume)
    server: str = Field(
        default="http://127.0.0.1:8000", description="the server the CLI's status, abort, history... ask (--server)"
    )

    # the loop back to the Git host (commit statuses, deployments) and to the operator's receivers (notifications)
    public_url: str | None = Field(default=None, description="how people reach this server: links of statuses")
    status_url: str = Field(
        default="{url}/ui/history?ref={ref}", description="a status's link: {url} public URL, {sha}, {ref}, {flow}"
    )
    github_token: SecretStr | None = Field(default=None, description="a token for statuses and deployments")
    github_token_file: Path | None = Field(default=None, description="a file holding it, read at each request")
    github_repo: str | None = Field(default=None, description="owner/name; by default read from a github.com repo")
    github_api: str = Field(default=API_URL, description="GitHub's API (GitHub Enterprise: its /api/v3)")
    github_deployments: bool = Field(default=True, description="record deployments on GitHub as well as statuses")
    notifications: tuple[SinkSpec, ...] = Field(
        default=(), description="receivers, from GITOPS_FLOW_NOTIFY_URL (and its companions) or GITOPS_FLOW_NOTIFY_FILE"
    )
    outbound_backoff: float = Field(default=1.0, gt=0, description="seconds before an outbound call's first retry")
    outbound_attempts: int = Field(default=8, ge=1, le=50, description="tries of one outbound call")

    # HTTP bounds: what one client may make the server hold or do (docs/server.md, "Limits")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, description="a request's line and headers")
    max_headers: int = Field(default=100, ge=8, description="headers in one request")
    header_timeout: float = Field(default=10.0, gt=0, description="seconds from a request's first byte to its headers")
    body_timeout: float = Field(default=30.0, gt=0, description="seconds from the headers to the body's last byte")
    keep_alive_timeout: float = Field(default=5.0, gt=0, le=3600, description="seconds an idle connection stays")
    send_timeout: float = Field(default=60.0, gt=0, description="seconds a client may leave a full buffer unread")
    max_connections: int = Field(default=1000, ge=1, description="open connections per worker")
    max_client_connections: int = Field(
        default=64, ge=1, description="connections from one client address (IPv6: its /64); a trusted proxy's free"
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="reverse proxies' addresses or networks (comma-separated): their X-Forwarded-For names the client",
    )
    max_batch_inputs: int = Field(default=100, ge=1, description="inputs of one batch")
    batch_concurrency: int = Field(default=8, ge=1, description="runs of one batch at once")
    allowed_hosts: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        default=None, description="Host names served (comma-separated); none: loopback names on a loopback address"
    )

    # observability and guardrails: logs, token metrics, the limits' counters and the response cache
    log_format: LogFormat = Field(default="text", description="log lines as text or one JSON object each")
    log_level: LogLevel = Field(default="info", description="the lowest level logged")
    access_log: bool = Field(default=True, description="a log line per answered request")
    sse_ping_interval: float = Field(
        default=15.0, ge=0, le=3600, description="seconds of silence before a stream's keep-alive (0: none)"
    )
    token_metrics: bool = Field(default=False, description="count every run's tokens, not only observed ones")
    runtime: Runtime = Field(default="lean", description="lean, or LangChain's runnables for every run")
    langsmith_tracing: bool = Field(default=False, description="LangSmith traces runs (from LANGSMITH_TRACING)")
    limits_fail: Literal["open", "closed"] = Field(default="open", description="while the limits' store is down")
    limit_lease_ttl: float = Field(default=600.0, gt=0, description="seconds a run holds its place at most")
    budget_max_tokens: int = Field(
        default=4096, ge=1, le=10_000_000, description="answer tokens a budget reserves for a model without max_tokens"
    )
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, description="answers kept in this process's memory")
    cache_max_entry_bytes: int = Field(default=256 * 1024, ge=0, description="a larger answer is not cached")
    cache_max_entries: int = Field(default=100_000, ge=1, description="cached answers, in memory or in Redis")

    # experiments (docs/experiments.md): feedback on runs, its bounds, and when a verdict names a winner
    feedback_window: float = Field(
        default=86400.0, gt=0, le=90 * 86400.0, description="seconds after its answer that a run takes feedback"
    )
    feedback_max_runs: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="answered runs remembered for feedback at once (default 1,000,000; 100,000 with memory://)",
    )
    feedback_retention: float = Field(
        default=30 * 86400.0, gt=0, le=366 * 86400.0, description="seconds a feedback score is kept"
    )
    feedback_max_keys: int = Field(default=20, ge=1, le=1000, description="feedback keys per flow")
    feedback_max_scores: int = Field(
        default=100_000, ge=1, le=10_000_000, description="feedback scores kept per flow (the oldest go first)"
    )
    feedback_max_bytes: int = Field(default=8192, ge=256, le=1024 * 1024, description="a feedback body's size")
    feedback_rate: float = Field(
        default=5.0, gt=0, le=10_000, description="feedback per second from one user of a flow (all workers)"
    )
    experiment_min_sample: int = Field(
        default=100, ge=1, le=10_000_000, description="scores per arm and key before a verdict names a winner"
    )
    experiment_confidence: float = Field(
        default=0.95, ge=0.5, lt=1, description="the chance to be better a winner needs"
    )
    model_prices: CommaSeparated = Field(
        default=(),
        description="USD per million input/output tokens by model, the report's cost (MODEL=IN/OUT, comma-separated)",
    )
    experiment_cache: float = Field(
        default=5.0, ge=0, le=300, description="seconds a flow's experiment report is reused while no feedback comes"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment is read where it is handed over: resolve()

    @field_validator("github_repo")
    @classmethod
    def _github_repo(cls, value: str | None) -> str | None:
        return check_repo(value) if value is not None else None

    @field_validator("public_url", "github_api", "server", "web_search_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value is not None else None

    @field_validator("allowed_secrets", "allowed_base_urls", "allowed_fetch_urls", "model_prices", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("allowed_secrets")
    @classmethod
    def _secret_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        SecretPolicy(value)  # a wrong entry is a settings error at start, naming the entry
        return value

    @field_validator("model_prices")
    @classmethod
    def _prices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        price_table(value)  # a wrong entry is a settings error at start, naming the entry
        return value

    @field_validator("allowed_base_urls")
    @classmethod
    def _base_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        SecretPolicy((), value)
        return value

    @field_validator("allowed_fetch_urls")
    @classmethod
    def _fetch_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        EgressPolicy.parse(value)  # a wrong entry is a settings error at start, naming the entry
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        """``GITOPS_FLOW_ALLOWED_HOSTS`` is a comma-separated list; names are matched in lower case."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            names = tuple(str(v).strip().lower().removeprefix("[").removesuffix("]") for v in value)
            for name in names:
                wildcard = name == "*" or (name.startswith("*.") and "*" not in name[2:])
                if not name or any(c in name for c in " /@") or ("*" in name and not wildcard):
                    raise ValueError(f"{name!r} is not a host name, '*.domain' or '*'")
            return names
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        """``GITOPS_FLOW_TRUSTED_PROXIES`` is a comma-separated list of addresses or networks (CIDR)."""
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            for entry in value:
                try:
                    ipaddress.ip_network(str(entry), strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network (such as 10.0.0.0/8)") from None
            return tuple(str(entry) for entry in value)
        return value

    def secret_policy(self) -> SecretPolicy:
        """The SecretPolicy these settings describe, with their egress policy."""
        return SecretPolicy(self.allowed_secrets, self.allowed_base_urls, egress=self.egress_policy())

    def egress_policy(self) -> EgressPolicy:
        """Where the tools' outbound requests may go, and their bounds."""
        limits = EgressLimits(
            timeout=self.egress_timeout,
            max_bytes=self.egress_max_bytes,
            max_redirects=self.egress_max_redirects,
            max_requests=self.egress_max_requests,
        )
        return EgressPolicy.parse(self.allowed_fetch_urls, limits, self.web_search_url)

    def worker_count(self) -> int:
        """How many worker processes `serve` starts: ``workers`` when set; else one per core available to this
        process (its CPU affinity, as a container's cpuset sets it), and one with the memory:// store, which
        processes cannot share (`--workers N` with it is refused by `serve`)."""
        if self.workers is not None:
            return self.workers
        if self.state.startswith("memory:"):
            return 1
        return max(1, len(os.sched_getaffinity(0)))

    def vector_folder(self) -> Path:
        """The folder of the sqlite-vec files: ``vector_store_path``, or ``data_dir/vectors``."""
        return self.vector_store_path or self.data_dir / "vectors"

    def prices(self) -> dict[str, tuple[float, float]]:
        """``model_prices`` as model -> (USD per million input tokens, per million output tokens)."""
        return price_table(self.model_prices)

    def runs_kept(self) -> int:
        """How many answered runs the ledger keeps: ``feedback_max_runs`` when set; else a million, or 100,000 with
        the memory:// store, where each takes about 460 bytes of the server's own memory (docs/experiments.md)."""
        if self.feedback_max_runs is not None:
            return self.feedback_max_runs
        return MEMORY_MAX_RUNS if self.state.startswith("memory:") else MAX_RUNS

    def hosts(self) -> tuple[str, ...]:
        """The Host names requests may carry (ports are not compared): ``allowed_hosts`` when set; else, on a
        loopback address, the loopback names, so a web page cannot reach this server by a name it rebinds to
        127.0.0.1 (DNS rebinding); else any (``*``): a server on a network address is reached by names only its
        operator knows, and a gateway in front of it checks them."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return LOOPBACK_HOSTS if _loopback(self.host) else ("*",)

    @classmethod
    def resolve(
        cls, environ: Mapping[str, str], *, env_file: Path | None = None, flags: Mapping[str, object] | None = None
    ) -> Resolved:
        """The settings in force and where each came from: a flag (``flags``, None meaning not given) beats the
        environment, which beats ``env_file`` (KEY=VALUE lines, as the environment), which beats the default.
        Raises ConfigError naming the setting, its variable and what is wrong."""
        if env_file is not None and not env_file.is_file():
            raise ConfigError(f"env file {env_file}: no such file")
        layers: list[tuple[Source, dict[str, Any]]] = []
        if env_file is not None:
            layers.append(("file", _from_source(DotEnvSettingsSource(cls, env_file=env_file))))
        layers.append(("env", _from_environ(environ)))
        extra: dict[str, Any] = {}
        try:
            sinks = load_sinks(environ)
        except SinkError as exc:
            raise ConfigError(str(exc)) from None
        if sinks:
            extra["notifications"] = sinks
        if langsmith_tracing(environ):
            extra["langsmith_tracing"] = True
        layers.append(("env", extra))
        layers.append(("flag", {k: v for k, v in (flags or {}).items() if v is not None}))
        values: dict[str, Any] = {}
        sources: dict[str, Source] = {}
        for source, found in layers:
            for name, value in found.items():
                values[name] = value
                sources[name] = source
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "?"
            where = {"flag": "flag", "file": f"{env_file}", "env": env_name(name)}.get(sources.get(name, ""), name)
            raise ConfigError(f"setting {name} ({where}): {first['msg']}") from None
        return Resolved(settings, {name: sources.get(name, "default") for name in cls.model_fields})

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from ``GITOPS_FLOW_*`` variables; explicit ``overrides`` (command-line flags) win. Notification
        sinks come from ``GITOPS_FLOW_NOTIFY_FILE`` and ``GITOPS_FLOW_NOTIFY_*`` (githost/sinks.py); raises
        ConfigError for a wrong one."""
        return cls.resolve(environ, flags=overrides).settings


@dataclass(frozen=True, slots=True)
class Resolved:
    """Settings and the source of each field's value (``gitops-flow settings`` shows both)."""

    settings: Settings
    sources: Mapping[str, Source]

    def rows(self) -> list[dict[str, Any]]:
        """One row per setting: its name, variable, effective value (secrets masked), source and doc."""
        rows = []
        for name, info in Settings.model_fields.items():
            value = getattr(self.settings, name)
            rows.append(
                {
                    "name": name,
                    "env": env_name(name),
                    "value": _shown(value),
                    "source": self.sources[name],
                    "doc": info.description or "",
                }
            )
        return rows


def env_name(field: str) -> str | None:
    """The ``GITOPS_FLOW_*`` variable that sets ``field`` (None for the few no single variable sets)."""
    if field in _NOT_FROM_ENV:
        return None
    info: FieldInfo = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return next(str(c) for c in alias.choices if str(c).startswith(ENV_PREFIX))
    return ENV_PREFIX + field.upper()


def _shown(value: object) -> object:
    """A value as `gitops-flow settings` prints it: secrets masked, paths and tuples as JSON would have them."""
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, SinkSpec):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return [_shown(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """What ``environ`` sets, by field name: each field's variable (``env_name``), an empty value as not set. The
    values stay text: the model's validation reads them as it reads any other source."""
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        variable = env_name(name)
        if variable is not None and environ.get(variable):
            values[name] = environ[variable]
    return values


def _from_source(source: DotEnvSettingsSource) -> dict[str, Any]:
    """What one source sets, by field name (aliases folded back to their field); fields no variable sets left out."""
    found = source()
    by_alias = {env_name(name): name for name in Settings.model_fields if env_name(name)}
    values: dict[str, Any] = {}
    for key, value in found.items():
        name = key if key in Settings.model_fields else by_alias.get(key)
        if name is None or name in _NOT_FROM_ENV:
            continue
        values[name] = value
    return values


def langsmith_tracing(environ: Mapping[str, str]) -> bool:
    """Whether LangSmith traces LangChain's runs in a process with ``environ``: its own rule (langsmith.utils
    ``tracing_is_enabled``): the first non-blank of ``LANGSMITH_TRACING_V2``, ``LANGCHAIN_TRACING_V2``, else of
    ``LANGSMITH_TRACING``, ``LANGCHAIN_TRACING``, is exactly ``true``."""

    def first(name: str) -> str | None:
        for namespace in ("LANGSMITH", "LANGCHAIN"):
            value = environ.get(f"{namespace}_{name}")
            if value is not None and value.strip():
                return value
        return None

    value = first("TRACING_V2")
    return (value if value is not None else first("TRACING") or "") == "true"


def _loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


MAX_PRICES = 200  # models in the price table


def price_table(entries: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``MODEL=IN/OUT`` entries (USD per million input and output tokens) as a table; raises ValueError naming the
    first entry that is not one."""
    if len(entries) > MAX_PRICES:
        raise ValueError(f"at most {MAX_PRICES} model prices, not {len(entries)}")
    table: dict[str, tuple[float, float]] = {}
    for entry in entries:
        model, _, prices = entry.rpartition("=")
        given, _, taken = prices.partition("/")
        try:
            price = (float(given), float(taken))
        except ValueError:
            price = (-1.0, -1.0)
        if not model.strip() or not all(0 <= p <= 1e6 for p in price):
            raise ValueError(f"{entry!r} is not MODEL=IN/OUT, USD per million input and output tokens (0.15/0.60)")
        table[model.strip()] = price
    return table

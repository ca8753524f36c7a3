"""Settings: the operator's configuration, built once from the environment by the command line."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gitops_flow.exceptions import ConfigError
from gitops_flow.githost.repos import API_URL, check_repo
from gitops_flow.githost.sinks import SinkError, SinkSpec, load_sinks
from gitops_flow.providers import default_secret_names
from gitops_flow.secretpolicy import SecretPolicy

# which versions an explicit pin (X-Flow-Version) may reach: none; the versions the flow's refs serve now; or any
# version that served as the branch head or through a ref and is still on the branch
PinPolicy = Literal["off", "current", "history"]

ENV_PREFIX = "GITOPS_FLOW_"
# environment variable (after the prefix) -> setting
_FROM_ENV = {
    "COMPONENTS": "components_file",
    "REPO": "repo_url",
    "BRANCH": "branch",
    "STATE": "state",
    "DATA_DIR": "data_dir",
    "POLL_INTERVAL": "poll_interval",
    "WORKERS": "workers",
    "ADMIN_TOKEN": "admin_token",
    "READ_TOKEN": "read_token",
    "WEBHOOK_SECRET": "webhook_secret",
    "MAX_BODY_BYTES": "max_body_bytes",
    "ANALYSIS_INTERVAL": "analysis_interval",
    "PINS": "pins",
    "RUN_TESTS": "run_tests",
    "CANARY_FALLBACK": "canary_fallback",
    "SECRETS": "allowed_secrets",
    "ALLOWED_BASE_URLS": "allowed_base_urls",
    "BUILD_TIMEOUT": "build_timeout",
    # the test sandbox (docs/security.md, "What runs where")
    "TEST_BUDGET": "test_budget",
    "TEST_MEMORY_MB": "test_memory_mb",
    "TEST_PROCESSES": "test_processes",
    "HISTORY_TTL": "history_ttl",
    "MAX_TURN_BYTES": "max_turn_bytes",
    "MAX_TURNS": "max_turns",
    # HTTP bounds (docs/server.md, "Limits")
    "MAX_HEADER_BYTES": "max_header_bytes",
    "MAX_HEADERS": "max_headers",
    "HEADER_TIMEOUT": "header_timeout",
    "BODY_TIMEOUT": "body_timeout",
    "KEEP_ALIVE_TIMEOUT": "keep_alive_timeout",
    "SEND_TIMEOUT": "send_timeout",
    "MAX_CONNECTIONS": "max_connections",
    "MAX_BATCH_INPUTS": "max_batch_inputs",
    "BATCH_CONCURRENCY": "batch_concurrency",
    "ALLOWED_HOSTS": "allowed_hosts",
    # observability and guardrails (docs/server.md, "Observability" and "Limits and the response cache")
    "LOG_FORMAT": "log_format",
    "LOG_LEVEL": "log_level",
    "ACCESS_LOG": "access_log",
    "SSE_PING_INTERVAL": "sse_ping_interval",
    "TOKEN_METRICS": "token_metrics",
    "RUNTIME": "runtime",
    "LIMITS_FAIL": "limits_fail",
    "LIMIT_LEASE_TTL": "limit_lease_ttl",
    "CACHE_MAX_BYTES": "cache_max_bytes",
    "CACHE_MAX_ENTRY_BYTES": "cache_max_entry_bytes",
    "CACHE_MAX_ENTRIES": "cache_max_entries",
    # repository credentials apart from the URL (docs/server.md, "Private repositories")
    "GIT_TOKEN": "git_token",
    "GIT_TOKEN_FILE": "git_token_file",
    "GIT_TOKEN_USER": "git_token_user",
    "GIT_SSH_KEY_FILE": "git_ssh_key_file",
    "GIT_KNOWN_HOSTS": "git_known_hosts",
    # the loop back to the Git host and to the operator's receivers (docs/delivery.md)
    "PUBLIC_URL": "public_url",
    "STATUS_URL": "status_url",
    "GITHUB_TOKEN": "github_token",
    "GITHUB_TOKEN_FILE": "github_token_file",
    "GITHUB_REPO": "github_repo",
    "GITHUB_API": "github_api",
    "GITHUB_DEPLOYMENTS": "github_deployments",
    "OUTBOUND_BACKOFF": "outbound_backoff",
    "OUTBOUND_ATTEMPTS": "outbound_attempts",
}
LogFormat = Literal["text", "json"]
# which executor runs flows (docs/server.md, "Runtime"): the lean program unless a run needs LangChain's callbacks,
# or LangChain's runnables always
Runtime = Literal["lean", "langchain"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
MAX_WORKERS = 256
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")  # the names a client on this machine reaches a loopback server by


class Settings(BaseModel):
    """Everything the process is configured with; tests construct it directly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    components_file: Path | None = None
    load_entry_points: bool = True

    # the runtime server
    repo_url: str | None = None
    branch: str = "main"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    poll_interval: float = Field(default=30.0, gt=0)
    # processes serving one port (`serve --workers N`); None: one per core this process may run on
    workers: int | None = Field(default=None, ge=1, le=MAX_WORKERS)
    fetch_timeout: float = Field(default=30.0, gt=0)
    state: str = "sqlite://"  # sqlite:///PATH, memory:// or redis://; empty sqlite path = a file in data_dir
    data_dir: Path = Path(".gitops-flow")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    keep_versions: int = Field(default=10, ge=1)
    pins: PinPolicy = "current"
    rebuilds_kept: int = Field(default=8, ge=1, le=1000)  # old versions rebuilt for pins and sessions, kept at once
    run_tests: bool = True  # run each flow's tests before it goes live
    # a canary's failed request is retried on its primary (and counted against the canary only when the primary
    # succeeds); off for flows whose runs must not be repeated, at the price of clients being able to sway verdicts
    canary_fallback: bool = True
    build_timeout: float = Field(default=30.0, gt=0)  # seconds one flow's build may take; past it, that flow fails
    # a flow's tests run in a child process (sandbox.py): seconds they may take in all (then killed: test-timeout),
    # its address space in MB, and how many flows' tests run at once (one child each)
    test_budget: float = Field(default=60.0, gt=0, le=3600)
    test_memory_mb: int = Field(default=2048, ge=256, le=1024 * 1024)
    test_processes: int = Field(default=2, ge=1, le=64)
    fake_models: bool = False
    analysis_interval: float = Field(default=1.0, gt=0)  # seconds between the canary guard's ticks
    freeze_heap: bool = True  # gc.freeze() after each deploy (see app._settle_heap)
    admin_token: SecretStr | None = None
    read_token: SecretStr | None = None  # when set, /flows, /versions and /history need it (or the admin token)
    webhook_secret: SecretStr | None = None
    # conversations of flows with chat history: a turn's size, the turns kept per session, seconds idle until deleted
    max_turn_bytes: int = Field(default=64 * 1024, gt=0)
    max_turns: int = Field(default=200, ge=1)
    history_ttl: float = Field(default=30 * 86_400.0, gt=0)

    # what flows may do with secrets (secretpolicy.py); `validate` and `test` read these too, so CI judges as served
    allowed_secrets: tuple[str, ...] = Field(default_factory=default_secret_names)
    allowed_base_urls: tuple[str, ...] = ()

    # repository credentials apart from the URL (gitauth.py): an HTTPS token, or an SSH deploy key
    git_token: SecretStr | None = None
    git_token_file: Path | None = None  # read at each fetch
    git_token_user: str = Field(default="x-access-token", min_length=1, max_length=100, pattern=r"^[^\s:@/]+$")
    git_ssh_key_file: Path | None = None
    git_known_hosts: Path | None = None

    # the loop back to the Git host (commit statuses, deployments) and to the operator's receivers (notifications)
    public_url: str | None = None  # how people reach this server: the links of statuses and notifications
    status_url: str = "{url}/ui/history?ref={ref}"  # a status's link: {url} the public URL, {sha}, {ref}, {flow}
    github_token: SecretStr | None = None
    github_token_file: Path | None = None  # read at each request, so a rotated token is picked up
    github_repo: str | None = None  # owner/name; by default read from a github.com repo_url
    github_api: str = API_URL
    github_deployments: bool = True
    notifications: tuple[SinkSpec, ...] = ()
    outbound_backoff: float = Field(default=1.0, gt=0)  # seconds before the first retry of an outbound call
    outbound_attempts: int = Field(default=8, ge=1, le=50)

    @field_validator("github_repo")
    @classmethod
    def _github_repo(cls, value: str | None) -> str | None:
        return check_repo(value) if value is not None else None

    @field_validator("public_url", "github_api")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value is not None else None

    @field_validator("allowed_secrets", "allowed_base_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("allowed_secrets")
    @classmethod
    def _secret_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        SecretPolicy(value)  # a wrong entry is a settings error at start, naming the entry
        return value

    @field_validator("allowed_base_urls")
    @classmethod
    def _base_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        SecretPolicy((), value)
        return value

    def secret_policy(self) -> SecretPolicy:
        """The SecretPolicy these settings describe."""
        return SecretPolicy(self.allowed_secrets, self.allowed_base_urls)

    # HTTP bounds: what one client may make the server hold or do (docs/server.md, "Limits")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)  # a request's line and headers
    max_headers: int = Field(default=100, ge=8)
    header_timeout: float = Field(default=10.0, gt=0)  # seconds from a request's first byte to its last header
    body_timeout: float = Field(default=30.0, gt=0)  # seconds from the last header to the body's last byte
    keep_alive_timeout: float = Field(default=5.0, gt=0)  # seconds an idle connection stays open
    send_timeout: float = Field(default=60.0, gt=0)  # seconds a client may leave a full send buffer unread
    max_connections: int = Field(default=1000, ge=1)
    max_batch_inputs: int = Field(default=100, ge=1)
    batch_concurrency: int = Field(default=8, ge=1)  # runs of one batch at once
    allowed_hosts: tuple[str, ...] | None = None  # Host names served; None: see hosts()

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

    # observability and guardrails: logs, token metrics, the limits' counters and the response cache
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    # one line per answered request (uvicorn's access log); off, or a log level above info, costs no work per request
    access_log: bool = True
    # seconds between the `: ping` comments of a server-sent event stream that has nothing else to send (0: none)
    sse_ping_interval: float = Field(default=15.0, ge=0, le=3600)  # a proxy closes a silent stream in minutes
    token_metrics: bool = False  # count every run's tokens on every run, not only observed ones
    runtime: Runtime = "lean"
    # LangSmith traces every LangChain run (LANGSMITH_TRACING / LANGCHAIN_TRACING_V2 = "true", read as LangSmith
    # reads them): runs then go through LangChain's runnables, whose callbacks LangSmith's tracer hears
    langsmith_tracing: bool = False
    limits_fail: Literal["open", "closed"] = "open"  # while the limits' counters cannot be reached
    limit_lease_ttl: float = Field(default=600.0, gt=0)  # seconds a run holds its place at most (a crashed replica's)
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)  # answers kept in this process's memory
    cache_max_entry_bytes: int = Field(default=256 * 1024, ge=0)  # a larger answer is not cached
    cache_max_entries: int = Field(default=100_000, ge=1)  # in memory, or in Redis shared by the replicas

    def worker_count(self) -> int:
        """How many worker processes `serve` starts: ``workers`` when set; else one per core available to this
        process (its CPU affinity, as a container's cpuset sets it), and one with the memory:// store, which
        processes cannot share (`--workers N` with it is refused by `serve`)."""
        if self.workers is not None:
            return self.workers
        if self.state.startswith("memory:"):
            return 1
        return max(1, len(os.sched_getaffinity(0)))

    def hosts(self) -> tuple[str, ...]:
        """The Host names requests may carry (ports are not compared): ``allowed_hosts`` when set; else, on a
        loopback address, the loopback names, so a web page cannot reach this server by a name it rebinds to
        127.0.0.1 (DNS rebinding); else any (``*``): a server on a network address is reached by names only its
        operator knows, and a gateway in front of it checks them."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return LOOPBACK_HOSTS if _loopback(self.host) else ("*",)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from ``GITOPS_FLOW_*`` variables; explicit ``overrides`` (command-line flags) win. Notification
        sinks come from ``GITOPS_FLOW_NOTIFY_FILE`` and ``GITOPS_FLOW_NOTIFY_*`` (githost/sinks.py); raises
        ConfigError for a wrong one."""
        values: dict[str, object] = {
            field: environ[ENV_PREFIX + name] for name, field in _FROM_ENV.items() if environ.get(ENV_PREFIX + name)
        }
        try:
            sinks = load_sinks(environ)
        except SinkError as exc:
            raise ConfigError(str(exc)) from None
        if sinks:
            values["notifications"] = sinks
        if langsmith_tracing(environ):
            values["langsmith_tracing"] = True
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


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

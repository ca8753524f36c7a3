"""Settings: the operator's configuration, built once from the environment by the command line."""

from __future__ import annotations

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
    "ADMIN_TOKEN": "admin_token",
    "WEBHOOK_SECRET": "webhook_secret",
    "MAX_BODY_BYTES": "max_body_bytes",
    "ANALYSIS_INTERVAL": "analysis_interval",
    "PINS": "pins",
    "RUN_TESTS": "run_tests",
    "SECRETS": "allowed_secrets",
    "ALLOWED_BASE_URLS": "allowed_base_urls",
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
    fetch_timeout: float = Field(default=30.0, gt=0)
    state: str = "sqlite://"  # sqlite:///PATH, memory:// or redis://; empty sqlite path = a file in data_dir
    data_dir: Path = Path(".gitops-flow")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    keep_versions: int = Field(default=10, ge=1)
    pins: PinPolicy = "current"
    rebuilds_kept: int = Field(default=8, ge=1, le=1000)  # old versions rebuilt for pins and sessions, kept at once
    run_tests: bool = True  # run each flow's tests before it goes live
    fake_models: bool = False
    analysis_interval: float = Field(default=1.0, gt=0)  # seconds between the canary guard's ticks
    freeze_heap: bool = True  # gc.freeze() after each deploy (see app._settle_heap)
    admin_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None

    # what flows may do with secrets (secretpolicy.py); `validate` and `test` read these too, so CI judges as served
    allowed_secrets: tuple[str, ...] = Field(default_factory=default_secret_names)
    allowed_base_urls: tuple[str, ...] = ()

    # the loop back to the Git host (commit statuses, deployments) and to the operator's receivers (notifications)
    public_url: str | None = None  # how people reach this server: the links of statuses and notifications
    status_url: str = "{url}/history"  # a status's link: {url} the public URL, {sha}, {ref}, {flow}
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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

"""Settings: the operator's configuration, built once from the environment by the command line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

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
    "HISTORY_TTL": "history_ttl",
    "MAX_TURN_BYTES": "max_turn_bytes",
    "MAX_TURNS": "max_turns",
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
    # a canary's failed request is retried on its primary (and counted against the canary only when the primary
    # succeeds); off for flows whose runs must not be repeated, at the price of clients being able to sway verdicts
    canary_fallback: bool = True
    build_timeout: float = Field(default=30.0, gt=0)  # seconds one flow's build may take; past it, that flow fails
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
        """Settings from ``GITOPS_FLOW_*`` variables; explicit ``overrides`` (command-line flags) win."""
        values: dict[str, object] = {
            field: environ[ENV_PREFIX + name] for name, field in _FROM_ENV.items() if environ.get(ENV_PREFIX + name)
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

"""Settings: the operator's configuration, built once from the environment by the command line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

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
    "BUILD_TIMEOUT": "build_timeout",
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
    build_timeout: float = Field(default=30.0, gt=0)  # seconds one flow's build may take; past it, that flow fails
    fake_models: bool = False
    analysis_interval: float = Field(default=1.0, gt=0)  # seconds between the canary guard's ticks
    freeze_heap: bool = True  # gc.freeze() after each deploy (see app._settle_heap)
    admin_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from ``GITOPS_FLOW_*`` variables; explicit ``overrides`` (command-line flags) win."""
        values: dict[str, object] = {
            field: environ[ENV_PREFIX + name] for name, field in _FROM_ENV.items() if environ.get(ENV_PREFIX + name)
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

"""Settings: the operator's configuration, built once from the environment by the command line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "GITOPS_FLOW_"


class Settings(BaseModel):
    """Everything the process is configured with; tests construct it directly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    components_file: Path | None = None
    load_entry_points: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from ``GITOPS_FLOW_*`` variables; explicit ``overrides`` (command-line flags) win."""
        values: dict[str, object] = {}
        if environ.get(ENV_PREFIX + "COMPONENTS"):
            values["components_file"] = Path(environ[ENV_PREFIX + "COMPONENTS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

"""config.py and `gitops-flow settings`: one settings model, every documented variable bound to a field, and the
command that shows what is in force and where it came from."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gitops_flow.cli.main import main
from gitops_flow.config import Settings, env_name
from gitops_flow.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# GITOPS_FLOW_* names the docs mention that are not one setting each, and why
NOT_SETTINGS = {
    "GITOPS_FLOW_INSTALL": "a repository variable of the pull-request workflow, read by GitHub Actions",
    "GITOPS_FLOW_COMMENT_BOT": "read by `plan --comment` from the Actions job's environment, beside GITHUB_TOKEN",
    "GITOPS_FLOW_NOTIFY_FILE": "notification sinks: the `notifications` setting",
    "GITOPS_FLOW_NOTIFY_URL": "one notification sink: the `notifications` setting",
    "GITOPS_FLOW_NOTIFY_FORMAT": "part of GITOPS_FLOW_NOTIFY_URL's sink",
    "GITOPS_FLOW_NOTIFY_EVENTS": "part of GITOPS_FLOW_NOTIFY_URL's sink",
    "GITOPS_FLOW_NOTIFY_SECRET": "part of GITOPS_FLOW_NOTIFY_URL's sink",
    "GITOPS_FLOW_NOTIFY_FLOWS": "part of GITOPS_FLOW_NOTIFY_URL's sink",
}


def settings_rows(*argv: str, environ: dict[str, str] | None = None) -> list[dict[str, Any]]:
    out = io.StringIO()
    assert main(["settings", "--json", *argv], environ=environ or {}, out=out) == 0
    rows: list[dict[str, Any]] = json.loads(out.getvalue())
    return rows


def documented_names() -> set[str]:
    texts = [p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]
    return {m for text in texts for m in re.findall(r"GITOPS_FLOW_[A-Z0-9_]*[A-Z0-9]", text)}


def test_every_documented_variable_is_a_setting_the_settings_command_shows() -> None:
    shown = {row["env"] for row in settings_rows()}
    documented = documented_names() - NOT_SETTINGS.keys()
    assert documented, "the docs name no GITOPS_FLOW_* variable: the pattern is wrong"
    assert documented - shown == set()


@pytest.mark.parametrize("name", sorted(n for n in Settings.model_fields if env_name(n)))
def test_each_settings_variable_sets_its_field(name: str) -> None:
    """Set through its variable (with a value valid for its type), a setting changes and says it came from env."""
    samples: dict[str, str] = {
        "components_file": "ops.yaml",
        "repo_url": "https://git.example/flows.git",
        "branch": "release",
        "host": "0.0.0.0",
        "state": "memory://",
        "data_dir": "/srv/flows",
        "pins": "history",
        "allowed_secrets": "ACME_KEY,OTHER_*",
        "allowed_base_urls": "openai=https://gw.example/v1",
        "git_token_user": "bot",
        "public_url": "https://flows.example",
        "server": "https://flows.example:8443",
        "status_url": "{url}/x",
        "github_repo": "acme/flows",
        "github_api": "https://ghe.example/api/v3",
        "web_search_url": "https://search.example",
        "allowed_hosts": "flows.example",
        "log_format": "json",
        "log_level": "debug",
        "runtime": "langchain",
        "limits_fail": "closed",
        "trusted_proxies": "10.0.0.0/8",
        "experiment_confidence": "0.99",
        "vector_store": "sqlite-vec",
        "vector_store_path": "/srv/vectors",
        "feedback_max_runs": "5000",
        "model_prices": "gpt-4o-mini=0.15/0.60",
    }
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if name in samples:
        raw = samples[name]
    elif isinstance(default, bool):
        raw = "false" if default else "true"
    elif isinstance(default, int | float):
        raw = str(default + 1)  # within every bound: the defaults sit inside them
    elif name == "workers":
        raw = "7"
    else:
        raw = "value-7"
    row = next(r for r in settings_rows(environ={env_name(name) or "": raw}) if r["name"] == name)
    assert row["source"] == "env"
    assert row["value"] != default and row["value"] is not None


def test_settings_once_ignored_are_read() -> None:
    """GITOPS_FLOW_REBUILDS_KEPT was documented and ignored; keep_versions and fetch_timeout could not be set."""
    settings = Settings.from_env(
        {"GITOPS_FLOW_REBUILDS_KEPT": "3", "GITOPS_FLOW_KEEP_VERSIONS": "4", "GITOPS_FLOW_FETCH_TIMEOUT": "9"}
    )
    assert (settings.rebuilds_kept, settings.keep_versions, settings.fetch_timeout) == (3, 4, 9.0)


def test_a_flag_beats_the_environment_which_beats_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "gitops-flow.env"
    env_file.write_text("GITOPS_FLOW_PORT=7001\nGITOPS_FLOW_BRANCH=from-file\nGITOPS_FLOW_POLL_INTERVAL=5\n")
    rows = {
        r["name"]: r
        for r in settings_rows(
            "--env-file", str(env_file), "--port", "7003", environ={"GITOPS_FLOW_BRANCH": "from-env"}
        )
    }
    assert (rows["port"]["value"], rows["port"]["source"]) == (7003, "flag")
    assert (rows["branch"]["value"], rows["branch"]["source"]) == ("from-env", "env")
    assert (rows["poll_interval"]["value"], rows["poll_interval"]["source"]) == (5.0, "file")
    assert (rows["host"]["value"], rows["host"]["source"]) == ("127.0.0.1", "default")


def test_secrets_are_masked_wherever_they_come_from(tmp_path: Path) -> None:
    environ = {
        "GITOPS_FLOW_ADMIN_TOKEN": "admin-s3cret",
        "GITOPS_FLOW_GIT_TOKEN": "git-s3cret",
        "GITOPS_FLOW_NOTIFY_URL": "https://hooks.example/T/B/hook-s3cret",
        "GITOPS_FLOW_NOTIFY_SECRET": "sign-s3cret",
    }
    for argv in (["settings"], ["settings", "--json"]):
        out = io.StringIO()
        assert main(argv, environ=environ, out=out) == 0
        assert "s3cret" not in out.getvalue()
        assert "**********" in out.getvalue()


def test_a_wrong_value_names_the_setting_and_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"], environ={"GITOPS_FLOW_MAX_TURNS": "0"}) == 2
    assert "setting max_turns (GITOPS_FLOW_MAX_TURNS)" in capsys.readouterr().err
    assert main(["serve", "--env-file", "/nonexistent/env"], environ={}) == 2
    assert "/nonexistent/env: no such file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="setting poll_interval"):
        Settings.from_env({"GITOPS_FLOW_POLL_INTERVAL": "soon"})


def test_constructing_settings_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the command line hands the environment over (STYLE: read env once); tests build Settings directly."""
    monkeypatch.setenv("GITOPS_FLOW_PORT", "9999")
    assert Settings().port == 8000
    assert Settings(port=1234).port == 1234


def test_every_setting_has_a_doc() -> None:
    assert [name for name, info in Settings.model_fields.items() if not info.description] == []

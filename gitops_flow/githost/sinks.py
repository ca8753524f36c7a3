"""Notification sinks: the operator's receivers of deploy events, read once at start from a YAML file
(``GITOPS_FLOW_NOTIFY_FILE``) and from ``GITOPS_FLOW_NOTIFY_*`` for a single one.

A sink is a URL, a format (``json``: the event, signed with HMAC-SHA256; ``slack``: a message Slack, Mattermost and
other Slack-compatible incoming webhooks show), an optional signing secret, and filters by event kind and flow. A
URL or secret is given directly, or by the environment variable (``url_env``, ``secret_env``) or file
(``url_file``, ``secret_file``) that holds it, since a Slack webhook URL is itself a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

Format = Literal["json", "slack"]
ENV_PREFIX = "GITOPS_FLOW_NOTIFY_"
# every kind of deploy event the server records; "built" and "retired" are housekeeping, sent only when asked for
EVENT_KINDS = (
    "deployed",
    "rolled-back",
    "failed",
    "aborted",
    "resumed",
    "stepped",
    "tag-moved",
    "yanked",
    "ref-refused",
    "rewritten",
    "built",
    "retired",
)
DEFAULT_EVENTS = EVENT_KINDS[:-2]
MAX_SINKS = 20


class SinkError(ValueError):
    """The notification settings are wrong; the message names the file, the sink and the field, never a secret."""


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_FLOW = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class SinkSpec(BaseModel):
    """One receiver of notifications."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME.pattern)
    url: SecretStr
    format: Format = "json"
    secret: SecretStr | None = None
    events: tuple[str, ...] = DEFAULT_EVENTS
    flows: tuple[str, ...] = ()  # empty: every flow

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not re.match(r"^https?://[^/\s]+", text):
            raise ValueError("the URL is an http:// or https:// address")  # the value itself is not repeated
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [kind for kind in value if kind not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"unknown event kinds {', '.join(unknown)}; known: {', '.join(EVENT_KINDS)}")
        return value

    @field_validator("flows")
    @classmethod
    def _flow_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _FLOW.match(name)]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} are not flow names")
        return value

    @field_validator("events", "flows", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    def wants(self, event: Mapping[str, Any]) -> bool:
        """Whether this sink takes ``event``: its kind is listed, and, with a flow filter, the event names one of
        those flows (its flow, the flows its commit changed or that failed there) or names none (a tag moved, a
        commit yanked, the branch rewritten: those concern every flow)."""
        if event.get("event") not in self.events:
            return False
        if not self.flows:
            return True
        named = set(_strings(event.get("changed"))) | set(_strings(event.get("failed_flows")))
        if isinstance(event.get("flow"), str):
            named.add(event["flow"])
        return not named or bool(named & set(self.flows))


def load_sinks(environ: Mapping[str, str]) -> tuple[SinkSpec, ...]:
    """The sinks configured in ``environ``: those of the file ``GITOPS_FLOW_NOTIFY_FILE``, then the one that
    ``GITOPS_FLOW_NOTIFY_URL`` (with ``_FORMAT``, ``_SECRET``, ``_EVENTS``, ``_FLOWS``) describes, named ``env``.
    Raises SinkError naming the file, the sink and the field at fault, never a secret's value."""
    sinks: list[SinkSpec] = []
    path = environ.get(ENV_PREFIX + "FILE")
    if path:
        sinks += _from_file(Path(path), environ)
    if environ.get(ENV_PREFIX + "URL"):
        raw = {
            "name": "env",
            "url": environ[ENV_PREFIX + "URL"],
            **{
                k.lower(): environ[ENV_PREFIX + k]
                for k in ("FORMAT", "SECRET", "EVENTS", "FLOWS")
                if environ.get(ENV_PREFIX + k)
            },
        }
        sinks.append(_sink(raw, f"{ENV_PREFIX}*"))
    names = [s.name for s in sinks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SinkError(f"notification sinks must have distinct names: {', '.join(twice)} is used twice")
    if len(sinks) > MAX_SINKS:
        raise SinkError(f"at most {MAX_SINKS} notification sinks may be configured, not {len(sinks)}")
    return tuple(sinks)


def _from_file(path: Path, environ: Mapping[str, str]) -> list[SinkSpec]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SinkError(f"{ENV_PREFIX}FILE: cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SinkError(f"{path}: not a YAML file ({type(exc).__name__})") from None
    entries = data.get("notifications") if isinstance(data, dict) else None
    if not isinstance(entries, list) or set(data) != {"notifications"}:
        raise SinkError(f"{path}: the file holds one key, 'notifications', a list of sinks")
    sinks = []
    for index, entry in enumerate(entries):
        where = f"{path}: notifications[{index}]"
        if not isinstance(entry, dict):
            raise SinkError(f"{where}: a sink is a mapping (name, url, format, ...)")
        sinks.append(_sink(_resolved(entry, environ, where), where))
    return sinks


def _resolved(entry: dict[str, Any], environ: Mapping[str, str], where: str) -> dict[str, Any]:
    """``url_env``/``url_file`` and ``secret_env``/``secret_file`` replaced by the values they point at."""
    values = dict(entry)
    for key in ("url", "secret"):
        given = [k for k in (key, f"{key}_env", f"{key}_file") if k in values]
        if len(given) > 1:
            raise SinkError(f"{where}: give one of {', '.join(given)}")
        if f"{key}_env" in values:
            name = str(values.pop(f"{key}_env"))
            if not environ.get(name):
                raise SinkError(f"{where}: {key}_env names {name}, which is not set")
            values[key] = environ[name]
        elif f"{key}_file" in values:
            file = Path(str(values.pop(f"{key}_file")))
            try:
                values[key] = file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SinkError(f"{where}: cannot read {key}_file {file}: {exc.strerror}") from None
    return values


def _sink(raw: Mapping[str, Any], where: str) -> SinkSpec:
    try:
        return SinkSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"])) or "sink"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SinkError(f"{where}: {field}: {message}") from None


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []

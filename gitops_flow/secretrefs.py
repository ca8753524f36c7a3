"""Secrets in params: ``{"$env": "NAME"}`` references, their resolution, and literals that look like credentials."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from gitops_flow.problems import Problem, json_path

ENV_KEY = "$env"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# parameter names whose value is a credential: a literal there is always a leak
_SECRET_PARAM = re.compile(
    r"(^|_)(api_?key|secret_?key|access_?key|private_?key|token|secret|password|passwd|credentials?)$", re.IGNORECASE
)
# well-known credential shapes, wherever they appear
_CREDENTIAL_SHAPES = (
    ("an OpenAI or Anthropic API key", re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}")),
    ("a GitHub token", re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{40,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
)


def placeholder(name: str) -> str:
    """What a dry-build uses for a secret the environment does not have."""
    return f"<{ENV_KEY}:{name}>"


def is_env_ref(value: Any) -> bool:
    return isinstance(value, dict) and ENV_KEY in value


def env_refs(params: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every ``{"$env": ...}`` in ``params`` with its location."""
    if is_env_ref(params):
        yield path, params
    elif isinstance(params, dict):
        for key, value in params.items():
            yield from env_refs(value, (*path, key))
    elif isinstance(params, list):
        for index, value in enumerate(params):
            yield from env_refs(value, (*path, index))


def check(params: Mapping[str, Any], base: tuple[str | int, ...]) -> list[Problem]:
    """Malformed secret references and credential-looking literals in one node's params."""
    problems = []
    for where, ref in env_refs(dict(params)):
        name = ref.get(ENV_KEY)
        if len(ref) != 1 or not isinstance(name, str) or not _ENV_NAME.match(name):
            problems.append(
                Problem(
                    code="bad-env-ref",
                    message='a secret reference is exactly {"$env": "NAME"} with NAME an environment variable name',
                    path=json_path([*base, *where]),
                )
            )
    problems += [
        Problem(code="literal-secret", message=message, path=json_path([*base, *where]))
        for where, message in _literals(params, ())
    ]
    return problems


def _literals(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if is_env_ref(value):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and item and _SECRET_PARAM.search(str(key)):
                yield (
                    (*path, key),
                    f'{key!r} holds a literal credential; write {{"$env": "NAME"}} and set NAME on the server',
                )
            else:
                yield from _literals(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _literals(item, (*path, index))
    elif isinstance(value, str):
        for what, shape in _CREDENTIAL_SHAPES:
            if shape.search(value):
                yield path, f"this text contains what looks like {what}; keep credentials out of Git"
                return


def resolve(params: Any, secrets: Mapping[str, str], *, missing: list[str] | None = None) -> Any:
    """``params`` with every reference replaced by its secret.

    A name absent from ``secrets`` becomes a placeholder and is appended to ``missing`` when that list is given
    (a dry-build); without the list it raises KeyError naming the variable (a real build).
    """
    if is_env_ref(params):
        name = params[ENV_KEY]
        if isinstance(name, str) and name in secrets:
            return secrets[name]
        if missing is None:
            raise KeyError(str(name))
        missing.append(str(name))
        return placeholder(str(name))
    if isinstance(params, dict):
        return {key: resolve(value, secrets, missing=missing) for key, value in params.items()}
    if isinstance(params, list):
        return [resolve(value, secrets, missing=missing) for value in params]
    return params


class RedactSecrets(logging.Filter):
    """A logging filter that replaces the values of the secrets flows use with ``<$env:NAME>`` in every record it
    sees, traceback included, so an exception that quotes a key never writes it to a log."""

    MIN_LENGTH = 6  # shorter values are too common to replace without garbling the log (and are no real secret)

    def __init__(self, secrets: Mapping[str, str], names: Callable[[], Iterable[str]]) -> None:
        super().__init__()
        self._secrets = secrets
        self._names = names

    def filter(self, record: logging.LogRecord) -> bool:
        values = [
            (name, self._secrets[name])
            for name in self._names()
            if len(self._secrets.get(name) or "") >= self.MIN_LENGTH
        ]
        if not values:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for name, value in values:
            message = message.replace(value, placeholder(name))
            if record.exc_text:
                record.exc_text = record.exc_text.replace(value, placeholder(name))
        record.msg, record.args = message, ()
        return True

"""Secrets in params: ``{"$env": "NAME"}`` references, where they may stand, their resolution, literals that look
like credentials, and scrubbing known secret values out of what the server writes."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import orjson

from gitops_flow.problems import Problem, json_path
from gitops_flow.security.policy import RESERVED_PREFIX, SecretPolicy

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


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is a dry-build's placeholder for a secret it did not read (``placeholder``)."""
    return value.startswith(f"<{ENV_KEY}:") and value.endswith(">")


def is_env_ref(value: Any) -> bool:
    return isinstance(value, dict) and ENV_KEY in value


def env_name(value: Any) -> str | None:
    """The variable a well-formed reference names; None for anything else."""
    if not isinstance(value, dict) or set(value) != {ENV_KEY}:
        return None
    name = value[ENV_KEY]
    return name if isinstance(name, str) and _ENV_NAME.match(name) else None


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


def check(
    params: Mapping[str, Any],
    base: tuple[str | int, ...],
    *,
    secret_params: frozenset[str] | None = None,
    policy: SecretPolicy | None = None,
) -> list[Problem]:
    """The problems of one node's secret references and credential-looking literals.

    With ``secret_params`` (the component's, when it is known) a reference anywhere but as the whole value of one of
    them is a problem, and so is a literal there; with ``policy`` a name the operator does not allow is one.
    """
    problems = []
    for where, ref in env_refs(dict(params)):
        name = ref.get(ENV_KEY)
        path = json_path([*base, *where])
        if len(ref) != 1 or not isinstance(name, str) or not _ENV_NAME.match(name):
            message = 'a secret reference is exactly {"$env": "NAME"} with NAME an environment variable name'
            problems.append(Problem(code="bad-env-ref", message=message, path=path))
        elif secret_params is not None and not (len(where) == 1 and where[0] in secret_params):
            problems.append(Problem(code="env-not-secret", message=_not_secret(name, secret_params), path=path))
        elif policy is not None and not policy.allows(name):
            problems.append(Problem(code="env-not-allowed", message=_not_allowed(name, policy), path=path))
    problems += [
        Problem(code="literal-secret", message=message, path=json_path([*base, *where]))
        for where, message in _literals(params, ())
    ]
    for name in sorted(secret_params or ()):
        value = params.get(name)
        if isinstance(value, str) and value and not _SECRET_PARAM.search(name):  # else _literals said it already
            message = f'{name!r} takes a credential; write {{"$env": "NAME"}} and set NAME on the server'
            problems.append(Problem(code="literal-secret", message=message, path=json_path([*base, name])))
    return problems


def _not_secret(name: str, secret_params: frozenset[str]) -> str:
    if not secret_params:
        return f"this component takes no secret, so ${name} is never read here"
    where = " or ".join(repr(p) for p in sorted(secret_params))
    return f"a secret is read only as the whole value of {where}, so ${name} is never read here"


def _not_allowed(name: str, policy: SecretPolicy) -> str:
    if name.startswith(RESERVED_PREFIX):
        return f"{name} is one of the server's own settings; flows never read those"
    return f"{name} is not a secret this server gives flows (GITOPS_FLOW_SECRETS allows {policy.describe()})"


HIDDEN = "(hidden: looks like a credential)"


def credential_literals(params: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Where ``params`` holds a literal that looks like a credential, with why."""
    return list(_literals(params, ()))


def masked(params: Any) -> Any:
    """``params`` with every literal that looks like a credential replaced by HIDDEN: what the console and the plan
    show of a flow's params (a flow that failed validation may hold a literal key; Git has it, readers must not)."""
    found = credential_literals(params)
    if not found:
        return params
    copy = orjson.loads(orjson.dumps(params))
    for path, _ in found:
        if not path:
            return HIDDEN
        holder = copy
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = HIDDEN
    return copy


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


class Scrubber:
    """Replaces every known secret value with ``<$env:NAME>`` in text and in JSON-like values: the server's last line
    of defence for what it stores, answers and logs. Values shorter than MIN_LENGTH are left alone: they are too
    common to replace without garbling the text, and no real secret is that short."""

    MIN_LENGTH = 6

    def __init__(self, secrets: Mapping[str, str]) -> None:
        known = {value: name for name, value in secrets.items() if len(value or "") >= self.MIN_LENGTH}
        # the longest first, so a secret that contains another is replaced whole
        self._values = sorted(known.items(), key=lambda item: -len(item[0]))

    def __bool__(self) -> bool:
        return bool(self._values)

    def found(self, text: str) -> bool:
        return any(value in text for value, _ in self._values)

    def text(self, text: str) -> str:
        for value, name in self._values:
            if value in text:
                text = text.replace(value, placeholder(name))
        return text

    def json(self, value: Any) -> Any:
        """``value`` with every string in it (keys too) scrubbed; other values as they are."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.json(k): self.json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.json(v) for v in value)
        return value

    def problem(self, problem: Problem) -> Problem:
        return replace(problem, message=self.text(problem.message), path=self.text(problem.path))


class RedactSecrets(logging.Filter):
    """A logging filter (for handlers, so it sees every logger's records) that scrubs the known secret values from a
    record, traceback included, so an exception that quotes a key never writes it to a log.

    A record without a secret is left as it is. One with a secret keeps its format and arguments when they are plain
    values (uvicorn's access formatter reads them), each scrubbed; otherwise it becomes its scrubbed message.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self._scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = self._scrubber
        if not scrub:
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub.text(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub.text(record.stack_info)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a record whose format does not fit its arguments: logging says so itself
            return True
        if not scrub.found(message):
            return True
        args = record.args
        if isinstance(record.msg, str) and isinstance(args, tuple) and all(isinstance(a, _PLAIN) for a in args):
            record.msg = scrub.text(record.msg)
            record.args = tuple(scrub.text(a) if isinstance(a, str) else a for a in args)
            if not scrub.found(record.getMessage()):
                return True
        record.msg, record.args = scrub.text(message), ()
        return True


_PLAIN = (str, int, float, type(None))

"""HttpRequest: a node (and the agent's ``fetch_url`` tool) that fetches a URL through the egress-checked client.

Its URL is the ``url`` param, a literal or a template of its input (``{input}`` for a text input, ``{key}`` for an
object's keys), or else its input itself (a text, or an object's ``url``). A value put into a template is
percent-encoded, unless the placeholder is the whole template, so an input can fill a query or a path segment but
never choose the host of a URL that names one. The answer is the body as ``text`` (an HTML page as its visible
text), as ``html`` (the body as it came), or parsed as ``json``; a body cut at the size limit says so at its end.

Where the URL is literal, validation judges it against the egress allowlist (``literal_problems``), so a flow that
could only ever be refused never goes live; a templated URL is judged when it is fetched.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from gitops_flow.components.base import ParamIssue
from gitops_flow.components.documents import html_text
from gitops_flow.components.http_fetch import Allowance, Fetched, Fetcher, Request
from gitops_flow.components.textify import message_text
from gitops_flow.exceptions import EgressFailed, EgressRefused
from gitops_flow.problems import Problem, json_path
from gitops_flow.security.egress import EgressPolicy, Target

Format = Literal["text", "html", "json"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")  # RFC 9110's token
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "proxy-authorization"})
# headers whose value is a credential: never a literal in Git, but api_key (a secret) sent in api_key_header
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "api-key", "x-auth-token"})
MAX_HEADERS = 30
MAX_URL_CHARS = 8192  # a URL made from the input, at most


def literal(url: str) -> bool:
    """Whether ``url`` is a plain URL rather than a template of the input."""
    return "{" not in url and "}" not in url


def check(params: Mapping[str, Any]) -> list[ParamIssue]:
    """What the signature cannot say: a literal URL is an http(s) URL, a template names only ``{fields}``, headers
    are header names (never Host and the like), and the key's header is named when there is a key."""
    issues: list[ParamIssue] = []
    url = params.get("url")
    if isinstance(url, str):
        if literal(url):
            try:
                Target.parse(url)
            except EgressRefused as exc:
                issues.append((("url",), "bad-param", f"HttpRequest url: {exc}"))
        elif _FIELD.sub("", url).count("{") or _FIELD.sub("", url).count("}"):
            issues.append((("url",), "bad-param", "HttpRequest url: a template names fields as {name}, nothing else"))
    headers = params.get("headers") or {}
    if len(headers) > MAX_HEADERS:
        issues.append((("headers",), "bad-param", f"HttpRequest takes at most {MAX_HEADERS} headers"))
    for name in headers:
        if not _HEADER.match(name) or name.lower() in _FORBIDDEN_HEADERS:
            issues.append((("headers", name), "bad-param", f"{name[:100]!r} is not a header a flow may set"))
        elif name.lower() in _CREDENTIAL_HEADERS:
            message = (
                f'{name} holds a credential, never a literal in Git: write api_key ({{"$env": "NAME"}}) and '
                f"api_key_header: {name!r}"
            )
            issues.append((("headers", name), "literal-secret", message))
    key_header = params.get("api_key_header", "Authorization")
    if not _HEADER.match(str(key_header)) or str(key_header).lower() in _FORBIDDEN_HEADERS:
        issues.append((("api_key_header",), "bad-param", f"{str(key_header)[:100]!r} is not a header name"))
    if params.get("body") is not None and params.get("method", "GET") in ("GET", "DELETE"):
        issues.append((("body",), "bad-param", "a GET or DELETE request has no body; use POST, PUT or PATCH"))
    return issues


def literal_problems(params: Mapping[str, Any], base: tuple[str | int, ...], policy: EgressPolicy) -> list[Problem]:
    """An HttpRequest the egress policy refuses whatever its input: ``egress-refused`` at its url, for a literal URL
    it refuses, or for any URL when it allows nothing at all."""
    url = params.get("url")
    if not policy.entries:
        message = (
            "HttpRequest: outbound requests are off on this server (GITOPS_FLOW_ALLOWED_FETCH_URLS allows none), "
            "so this node can never fetch"
        )
        return [Problem(code="egress-refused", message=message, path=json_path([*base, "url"] if url else list(base)))]
    if not isinstance(url, str) or not literal(url):
        return []
    try:
        policy.check_url(url)
    except EgressRefused as exc:
        message = f"HttpRequest: {exc}" + (f" (it allows {policy.describe()})" if policy.entries else "")
        return [Problem(code="egress-refused", message=message, path=json_path([*base, "url"]))]
    return []


def build(
    fetcher: Fetcher,
    *,
    url: str | None,
    method: Method,
    headers: Mapping[str, str],
    body: Any,
    api_key: str | None,
    api_key_header: str,
    api_key_prefix: str,
    format: Format,
    max_bytes: int | None,
    timeout: float | None,
) -> Runnable[Any, Any]:
    """The node's runnable: its requests count towards its run's (http_fetch.Tally)."""
    sent = dict(headers)
    secret: frozenset[str] = frozenset()
    if api_key is not None:
        sent[api_key_header] = f"{api_key_prefix}{api_key}"
        secret = frozenset({api_key_header})

    def request(value: Any) -> Request:
        target, payload = _target(url, value), body
        if isinstance(value, Mapping) and payload is None and "body" in value and method not in ("GET", "DELETE"):
            payload = value["body"]
        return Request(target, method, sent, payload, secret, max_bytes, timeout)

    def call(value: Any, config: RunnableConfig) -> Any:
        return shaped(fetcher.fetch(request(value), fetcher.allowance(config)), format)

    async def acall(value: Any, config: RunnableConfig) -> Any:
        return shaped(await fetcher.afetch(request(value), fetcher.allowance(config)), format)

    return RunnableLambda(call, afunc=acall, name="HttpRequest")


def faked(responses: Sequence[str], format: Format) -> Runnable[Any, Any]:
    """A faked node (a flow test's ``fakes``, ``--fake-models``): answers ``responses`` in turn, fetching nothing;
    as ``json``, each answer parsed when it is JSON."""
    answers = itertools.cycle(list(responses))

    def answer(value: Any) -> Any:
        text = next(answers)
        if format != "json":
            return text
        try:
            return json.loads(text)
        except ValueError:
            return text

    return RunnableLambda(answer, name="HttpRequest")


def shaped(fetched: Fetched, format: Format) -> Any:
    """The answer as the node gives it; EgressFailed for an error status or a JSON body that is not JSON."""
    if not fetched.ok:
        raise EgressFailed(f"{fetched.host} answered HTTP {fetched.status}", host=fetched.host)
    if format == "json":
        if fetched.cut:
            raise EgressFailed(
                f"the JSON answer of {fetched.host} is larger than {fetched.max_bytes:,} bytes, so it was cut and "
                "cannot be read (GITOPS_FLOW_EGRESS_MAX_BYTES)",
                host=fetched.host,
            )
        try:
            return json.loads(fetched.body)
        except ValueError:
            raise EgressFailed(f"{fetched.host} did not answer JSON", host=fetched.host) from None
    text = fetched.text()
    if format == "text" and ("html" in fetched.content_type or text.lstrip()[:15].lower().startswith("<!doctype html")):
        text = html_text(text)
    if fetched.cut:
        text += f"\n[cut: the response was longer than {fetched.max_bytes:,} bytes]"
    return text


async def fetch_for_tool(
    fetcher: Fetcher, allowance: Allowance | None, url: str, format: Format, max_bytes: int | None
) -> str:
    """What the agent's ``fetch_url`` tool answers the model: the page, or ``Error: ...`` saying why not (the model
    reads it and may try something else, as with any tool's error)."""
    try:
        fetched = await fetcher.afetch(Request(url, max_bytes=max_bytes), allowance or fetcher.allowance())
        value = shaped(fetched, format)
    except (EgressRefused, EgressFailed) as exc:
        return f"Error: {exc}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _target(url: str | None, value: Any) -> str:
    """The URL of one call (at most MAX_URL_CHARS): the template filled from the input, or the input itself."""
    made = _filled(url, value)
    if len(made) > MAX_URL_CHARS:
        raise ValueError(f"the URL HttpRequest made from its input is longer than {MAX_URL_CHARS:,} characters")
    return made


def _filled(url: str | None, value: Any) -> str:
    if url is None:
        found = value.get("url") if isinstance(value, Mapping) else message_text(value)
        if not isinstance(found, str) or not found.strip():
            raise ValueError("HttpRequest has no url param, so its input must be a URL (text, or an object's 'url')")
        return found.strip()
    if literal(url):
        return url
    fields = _fields(value)
    whole = _FIELD.fullmatch(url.strip())
    missing = sorted({m.group(1) for m in _FIELD.finditer(url)} - set(fields))
    if missing:
        raise ValueError(f"HttpRequest url names {', '.join(missing)}, which its input does not have")
    if whole is not None:
        return fields[whole.group(1)].strip()
    return _FIELD.sub(lambda m: quote(fields[m.group(1)], safe=""), url)


def _fields(value: Any) -> dict[str, str]:
    text = message_text(value)
    if text is not None:
        return {"input": text}
    if isinstance(value, Mapping):
        return {str(k): found for k, v in value.items() if (found := _scalar(v)) is not None}
    raise ValueError(f"HttpRequest takes text or an object as its input, not {type(value).__name__}")


def _scalar(value: Any) -> str | None:
    text = message_text(value)
    if text is not None:
        return text
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None

"""What every HTTP handler shares at the server's edge: the refusal it raises (RequestError), JSON answers, and
reading a request (its body within the size limit, JSON within the nesting limit, the config a client may set)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gitops_flow.exceptions import GitOpsFlowError
from gitops_flow.server import confighash
from gitops_flow.server.nesting import MAX_DEPTH, too_deep

log = logging.getLogger("gitops_flow.server")

CONFIG_KEYS = ("configurable", "tags", "metadata", "run_name")  # what a client may set; the rest is dropped


class RequestError(GitOpsFlowError):
    """A request the server will not run, with the HTTP status and error code that say why."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def client_address(request: Request) -> str:
    """The client's address: the connection's peer, or, when that peer is one of the operator's reverse proxies
    (GITOPS_FLOW_TRUSTED_PROXIES), the address it names in X-Forwarded-For, read by the server's proxy headers from
    the right up to the first address that is no trusted proxy (entries a client writes itself further left are
    never read)."""
    return request.client.host[:64] if request.client is not None else "unknown"


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer; messages and other pydantic models go out as LangServe sends them."""
    return Response(dumps(content), status, headers, media_type="application/json")


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The body of every refusal: ``{"error": {"code", "message"}}``."""
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def dumps(value: Any) -> bytes:
    """A value as the JSON bytes the server answers with."""
    return orjson.dumps(value, default=_default)


def _default(value: Any) -> Any:
    """Messages, documents and other pydantic models go out as LangServe sends them: their fields, with ``type``."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


# -- reading requests ---------------------------------------------------------------------------------------------


async def read_body(request: Request, limit: int | None = None) -> bytes | bytearray:
    """The raw body, refused with 413 past the size limit (``limit``, else the server's; checked on the header and
    while reading). A client that goes away meanwhile is one line in the log, not an error: there is no one left to
    answer."""
    if limit is None:
        limit = int(request.app.state.deps.settings.max_body_bytes)
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isascii() and declared.isdigit() else None
    if size is not None and size > limit:
        raise RequestError(413, "body-too-large", f"the body is {size:,} bytes; the limit is {limit:,}")
    try:
        if size is not None:
            return await request.body()  # the server stops reading at the declared length
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError(413, "body-too-large", f"the body is larger than the limit of {limit:,} bytes")
        return body
    except ClientDisconnect:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s went away while sending the body of %s %s", client, request.method, request.url.path)
        raise RequestError(400, "client-disconnected", "the client went away while sending its body") from None


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters (``; charset=utf-8``)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def require_json(request: Request, *, body_optional: bool = False) -> None:
    """415 unless the body says it is JSON. A browser sends a cross-site form or ``text/plain`` without asking
    first (CORS "simple requests"), never JSON, so a page cannot make a visitor's browser call a flow. With
    ``body_optional``, a request without a body passes."""
    headers = request.headers
    if body_optional and headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers:
        return
    if not is_json(headers.get("content-type")):
        raise RequestError(
            415, "unsupported-media-type", "the body must be JSON, sent as Content-Type: application/json"
        )


async def read_json(request: Request, limit: int | None = None) -> Any:
    """The JSON body: 415 unless its Content-Type is JSON, 413 past the size limit, 422 if it is not JSON (as FastAPI,
    and so LangServe and LangFlow, answer) or when it nests deeper than the server can answer (nesting.MAX_DEPTH)."""
    require_json(request)
    body = await read_body(request, limit)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg in _DEPTH_ERRORS:  # orjson's own limit (1024 levels), past ours
            raise _too_deep() from None
        raise RequestError(422, "invalid-json", f"the body is not JSON: {exc}") from None
    if too_deep(body, value):
        raise _too_deep()
    return value


# orjson's messages for it, newest first (3.10.1, the floor in pyproject.toml, says the last)
_DEPTH_ERRORS = ("depth limit exceeded", "recursion limit exceeded", "array and object recursion depth exceeded")


def _too_deep() -> RequestError:
    return RequestError(422, "too-deep", f"the body nests objects and arrays more than {MAX_DEPTH} levels deep")


def json_object(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise RequestError(422, "bad-body", f"{what} is a JSON object")
    return payload


def request_config(request: Request, raw: Any) -> dict[str, Any]:
    """The client's config: the body's (``raw``) over the one in the path of LangServe's ``/c/{config_hash}/``
    routes, each reduced to what a client may set. A config hash that sets a routing key (``session_id``,
    ``user_id``, ``flow_version``) is refused: a shared link must not fix its follower's conversation or version."""
    config_hash = request.path_params.get("config_hash")
    if not config_hash:
        return _config(raw)
    try:
        hashed = _config(confighash.decode(config_hash))
    except confighash.BadConfigHash as exc:
        raise RequestError(400, "bad-config-hash", str(exc)) from None
    routing = sorted(set(hashed.get("configurable", {})) & set(ROUTING_KEYS))
    if routing:
        # a link is made by whoever shares it and followed by someone else: it never chooses the follower's
        # conversation, user or version (the body or the headers do, which the follower's own client sends)
        raise RequestError(
            400,
            "routing-key-in-config-hash",
            f"a config hash never sets configurable.{routing[0]}: send it in the body's config or a header",
        )
    return confighash.merge(hashed, _config(raw))


def _config(raw: Any) -> dict[str, Any]:
    """The client's runnable config, reduced to what a client may set (LangServe drops the rest the same way)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RequestError(422, "bad-config", "config must be an object")
    clean = {k: raw[k] for k in CONFIG_KEYS if raw.get(k) is not None}
    for key, kind in _CONFIG_TYPES.items():
        if key in clean and not isinstance(clean[key], kind):
            raise RequestError(422, "bad-config", f"config.{key} must be {_KIND_NAMES[kind]}")
    if not all(isinstance(tag, str) for tag in clean.get("tags", ())):
        raise RequestError(422, "bad-config", "config.tags must be a list of strings")
    configurable = clean.get("configurable", {})
    for key in ROUTING_KEYS:
        if configurable.get(key) is not None and not isinstance(configurable[key], str):
            raise RequestError(422, "bad-config", f"config.configurable.{key} must be a string")
    return clean


_CONFIG_TYPES: dict[str, type] = {"configurable": dict, "metadata": dict, "tags": list, "run_name": str}
_KIND_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
ROUTING_KEYS = ("session_id", "user_id", "flow_version")  # configurable keys that choose the version (SPEC 4)

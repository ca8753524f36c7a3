"""The server's own pages (a flow's playground, the API docs): files shipped in the package, served with a strict
Content-Security-Policy so a page can load nothing but itself, from no other site."""

from __future__ import annotations

import functools
from importlib import resources

from starlette.responses import Response

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
# scripts and styles from the server itself only (no inline script), fetch to the server only, never framed
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _read(name: str) -> bytes:
    return (resources.files("gitops_flow.server") / "static" / name).read_bytes()


def page(name: str) -> Response:
    """The shipped file ``static/<name>``, with its type and the page policy."""
    suffix = name[name.rfind(".") :]
    headers = {
        "content-security-policy": POLICY,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }
    return Response(_read(name), media_type=TYPES[suffix], headers=headers)

"""The console's pages: Jinja2 templates shipped in the package, rendered on the server with every value escaped, the
static files they use (a style sheet, a small script, an icon), and the headers every console answer carries.

Nothing is fetched from elsewhere: the page works on a machine without internet, and its Content-Security-Policy lets
it load only what this server serves (no inline script, no inline style), so text from a flow or a commit message
can never run as code even if a template forgot to escape it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.responses import Response

from gitops_flow.console.display import coverage_text, problem_line

STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The static files, read once from the package."""
    folder = resources.files("gitops_flow.console") / "static"
    found = {}
    for name, media_type in STATIC.items():
        body = (folder / name).read_bytes()
        found[name] = Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])
    return found


class Pages:
    """Renders the console's templates. ``clock`` gives the time that "12 s ago" is counted from."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.assets = load_assets()
        self.env = Environment(
            loader=PackageLoader("gitops_flow.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            short=short,
            ago=self.ago,
            when=when,
            pct=pct,
            ms=ms,
            rate=rate,
            problem=problem_line,
            coverage=lambda view: coverage_text(view.window, view.processes, view.replicas),
            svg=lambda text: Markup(text),  # noqa: S704 - only drawing.py and charts.py output, which escape every text
        )
        self.env.globals["asset"] = self.asset

    def asset(self, name: str) -> str:
        """The address of a static file, with its hash, so a browser never keeps an old one."""
        return f"/ui/static/{name}?v={self.assets[name].etag}"

    def render(self, template: str, context: Mapping[str, Any], status: int = 200) -> Response:
        html = self.env.get_template(template).render(**context)
        return Response(html, status, dict(SECURITY_HEADERS), media_type="text/html; charset=utf-8")

    def ago(self, then: float | None) -> str:
        if then is None:
            return "never"
        seconds = max(0, int(self.clock() - then))
        for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
            if seconds >= size:
                return f"{seconds // size} {unit} ago"
        return f"{seconds} s ago"


def static(asset: Asset) -> Response:
    headers = {"etag": f'"{asset.etag}"', "cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"}
    return Response(asset.body, 200, headers, media_type=asset.media_type)


def short(sha: str | None) -> str:
    return sha[:12] if sha else "—"


def when(then: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(then)) if then else "—"


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f} %"


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}/s" if value < 10 else f"{value:.0f}/s"

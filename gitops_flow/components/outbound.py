"""Which built-in nodes send requests out (HttpRequest, WebSearch, an Agent with fetch_url or web_search), and the
problems of their literal destinations under the egress policy: a request that could only ever be refused is a
validation problem (``egress-refused``), in CI and on the server, rather than a failure of every run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitops_flow.components import http_request, web_search
from gitops_flow.problems import Problem, json_path
from gitops_flow.security.egress import EgressPolicy

SENDERS = frozenset({"HttpRequest", "WebSearch", "Agent"})


def problems(
    component: str, params: Mapping[str, Any], base: tuple[str | int, ...], egress: EgressPolicy
) -> list[Problem]:
    """The egress problems of one node of ``component`` with ``params`` (``base``: the path of its params)."""
    if component == "HttpRequest":
        return http_request.literal_problems(params, base, egress)
    if component == "WebSearch":
        return web_search.endpoint_problems(base, egress, "WebSearch")
    if component != "Agent":
        return []
    found: list[Problem] = []
    tools = params.get("tools") or []
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        name = tool.get("name") if isinstance(tool, dict) else tool
        where = (*base, "tools", index)
        if name == "web_search":
            found += web_search.endpoint_problems(where, egress, "the agent's web_search")
        elif name == "fetch_url" and not egress.entries:
            found.append(
                Problem(
                    code="egress-off",
                    message="outbound requests are off on this server (GITOPS_FLOW_ALLOWED_FETCH_URLS allows none), "
                    "so every fetch_url call will answer the model an error",
                    path=json_path(list(where)),
                    severity="warning",
                )
            )
    return found

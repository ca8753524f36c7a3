"""A plan for people and tools: text for a terminal, Markdown for a job summary and a pull-request comment, JSON.

The Markdown opens with MARKER, an HTML comment GitHub does not show, by which the workflow finds its own comment to
update instead of adding another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import orjson

from gitops_flow.components.provider_packages import ProviderPackage
from gitops_flow.plan.compute import FlowPlan, Plan
from gitops_flow.plan.diff import Change
from gitops_flow.plan.scorecard import cell
from gitops_flow.plan.scorecard import markdown as eval_markdown
from gitops_flow.plan.scorecard import text as eval_text
from gitops_flow.problems import Problem

Format = Literal["text", "markdown", "json"]
FORMATS: tuple[Format, ...] = ("text", "markdown", "json")
MARKER = "<!-- gitops-flow plan -->"
MAX_PROBLEMS = 5  # problems shown per flow; the rest are counted
MAX_CHARS = 60_000  # GitHub takes comments of at most 65,536 characters
ONE_BY_ONE = (
    "The server judges each flow on its own: a flow that fails keeps serving its last good version, and the others "
    "go live."
)
_SIGN = {"added": "+", "removed": "-", "changed": "~"}
_VERDICT_TEXT = {
    "live": "goes live",
    "canary": "becomes a canary",
    "waits": "is built but not served yet",
    "fails": "fails; keeps serving its last good version",
    "blocked": "not deployed: the routing file fails the whole commit",
    "removed": "removed: no longer served from the branch head",
    "unchanged": "unchanged",
}


def render(plan: Plan, fmt: Format) -> str:
    if fmt == "json":
        return orjson.dumps(plan.as_dict(), option=orjson.OPT_INDENT_2).decode()
    if fmt == "markdown":
        return markdown(plan)
    return text(plan)


def headline(plan: Plan) -> str:
    """One line: how many flows go live, fail, are removed; or that the whole commit fails."""
    if plan.whole_fails:
        return "The whole commit will fail: the routing file has problems, so nothing of it goes live."
    said = (
        ("live", "will go live"),
        ("canary", "will become a canary"),
        ("waits", "will wait for a ref"),
        ("fails", "will fail"),
        ("removed", "will be removed"),
    )
    counted = [(sum(f.verdict == verdict for f in plan.flows), text) for verdict, text in said]
    changed = [
        f"{n} flow{'s' if n != 1 else ''} {text}" if i == 0 else f"{n} {text}"
        for i, (n, text) in enumerate((n, text) for n, text in counted if n)
    ]
    if not changed and not plan.routing:
        return "Nothing the server serves changes."
    return (", ".join(changed) or "No flow changes") + "."


def text(plan: Plan) -> str:
    lines = [f"Plan against {plan.base}: {headline(plan)}", ONE_BY_ONE, ""]
    for flow in plan.flows:
        if flow.status == "unchanged":
            continue
        lines.append(f"{flow.name} ({flow.status}): {_verdict(flow)}")
        lines += [f"  {_SIGN[c.kind]} {c.what}" + (f": {c.detail}" if c.detail else "") for c in _all(flow)]
        lines += [f"  ! breaking {c.side}: {c.text}" for c in flow.contract if c.breaking]
        lines += [f"  ~ {c.text}" for c in flow.contract if not c.breaking]
        if flow.secrets:
            lines.append(f"  secrets: {', '.join(_new(flow))}")
        if flow.packages:
            lines.append(f"  provider packages: {', '.join(_package(p) for p in flow.packages)}")
        if flow.tests != (0, 0):
            lines.append(f"  tests: {flow.tests[0]} passed, {flow.tests[1]} failed")
        lines += [f"  {p.describe()}" for p in flow.problems[:MAX_PROBLEMS]]
        if len(flow.problems) > MAX_PROBLEMS:
            lines.append(f"  … and {len(flow.problems) - MAX_PROBLEMS} more problems")
    unchanged = [f.name for f in plan.flows if f.status == "unchanged"]
    if unchanged:
        lines.append(f"unchanged: {', '.join(unchanged)}")
    if plan.routing or plan.routing_problems:
        lines.append("routing (gitops-flow.yaml):")
        lines += [f"  {_SIGN[c.kind]} {c.what}" + (f": {c.detail}" if c.detail else "") for c in plan.routing]
        lines += [f"  {p.describe()}" for p in plan.routing_problems]
    if plan.evals is not None:
        lines.append(eval_text(plan.evals))
    return "\n".join(lines).rstrip()


def markdown(plan: Plan) -> str:
    lines = [MARKER, "### gitops-flow plan", "", f"**{headline(plan)}** Compared with `{plan.base}`. {ONE_BY_ONE}", ""]
    shown = [f for f in plan.flows if f.status != "unchanged"]
    if shown:
        lines += ["| flow | change | verdict |", "| --- | --- | --- |"]
        for flow in shown:
            change = flow.status if flow.status != "changed" else f"changed: {flow.diff.counts()}"
            lines.append(f"| `{flow.name}` | {change} | {_mark(flow)} {cell(_verdict(flow))} |")
        lines.append("")
        for flow in shown:
            details = _details(flow)
            if details:
                lines += [f"<details><summary><code>{flow.name}</code></summary>", "", *details, "", "</details>", ""]
    unchanged = [f.name for f in plan.flows if f.status == "unchanged"]
    if unchanged:
        lines += [f"Unchanged: {', '.join(f'`{name}`' for name in unchanged)}.", ""]
    if plan.routing or plan.routing_problems:
        lines += ["#### Routing (`gitops-flow.yaml`)", ""]
        lines += [f"- {_change(c)}" for c in plan.routing]
        lines += [f"- {'❌' if p.severity == 'error' else '⚠️'} {_problem(p)}" for p in plan.routing_problems]
        lines.append("")
    if plan.evals is not None:
        lines += eval_markdown(plan.evals)
    out = "\n".join(lines).rstrip() + "\n"
    if len(out) > MAX_CHARS:
        out = out[:MAX_CHARS] + "\n\n… (cut: run `gitops-flow plan` for the whole plan)\n"
    return out


def _package(package: ProviderPackage) -> str:
    return f"{package.distribution} ({package.install_hint()})"


def _details(flow: FlowPlan) -> list[str]:
    lines = [f"- {_change(c)}" for c in _all(flow)]
    lines += [f"- ⚠️ **breaking {c.side}**: {cell(c.text)}" for c in flow.contract if c.breaking]
    lines += [f"- {cell(c.text)}" for c in flow.contract if not c.breaking]
    if flow.secrets:
        lines.append(f"- secrets it reads (the server must have them): {', '.join(_new(flow, code=True))}")
    if flow.packages:
        shown = ", ".join(f"`{_package(p)}`" for p in flow.packages)
        lines.append(f"- provider packages it needs (the server must have them): {shown}")
    if flow.tests != (0, 0):
        lines.append(f"- tests: {flow.tests[0]} passed, {flow.tests[1]} failed")
    lines += [f"- {'❌' if p.severity == 'error' else '⚠️'} {_problem(p)}" for p in flow.problems[:MAX_PROBLEMS]]
    if len(flow.problems) > MAX_PROBLEMS:
        lines.append(f"- … and {len(flow.problems) - MAX_PROBLEMS} more problems")
    return lines


def _all(flow: FlowPlan) -> Sequence[Change]:
    diff = flow.diff
    return [*diff.nodes, *diff.params, *diff.edges, *diff.tests, *diff.other]


def _verdict(flow: FlowPlan) -> str:
    text = _VERDICT_TEXT[flow.verdict]
    if flow.verdict == "fails" and flow.status == "added":
        text = "fails; a new flow, so it is not served"
    if flow.verdict == "fails":
        first = next((p for p in flow.problems if p.severity == "error"), None)
        if first is not None:
            where = f"{first.file}:{first.line}" if first.line else first.file
            text += f" ({where} {first.code})"
    if flow.verdict in ("canary", "waits") and flow.serves:
        text += f": {flow.serves}"
    if flow.verdict in ("live", "canary") and flow.breaking:
        text += ", with a breaking contract change"
    if flow.verdict in ("live", "canary") and flow.new_secrets:
        text += f" if the server has {', '.join(flow.new_secrets)}"
    return text


def _mark(flow: FlowPlan) -> str:
    if flow.verdict in ("live", "canary"):
        return "⚠️" if flow.breaking else "✅" if flow.verdict == "live" else "🐤"
    return {"fails": "❌", "blocked": "⛔", "removed": "🗑️", "waits": "⏸️"}.get(flow.verdict, "")


def _new(flow: FlowPlan, *, code: bool = False) -> list[str]:
    quote = "`" if code else ""
    return [f"{quote}{s}{quote}" + (" (new)" if s in flow.new_secrets else "") for s in flow.secrets]


def _change(change: Change) -> str:
    sign = {"added": "added", "removed": "removed", "changed": "changed"}[change.kind]
    detail = f": {cell(change.detail)}" if change.detail else ""
    return f"{sign} {cell(change.what)}{detail}"


def _problem(problem: Problem) -> str:
    where = f"{problem.file}:{problem.line}" if problem.line else problem.file
    return f"`{where}` {problem.code}: {cell(problem.message)}"

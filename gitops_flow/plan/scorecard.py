"""An evaluation for people and tools: text for a terminal, Markdown for a job summary and the plan's pull-request
comment, JSON."""

from __future__ import annotations

from typing import Literal

import orjson

from gitops_flow.plan.evals import DatasetResult, EvalReport, FlowEval, ScorerResult

Format = Literal["text", "markdown", "json"]


def render(report: EvalReport, fmt: Format) -> str:
    if fmt == "json":
        return orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode()
    if fmt == "markdown":
        return "\n".join(markdown(report, heading="### gitops-flow eval"))
    return text(report)


def headline(report: EvalReport) -> str:
    if not report.flows:
        return "No flow lists evals."
    against = f" against {report.base}" if report.base else ""
    failed = [f.flow for f in report.flows if f.failures or _errors(f)]
    if failed:
        return f"{len(report.flows)} flow(s) evaluated{against}; failed: {', '.join(failed)}."
    return f"{len(report.flows)} flow(s) evaluated{against}; every threshold holds."


def text(report: EvalReport) -> str:
    lines = [f"Eval: {headline(report)}"]
    for flow in report.flows:
        lines.append(f"{flow.flow} ({flow.file})" + (f": {flow.base_note}" if flow.base_note else ""))
        lines += [f"  {p.describe()}" for p in flow.problems]
        for dataset in flow.datasets:
            lines.append(f"  {dataset.dataset} ({dataset.cases} cases)")
            lines += [f"    {_score_line(s)}" for s in dataset.scorers]
            lines += [f"    the flow failed on {failure}" for failure in dataset.failed]
            for case in dataset.changed:
                moved = ", ".join(f"{s} {_num(b)} -> {_num(h)}" for s, (b, h) in case.scores.items())
                lines.append(f"    changed {case.label} (line {case.line}): {moved}")
                lines.append(f"      input: {case.input}")
                lines.append(f"      base:  {case.base_output}")
                lines.append(f"      head:  {case.head_output}")
            if dataset.more_changed:
                lines.append(f"    … and {dataset.more_changed} more changed cases")
        lines += [f"  FAILED: {failure}" for failure in flow.failures]
    return "\n".join(lines)


def markdown(report: EvalReport, *, heading: str = "#### Evaluation") -> list[str]:
    """The evaluation as Markdown lines: a table per flow (scorer, base, head, delta) and its changed cases folded."""
    lines = [heading, "", f"**{headline(report)}**", ""]
    for flow in report.flows:
        mark = "❌" if flow.failures or _errors(flow) else "✅"
        lines += [f"{mark} `{flow.flow}`" + (f" ({cell(flow.base_note)})" if flow.base_note else ""), ""]
        lines += [f"- ❌ `{p.file}:{p.line or ''}` {p.code}: {cell(p.message)}" for p in flow.problems]
        lines += [f"- ❌ threshold: {cell(failure)}" for failure in flow.failures]
        rows = [(d, s) for d in flow.datasets for s in d.scorers]
        if rows:
            lines += ["", "| dataset | scorer | base | head | delta |", "| --- | --- | --- | --- | --- |"]
            for dataset, result in rows:
                if result.skipped:
                    cells = f"skipped: {cell(result.skipped)} | | "
                else:
                    cells = f"{_num(result.base)} | {_num(result.head)} | {_delta(result.delta)}"
                lines.append(f"| `{cell(dataset.dataset)}` | {result.scorer} | {cells} |")
        for dataset in flow.datasets:
            lines += [f"- ⚠️ the flow failed on {cell(failure)}" for failure in dataset.failed]
            lines += _changed(dataset)
        lines.append("")
    return lines


def _changed(dataset: DatasetResult) -> list[str]:
    if not dataset.changed:
        return []
    count = len(dataset.changed) + dataset.more_changed
    lines = ["", f"<details><summary>{count} changed case(s) in <code>{cell(dataset.dataset)}</code></summary>", ""]
    for case in dataset.changed:
        moved = ", ".join(f"{s} {_num(b)} → {_num(h)}" for s, (b, h) in case.scores.items())
        lines.append(
            f"- {cell(case.label)} (line {case.line}): {moved}; base: `{_code(case.base_output)}`, "
            f"head: `{_code(case.head_output)}`"
        )
    if dataset.more_changed:
        lines.append(f"- … and {dataset.more_changed} more")
    return [*lines, "", "</details>"]


def _score_line(result: ScorerResult) -> str:
    if result.skipped:
        return f"{result.scorer}: skipped ({result.skipped})"
    return f"{result.scorer}: base {_num(result.base)}, head {_num(result.head)}, delta {_delta(result.delta)}"


def _errors(flow: FlowEval) -> bool:
    return any(p.severity == "error" for p in flow.problems)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _delta(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _code(text: str) -> str:
    return cell(text).replace("`", "'")


def cell(text: str) -> str:
    """Text safe in a Markdown table cell and a comment: no pipe breaks the table, no HTML or mention is made."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("@", "@\u200b")
        .replace("\n", " ")
    )

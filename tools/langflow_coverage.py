"""Which of LangFlow's starter projects gitops-flow converts, and why it refuses the others.

    python tools/langflow_coverage.py                         # the releases below, fetched with pip
    python tools/langflow_coverage.py 1.13.0 1.12.8 --wheels DIR  # wheels already downloaded into DIR
    python tools/langflow_coverage.py --write docs/langflow.md    # rewrite the table between its markers

For each ``langflow-base`` release it fetches the wheel (``pip download --no-deps langflow-base==X``), reads every
starter project (``langflow/initial_setup/starter_projects/*.json``) as data, validates it as the server would (the
file name is LangFlow's own), and, for each that converts, runs it once with every model answered by a fake (as
``serve --fake-models`` does), with a text input made from its input schema. Nothing in the wheel is imported or run.
It prints one row per project, and what blocks the refused ones: each node type (or other reason) a refusal names,
with the number of projects that name it and the number it alone blocks (the projects one change away).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitops_flow.components.fake_answers import fake_answers
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.runtime.compiler import build_flow
from gitops_flow.runtime.conversations import MemoryHistoryStore
from gitops_flow.validation.documents import FileReport, validate_bytes

RELEASES = ("1.13.0", "1.12.8", "1.12.7")  # the last three langflow-base releases when this was written
STARTERS = re.compile(r"^langflow/initial_setup/starter_projects/[^/]+\.json$")
START, END = "<!-- langflow-coverage:start -->", "<!-- langflow-coverage:end -->"
# a refusal's node label: "<id> (<type>, '<name>') cannot be converted: ..." or "<id> (<type>, '<name>'): <reason>"
_LABEL = re.compile(r"^\S.*? \(([^,()]+)(?:, '[^']*')?\)(?: cannot be converted|: ([^(;,:]+))")


@dataclass
class Row:
    release: str
    project: str
    converted: bool
    ran: bool | None = None  # under fakes; None when not converted
    why: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)  # what a refusal names: node types, or other reasons


def fetch(release: str, folder: Path) -> Path:
    found = sorted(folder.glob(f"langflow_base-{release}-*.whl"))
    if found:
        return found[0]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"langflow-base=={release}", "-d", folder]
    subprocess.run(list(map(str, command)), check=True)
    return sorted(folder.glob(f"langflow_base-{release}-*.whl"))[0]


def starters(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {Path(n).name: archive.read(n) for n in sorted(archive.namelist()) if STARTERS.match(n)}


def judge(release: str, file_name: str, raw: bytes, registry: ComponentRegistry) -> Row:
    report = validate_bytes(raw, registry, file=file_name, stem=file_name.removesuffix(".json"))
    row = Row(release, file_name.removesuffix(".json"), report.ok)
    if not report.ok:
        errors = [p for p in report.problems if p.severity == "error"]
        row.why = [f"{p.code}: {p.message}" for p in errors]
        row.blockers = list(dict.fromkeys(blocker(p.code, p.message) for p in errors))
        return row
    row.ran, failure = run_with_fakes(report, registry)
    if failure:
        row.why = [failure]
    return row


def blocker(code: str, message: str) -> str:
    """What a problem says blocks the conversion: the node type it refuses (``UnifiedWebSearch``), the type and the
    reason when a supported type is refused for a setting (``ChatInput: the flow expects files with its input``), or
    the problem's code for the rest (``several-exits``)."""
    found = _LABEL.match(message) if code == "langflow-unsupported" else None
    if found is None:
        return code
    kind, reason = found.groups()
    return f"{kind}: {reason.strip()}" if reason else kind


def run_with_fakes(report: FileReport, registry: ComponentRegistry) -> tuple[bool, str]:
    """Run the converted flow once, every model node answered by a fake; (ran, why not)."""
    spec = report.spec
    assert spec is not None
    fakes = fake_answers(spec, registry)  # what `serve --fake-models` answers
    try:
        built = build_flow(spec, registry, fakes=fakes, history=MemoryHistoryStore())
        value = sample_input(built.input_model)
        config = {"configurable": {"session_id": "coverage"}}
        asyncio.run(built.runnable.ainvoke(value, config))  # type: ignore[arg-type]
    except Exception as exc:  # the report says why, whatever it was
        return False, f"run under fakes: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return True, ""


def sample_input(model: Any) -> Any:
    """A text for each required field of the flow's input (or the text itself)."""
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, dict) or "root" in fields:
        return "Hello"
    return {name: "Hello" for name, info in fields.items() if info.is_required()}


def table(rows: list[Row]) -> str:
    lines = ["| release | starter project | result | why |", "| --- | --- | --- | --- |"]
    for row in rows:
        if row.converted and row.ran:
            result, why = "converted, runs", ""
        elif row.converted:
            result, why = "converted, fails under fakes", "; ".join(row.why)
        else:
            result, why = "refused", "; ".join(_short(w) for w in row.why[:3])
            why += f" (and {len(row.why) - 3} more)" if len(row.why) > 3 else ""
        lines.append(f"| {row.release} | {row.project} | {result} | {why.replace('|', '/')} |")
    return "\n".join(lines)


def _short(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."


def summary(rows: list[Row]) -> str:
    converted = sum(1 for r in rows if r.converted)
    runs = sum(1 for r in rows if r.converted and r.ran)
    return (
        f"{converted} of {len(rows)} starter projects convert ({runs} run under fakes); {len(rows) - converted} are "
        "refused."
    )


def blockers(rows: list[Row]) -> str:
    """What blocks the refused projects: each blocker, the projects that name it, and those it alone blocks."""
    named = Counter(b for r in rows for b in r.blockers)
    alone = Counter(r.blockers[0] for r in rows if len(r.blockers) == 1)
    lines = ["| blocks | projects naming it | projects it alone blocks |", "| --- | --- | --- |"]
    for name in sorted(named, key=lambda b: (-alone[b], -named[b], b)):
        projects = sorted({r.project for r in rows if r.blockers == [name]})
        which = f" ({', '.join(projects)})" if projects else ""
        lines.append(f"| `{name}` | {named[name]} | {alone[name]}{which} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="*", default=list(RELEASES))
    parser.add_argument("--wheels", type=Path, help="a folder holding (or to hold) the wheels")
    parser.add_argument("--write", type=Path, help="a Markdown file whose table (between its markers) to rewrite")
    args = parser.parse_args(argv)
    registry = ComponentRegistry.builtin()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.wheels or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for release in args.releases:
            for file_name, raw in starters(fetch(release, folder)).items():
                rows.append(judge(release, file_name, raw, registry))
    text = f"{summary(rows)}\n\n{blockers(rows)}\n\n{table(rows)}\n"
    if args.write is None:
        print(text)
        return 0
    page = args.write.read_text()
    if START not in page or END not in page:
        print(f"{args.write} has no {START} ... {END} markers", file=sys.stderr)
        return 2
    before, _, rest = page.partition(START)
    _, _, after = rest.partition(END)
    args.write.write_text(f"{before}{START}\n{text}{END}{after}")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    raise SystemExit(main())

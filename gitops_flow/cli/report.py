"""Problems and test results printed for people (text), tools (json) and pull requests (GitHub annotations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import orjson

from gitops_flow.components.provider_packages import ProviderPackage
from gitops_flow.problems import Problem
from gitops_flow.runtime.flow_tests import CaseResult

Format = Literal["text", "json", "github"]
FORMATS: tuple[Format, ...] = ("text", "json", "github")


def problems(
    found: Sequence[Problem], files: int, fmt: Format, packages: Sequence[tuple[ProviderPackage, list[str]]] = ()
) -> str:
    """The whole output of `gitops-flow validate`; ``packages``: the model provider packages the flows need where
    they are served, each with the flows that need it."""
    errors = sum(p.severity == "error" for p in found)
    warnings = sum(p.severity == "warning" for p in found)
    summary = (
        f"{files} file{'s' if files != 1 else ''} checked: {_count(errors, 'error')}, {_count(warnings, 'warning')}"
    )
    needs = [
        f"needs {package.distribution} (model provider {package.provider!r}; {', '.join(flows)}): "
        f"{package.install_hint()} where it is served ({'installed' if package.installed else 'not installed'} here)"
        for package, flows in packages
    ]
    if fmt == "json":
        body = {
            "files": files,
            "errors": errors,
            "warnings": warnings,
            "problems": [p.as_dict() for p in found],
            "packages": [
                {
                    "package": package.distribution,
                    "provider": package.provider,
                    "install": package.install_hint(),
                    "installed": package.installed,
                    "flows": flows,
                }
                for package, flows in packages
            ],
        }
        return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    if fmt == "github":
        lines = [annotation(p.severity, p.file, p.line, f"{p.code}", f"{p.path}: {p.message}") for p in found]
        return "\n".join([*lines, *needs, summary])
    return "\n".join([*(p.describe() for p in found), *needs, summary])


def results(found: Sequence[CaseResult], invalid: Sequence[Problem], files: dict[str, str], fmt: Format) -> str:
    """The whole output of `gitops-flow test`; ``files`` maps flow name -> file shown."""
    passed = sum(r.passed for r in found)
    failed = len(found) - passed
    errors = [p for p in invalid if p.severity == "error"]
    summary = f"{passed} passed, {failed} failed"
    if errors:
        summary += f", {_count(len({p.file for p in errors}), 'flow')} invalid"
    if fmt == "json":
        body = {
            "passed": passed,
            "failed": failed,
            "results": [
                {
                    "flow": r.flow,
                    "case": r.case,
                    "passed": r.passed,
                    "message": r.message,
                    "duration_ms": r.duration_ms,
                    **({} if r.passed else {"code": r.code}),
                }
                for r in found
            ],
            "problems": [p.as_dict() for p in errors],
        }
        return orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str).decode()
    lines: list[str] = []
    if fmt == "github":
        lines += [annotation("error", p.file, p.line, p.code, f"{p.path}: {p.message}") for p in errors]
        lines += [
            annotation("error", files.get(r.flow, ""), r.line, f"{_title(r.code)}: {r.case}", r.message)
            for r in found
            if not r.passed
        ]
    else:
        lines += [p.describe() for p in errors]
        for result in found:
            if result.passed:
                lines.append(f"PASS {result.flow} :: {result.case} ({result.duration_ms:.1f} ms)")
            else:
                code = "" if result.code == "test-failed" else f" [{result.code}]"
                lines.append(f"FAIL {result.flow} :: {result.case}{code}: {result.message}")
    return "\n".join([*lines, summary])


def _title(code: str) -> str:
    return "test failed" if code == "test-failed" else code


def annotation(severity: str, file: str, line: int | None, title: str, message: str) -> str:
    """A GitHub Actions workflow command, escaped as the runner expects."""
    props = [f"file={_escape_property(file)}"] if file else []
    if line is not None:
        props.append(f"line={line}")
    props.append(f"title={_escape_property(title)}")
    return f"::{severity} {','.join(props)}::{_escape_data(message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

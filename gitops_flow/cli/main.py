"""The `gitops-flow` command line: ``main(argv) -> exit code``; the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import orjson

from gitops_flow import __version__
from gitops_flow.cli import remote as servercli
from gitops_flow.cli import report
from gitops_flow.cli.completion import SHELLS, script
from gitops_flow.components.knowledge import CorpusLimits, Knowledge, Library
from gitops_flow.components.provider_packages import ProviderPackage, needed
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.config import Resolved, Settings
from gitops_flow.exceptions import ConfigError, GitOpsFlowError, SourceError, UnknownVersion, UsageError
from gitops_flow.flow.document import json_schema
from gitops_flow.flow.locations import LineIndex
from gitops_flow.flow.routing import ROUTING_FILE, RoutingConfig
from gitops_flow.langflow.convert import slug
from gitops_flow.problems import Problem
from gitops_flow.runtime.flow_tests import CaseResult
from gitops_flow.runtime.sandbox import TestSandbox
from gitops_flow.security.redaction import carries_credentials, redact
from gitops_flow.validation.datasets import eval_problems
from gitops_flow.validation.documents import (
    MAX_EXPORT_BYTES,
    FileReport,
    duplicate_names,
    validate_bytes,
    validate_file,
)
from gitops_flow.validation.routing import validate_routing_bytes, worktree_reader
from gitops_flow.validation.worktree import WorkingTree, root_of

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
_SERVE_TEXT = (
    "Serve every commit of a flow repository as a version: follows the branch by polling (and webhooks), "
    "builds each commit off the request path and swaps it in without a restart."
)
WORKFLOW_PATH = Path(".github/workflows/gitops-flow.yml")
_SCHEMA_EPILOG = (
    "Both schemas ship in the package (gitops_flow/flow/schema/); an editor with the YAML language server checks the"
    " routing file against it with a first line `# yaml-language-server: $schema=<URL or path of gitops-flow.v1.json>`"
    " (docs/configuration.md)."
)
_VIEW_EPILOG = (
    "A server with a read token wants it: set GITOPS_FLOW_READ_TOKEN (or GITOPS_FLOW_ADMIN_TOKEN) in the environment;"
    " a token is never taken on the command line, where other users of the machine could read it."
)


@dataclass(frozen=True, slots=True)
class Targets:
    """What a `validate` or `test` run checks: flow files and routing files, as the user will see them named."""

    flows: tuple[Path, ...]
    routing: tuple[Path, ...]


def main(
    argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    stdout = out or sys.stdout
    env = os.environ if environ is None else environ
    args.environ = env  # for the commands that read GitHub Actions' variables (plan --comment)
    try:
        resolved = _settings(args, env)
        args.sources = resolved.sources  # for `settings`, which shows where each value came from
        code: int = args.handler(args, resolved.settings, stdout)
        return code
    except UsageError as exc:
        print(f"gitops-flow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GitOpsFlowError as exc:
        print(f"gitops-flow: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitops-flow", description="LLM flows shipped through Git.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, handler, text in (
        ("validate", _validate, "check and dry-build flow documents and the routing file"),
        ("test", _test, "run the flows' tests with fake models"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("paths", nargs="*", metavar="PATH", help="flow files or folders (default: .)")
        command.add_argument("--format", choices=report.FORMATS, default="text")
        command.add_argument("--components", type=Path, metavar="FILE", help="operator components file (YAML)")
        if name == "validate":
            command.add_argument(
                "--base",
                metavar="REV",
                help="also report changes of each flow's input and output schemas since REV (a commit, branch or tag "
                "of the Git repository holding the flows) that break its callers",
            )
        command.set_defaults(handler=handler)

    text = "what merging this branch will do: per flow, what changes and whether it goes live (computed offline)"
    plan = commands.add_parser("plan", help=text, description=text)
    plan.add_argument("directory", nargs="?", type=Path, default=Path("."), help="the flow repository (default: .)")
    plan.add_argument(
        "--base",
        metavar="REV",
        help="the revision merged into (default: origin/BRANCH, else BRANCH; see GITOPS_FLOW_BRANCH)",
    )
    plan.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    plan.add_argument("--components", type=Path, metavar="FILE", help="operator components file (YAML)")
    plan.add_argument(
        "--comment",
        action="store_true",
        help="also put the plan (Markdown) on the pull request of this GitHub Actions run, as one comment updated on "
        "each run (needs GITHUB_TOKEN with pull-requests: write)",
    )
    plan.set_defaults(handler=_plan)

    text = (
        "score each flow on the datasets it lists in evals, at the working tree and at --base, and compare; fails "
        "(exit 1) when the routing file's evals threshold is breached"
    )
    evals = commands.add_parser("eval", help="score flows on their datasets, against a base", description=text)
    evals.add_argument("directory", nargs="?", type=Path, default=Path("."), help="the flow repository (default: .)")
    evals.add_argument("--base", metavar="REV", help="the revision to compare with (a commit, branch or tag)")
    evals.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    evals.add_argument("--components", type=Path, metavar="FILE", help="operator components file (YAML)")
    evals.set_defaults(handler=_eval)

    text = "print the JSON Schema of flow documents, or with --config of the routing file (gitops-flow.yaml)"
    schema = commands.add_parser("schema", help=text, description=text, epilog=_SCHEMA_EPILOG)
    schema.add_argument("--config", action="store_true", help=f"the schema of {ROUTING_FILE} instead")
    schema.set_defaults(handler=_schema)

    components = commands.add_parser("components", help="list the components flows may use")
    components.add_argument("--components", type=Path, metavar="FILE", help="operator components file (YAML)")
    components.set_defaults(handler=_components)

    serve = commands.add_parser("serve", help="serve every commit of a flow repository", description=_SERVE_TEXT)
    _serve_flags(serve)
    serve.set_defaults(handler=_serve)

    text = "print every setting serve would run with: its value (secrets masked), where it came from, and its doc"
    shown = commands.add_parser("settings", help=text, description=text)
    _serve_flags(shown)
    shown.add_argument("--json", action="store_true", help="one JSON object per setting, in a list")
    shown.set_defaults(handler=_show_settings)

    demo = commands.add_parser("demo", help="serve the example flows from a local repository, with a walkthrough")
    demo.add_argument("--port", type=int, default=8000, help="port to serve on (another is chosen if it is taken)")
    demo.add_argument(
        "--exit",
        action="store_true",
        help="stop after the walkthrough (the default when not run in a terminal)",
    )
    demo.set_defaults(handler=_demo)

    for name, handler, text, default in (
        ("versions", servercli.versions, "list the versions a server has seen, newest first", 50),
        ("history", servercli.history, "show a server's deploy history, newest first", 100),
    ):
        view = commands.add_parser(name, help=text, description=text, epilog=_VIEW_EPILOG)
        view.add_argument(
            "--server",
            metavar="URL",
            help="the server's address (default: GITOPS_FLOW_SERVER, else http://127.0.0.1:8000)",
        )
        view.add_argument(
            "--limit", type=_positive, default=default, metavar="N", help=f"show at most N (default {default})"
        )
        view.add_argument("--json", action="store_true", help="print the server's JSON (the pages joined)")
        view.set_defaults(handler=handler)

    text = "what a server serves, per flow and ref, with its recent traffic and what needs a person (as /ui shows it)"
    status = commands.add_parser("status", help="show a server's overview", description=text)
    status.add_argument(
        "--server", metavar="URL", help="the server's address (default: GITOPS_FLOW_SERVER, else http://127.0.0.1:8000)"
    )
    status.add_argument("--json", action="store_true", help="print the server's JSON as it is")
    status.set_defaults(handler=servercli.status)

    text = "a flow's experiment: each arm's traffic and feedback, and per key whether the canary beats the primary"
    experiment = commands.add_parser("experiment", help="show a flow's experiment report", description=text)
    experiment.add_argument("flow", metavar="FLOW")
    experiment.add_argument(
        "--server", metavar="URL", help="the server's address (default: GITOPS_FLOW_SERVER, else http://127.0.0.1:8000)"
    )
    experiment.add_argument("--json", action="store_true", help="print the server's JSON as it is")
    experiment.set_defaults(handler=servercli.experiment)

    for name, handler, text in (
        ("abort", servercli.abort, "stop a flow's canary at once, on every replica (needs GITOPS_FLOW_ADMIN_TOKEN)"),
        ("resume", servercli.resume, "give an aborted canary its weight back (needs GITOPS_FLOW_ADMIN_TOKEN)"),
    ):
        operate = commands.add_parser(name, help=text, description=text)
        operate.add_argument("flow", metavar="FLOW")
        operate.add_argument("--ref", help="one canary ref of the flow's route (default: each of them)")
        operate.add_argument(
            "--server",
            metavar="URL",
            help="the server's address (default: GITOPS_FLOW_SERVER, else http://127.0.0.1:8000)",
        )
        operate.set_defaults(handler=handler)

    text = "convert LangFlow exports to flow documents (never running the code they store)"
    importer = commands.add_parser("import-langflow", help=text, description=text)
    importer.add_argument("files", nargs="+", metavar="FILE", help="LangFlow exports (.json)")
    importer.add_argument(
        "-o", "--output", type=Path, default=Path("."), metavar="DIR", help="where to write <name>.json (default: .)"
    )
    importer.add_argument("--format", choices=report.FORMATS, default="text")
    importer.add_argument("--components", type=Path, metavar="FILE", help="operator components file (YAML)")
    importer.set_defaults(handler=_import_langflow)

    init = commands.add_parser("init", help="add the CI workflow and an example flow to a flow repository")
    init.add_argument("directory", nargs="?", type=Path, default=Path("."))
    init.add_argument(
        "--force", action="store_true", help="overwrite the workflow and flows/hello.json where they exist already"
    )
    init.add_argument(
        "--install",
        metavar="SPEC",
        help="the pip requirement CI installs gitops-flow with (default: where this copy came from, when CI can "
        "reach it, else gitops-flow==VERSION; a repository variable GITOPS_FLOW_INSTALL overrides it)",
    )
    init.set_defaults(handler=_init)

    text = 'print a shell completion script: eval "$(gitops-flow completion bash)" in ~/.bashrc (zsh alike)'
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description=text,
        epilog="fish: gitops-flow completion fish > ~/.config/fish/completions/gitops-flow.fish",
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=_completion)
    return parser


def _serve_flags(command: argparse.ArgumentParser) -> None:
    """The flags that set settings: `serve` runs with them, `settings` shows what they resolve to."""
    command.add_argument("--repo", metavar="URL_OR_PATH", help="the flow repository (or GITOPS_FLOW_REPO)")
    command.add_argument("--branch", help="the branch to follow (default: main)")
    command.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    command.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    command.add_argument(
        "--poll-interval", type=float, metavar="SECONDS", help="fetch at least this often (default 30)"
    )
    command.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving the port as one server (default: one per available core; 1 with memory://)",
    )
    command.add_argument(
        "--state", metavar="URL", help="sqlite:///PATH (default: a file in the data folder) or redis://HOST:PORT/DB"
    )
    command.add_argument("--data-dir", type=Path, metavar="DIR", help="where the clone and state live (.gitops-flow)")
    command.add_argument("--fake-models", action="store_true", default=None, help="answer every model with a fake")
    command.add_argument("--components", type=Path, metavar="FILE", help="operator components file (YAML)")
    command.add_argument(
        "--log-format", choices=("text", "json"), help="log lines as text (the default) or one JSON object each"
    )
    command.add_argument("--log-level", choices=("debug", "info", "warning", "error", "critical"), help="default: info")
    command.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a log line per answered request (default: on; off costs no work per request, as does a level above info)",
    )
    command.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="GITOPS_FLOW_* settings as KEY=VALUE lines; the environment and flags win over it",
    )


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Resolved:
    flags = {
        "components_file": getattr(args, "components", None),
        "repo_url": getattr(args, "repo", None),
        "branch": getattr(args, "branch", None),
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "poll_interval": getattr(args, "poll_interval", None),
        "workers": getattr(args, "workers", None),
        "state": getattr(args, "state", None),
        "data_dir": getattr(args, "data_dir", None),
        "fake_models": getattr(args, "fake_models", None),
        "log_format": getattr(args, "log_format", None),
        "log_level": getattr(args, "log_level", None),
        "access_log": getattr(args, "access_log", None),
        "server": getattr(args, "server", None),
    }
    try:
        return Settings.resolve(environ, env_file=getattr(args, "env_file", None), flags=flags)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def collect(paths: Sequence[str]) -> Targets:
    """Files to check. A folder with a routing file uses its ``flows_dir``; one with ``flows/`` uses that."""
    flows: list[Path] = []
    routing: list[Path] = []
    for raw in paths or ["."]:
        path = Path(raw)
        if path.is_file():
            (routing if path.name == ROUTING_FILE else flows).append(path)
        elif path.is_dir():
            if (path / ROUTING_FILE).is_file():
                routing.append(path / ROUTING_FILE)
            folder = path / _flows_dir(path)
            folder = folder if folder.is_dir() else path
            flows += sorted(folder.glob("*.json"))
        else:
            raise UsageError(f"{raw}: no such file or folder")
    return Targets(tuple(dict.fromkeys(flows)), tuple(dict.fromkeys(routing)))


def _flows_dir(root: Path) -> str:
    routing = root / ROUTING_FILE
    if routing.is_file():
        config, problems = validate_routing_bytes(routing.read_bytes(), file=str(routing))
        if config is not None and not any(p.code == "bad-flows-dir" for p in problems):
            return config.flows_dir
    return "flows"


def _check_all(
    targets: Targets, registry: ComponentRegistry, settings: Settings
) -> tuple[list[FileReport], list[Problem]]:
    policy = settings.secret_policy()
    library, trees = Library(limits=CorpusLimits.of(settings)), dict[Path, WorkingTree]()
    reports = [
        validate_file(path, registry, policy=policy, knowledge=_knowledge(library, path, trees))
        for path in targets.flows
    ]
    for path, file_report in zip(targets.flows, reports, strict=True):
        if file_report.spec is not None and file_report.spec.evals:  # the datasets it names, in the working tree
            text = path.read_text(encoding="utf-8-sig")
            file_report.problems += eval_problems(file_report.spec, path, shown=file_report.file, text=text)
    names = [r.spec.name for r in reports if r.spec is not None]
    routing_problems: list[Problem] = duplicate_names((r.file, r.spec.name) for r in reports if r.spec is not None)
    for path in targets.routing:
        read = worktree_reader(path.parent)  # the rubrics its shadows' judges name, beside it
        routing_problems += validate_routing_bytes(path.read_bytes(), file=str(path), flow_names=names, read=read)[1]
    return reports, routing_problems


def _validate(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    targets = collect(args.paths)
    registry = ComponentRegistry.configured(settings)
    reports, routing_problems = _check_all(targets, registry, settings)
    found = [p for r in reports for p in r.problems] + routing_problems
    if args.base is not None:
        found += _breaking(targets.flows, reports, args.base, registry)
        names = [r.spec.name for r in reports if r.spec is not None]
        found += _unservable(targets.routing, names)
    packages: dict[str, tuple[ProviderPackage, list[str]]] = {}
    for each in reports:
        if each.spec is not None:
            for package in needed((n.component, dict(n.params)) for n in each.spec.nodes):
                packages.setdefault(package.distribution, (package, []))[1].append(each.spec.name)
    needs = [packages[name] for name in sorted(packages)]
    print(report.problems(found, len(reports) + len(targets.routing), args.format, needs), file=out)
    return EXIT_PROBLEMS if any(p.severity == "error" for p in found) else EXIT_OK


def _unservable(paths: Sequence[Path], names: list[str]) -> list[Problem]:
    """The plan's warnings for routes a routing file leaves with nothing servable as the repository's refs stand
    (plan/compute.route_warnings); nothing for a file outside a Git working tree or that does not validate."""
    from gitops_flow.delivery.source import refs_at  # GitPython is paid for by --base only
    from gitops_flow.plan.compute import route_warnings

    found: list[Problem] = []
    for path in paths:
        config, problems = validate_routing_bytes(path.read_bytes(), file=str(path), flow_names=names)
        if config is None or any(p.severity == "error" for p in problems):
            continue
        try:
            refs = refs_at(path.parent)
        except SourceError:
            continue
        found += route_warnings(config, refs, names, file=str(path))
    return found


def _breaking(
    paths: Sequence[Path], reports: Sequence[FileReport], rev: str, registry: ComponentRegistry
) -> list[Problem]:
    """Changes of each flow's input and output schemas since ``rev`` that break its callers. A flow new since then,
    or one that does not validate now or did not then, has no contract to compare."""
    from gitops_flow.delivery.source import read_at  # GitPython is paid for by --base only
    from gitops_flow.validation import contract

    try:
        before = read_at(paths, rev, max_bytes=MAX_EXPORT_BYTES)
    except (SourceError, UnknownVersion) as exc:
        raise UsageError(f"--base {rev}: {exc}") from None
    found: list[Problem] = []
    for path, current in zip(paths, reports, strict=True):
        old = before[path]
        if old is None or current.built is None:
            continue
        raw = path.read_bytes()
        if old != raw:
            base = validate_bytes(old, registry, file=current.file, stem=path.stem)
            found += contract.breaking_problems(current, base, raw.decode("utf-8-sig"), rev)
    return found


def _plan(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Compare the working tree with the base revision as the server would judge it; print the plan, and with
    ``--comment`` put it on the run's pull request (a refusal there is a warning: the job summary still has it)."""
    from gitops_flow.plan.compute import make_plan
    from gitops_flow.plan.render import MARKER, markdown, render

    root: Path = args.directory
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    registry = ComponentRegistry.configured(settings)
    bases = [args.base] if args.base else [f"origin/{settings.branch}", settings.branch]
    plan = None
    for base in bases:
        try:
            plan = make_plan(
                root,
                base,
                registry,
                policy=settings.secret_policy(),
                run_tests=settings.run_tests,
                knowledge=Library(limits=CorpusLimits.of(settings)).at(WorkingTree(root)),
            )
            break
        except UnknownVersion as exc:
            if base == bases[-1]:
                raise UsageError(f"--base {base}: {exc}") from None
        except SourceError as exc:
            raise UsageError(str(exc)) from None
    assert plan is not None
    print(render(plan, args.format), file=out)
    if args.comment:
        _comment(markdown(plan), MARKER, args.environ)
    return EXIT_OK


def _eval(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Each flow's datasets at the working tree and at ``--base``; exit 1 when a threshold is breached or a dataset
    or a flow with evals is wrong."""
    from gitops_flow.plan.evals import evaluate
    from gitops_flow.plan.scorecard import render
    from gitops_flow.runtime.judge import Judge, JudgeUnavailable

    root: Path = args.directory
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    routing = root / ROUTING_FILE
    config, problems = (
        (None, []) if not routing.is_file() else validate_routing_bytes(routing.read_bytes(), file=str(routing))
    )
    if any(p.severity == "error" for p in problems):
        print(report.problems(problems, 1, "text"), file=out)
        return EXIT_PROBLEMS
    folder = root / (config.flows_dir if config is not None else "flows")
    files = sorted(p for p in folder.glob("*.json") if p.is_file()) if folder.is_dir() else []
    registry = ComponentRegistry.configured(settings)
    sandbox = TestSandbox(
        registry, budget=settings.test_budget, memory_mb=settings.test_memory_mb, processes=settings.test_processes
    )
    judge, no_judge = None, ""
    try:
        judge = Judge.configured(
            settings.eval_judge_model,
            args.environ,
            registry,
            base_url=settings.eval_judge_base_url,
            calls=settings.eval_judge_calls,
            policy=settings.secret_policy(),
        )
    except JudgeUnavailable as exc:
        no_judge = str(exc)
    try:
        found = evaluate(
            files,
            args.base,
            registry,
            sandbox,
            rules=config.evals if config is not None else None,
            policy=settings.secret_policy(),
            judge=judge,
            no_judge=no_judge,
        )
    except (SourceError, UnknownVersion) as exc:
        raise UsageError(f"--base {args.base}: {exc}") from None
    print(render(found, args.format), file=out)
    for reason in judge.errors if judge is not None else []:  # cases the judge left unscored, and why
        print(f"gitops-flow eval: {reason}", file=sys.stderr)
    return EXIT_PROBLEMS if found.failed else EXIT_OK


def _comment(body: str, marker: str, environ: Mapping[str, str]) -> None:
    from gitops_flow.exceptions import HostError
    from gitops_flow.githost.comment import NotAPullRequest, Target, post

    try:
        target = Target.from_actions(environ)
    except NotAPullRequest as exc:
        print(f"gitops-flow plan: {exc}: no comment", file=sys.stderr)
        return
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        outcome = post(target, body, marker)
    except HostError as exc:
        # a pull request from a fork gets a read-only token: the plan stays in the job summary
        print(
            f"::warning title=gitops-flow plan::the plan could not be put on the pull request: {exc}", file=sys.stderr
        )
        return
    print(f"gitops-flow plan: {outcome} the comment on pull request #{target.number}", file=sys.stderr)


def _knowledge(library: Library, flow_file: Path, trees: dict[Path, WorkingTree]) -> Knowledge:
    """The working tree's files a flow file's Retrievers read (validation/worktree.py), listed once per tree."""
    root = root_of(flow_file)
    if root not in trees:
        trees[root] = WorkingTree(root)
    return library.at(trees[root])


def _test(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    registry = ComponentRegistry.configured(settings)
    targets = collect(args.paths)
    reports, routing_problems = _check_all(targets, registry, settings)
    # as the server runs them: in a child process, killed past the time limit (test-timeout) instead of hanging CI
    sandbox = TestSandbox(
        registry, budget=settings.test_budget, memory_mb=settings.test_memory_mb, processes=settings.test_processes
    )
    results: list[CaseResult] = []
    library, trees = Library(limits=CorpusLimits.of(settings)), dict[Path, WorkingTree]()
    for path, file_report in zip(targets.flows, reports, strict=True):
        if file_report.ok and file_report.spec is not None:
            found = sandbox.run(file_report.spec, _knowledge(library, path, trees))
            lines = LineIndex(path.read_text(encoding="utf-8-sig")) if not all(r.passed for r in found) else None
            results += [r if lines is None else replace(r, line=lines.line(file_report.origin(r.path))) for r in found]
    invalid = [p for r in reports for p in r.problems] + routing_problems
    files = {r.spec.name: r.file for r in reports if r.spec is not None}
    print(report.results(results, invalid, files, args.format), file=out)
    failed = any(not r.passed for r in results) or any(p.severity == "error" for p in invalid)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _import_langflow(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Each export is converted and validated; only a clean one is written (atomically), as ``<name>.json``."""
    registry = ComponentRegistry.configured(settings)
    target: Path = args.output
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target}: not a folder")
    found: list[Problem] = []
    written: list[tuple[Path, Path]] = []
    for raw_path in args.files:
        source = Path(raw_path)
        if not source.is_file():
            raise UsageError(f"{raw_path}: no such file")
        name = slug(source.stem)
        destination = target / f"{name}.json"
        if destination.resolve() == source.resolve():
            raise UsageError(f"{raw_path}: writing {destination} would replace the export itself; choose -o DIR")
        file_report = validate_file(source, registry, display=str(source), stem=name, policy=settings.secret_policy())
        found += file_report.problems
        if file_report.conversion is None or file_report.conversion.document is None:
            if not any(p.severity == "error" for p in file_report.problems):
                found.append(Problem(code="not-langflow", message="this is not a LangFlow export", file=str(source)))
            continue
        if file_report.ok:
            written.append((source, _write_atomically(destination, file_report.conversion.document)))
    print(report.problems(found, len(args.files), args.format), file=out)
    for source, destination in written:
        print(f"wrote {destination} (from {source})", file=out)
    return EXIT_PROBLEMS if len(written) < len(args.files) else EXIT_OK


def _write_atomically(path: Path, document: dict[str, Any]) -> Path:
    """Write to a temporary file next to ``path``, then rename it: a reader never sees half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _schema(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    schema = RoutingConfig.json_schema() if args.config else json_schema()
    print(orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode(), file=out)
    return EXIT_OK


def _completion(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    out.write(script(args.shell, _parser()))
    return EXIT_OK


def _components(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    registry = ComponentRegistry.configured(settings)
    for name in registry.names():
        component = registry.get(name)
        names = dict(component.secret_names)
        secrets = (
            [f"{p} <- {' | '.join(names[p])}" if p in names else p for p in sorted(component.secrets)]
            if component.secrets is not None
            else ["(declared by the package)"]
        )
        extra = f" (secret: {', '.join(secrets)})" if secrets else ""
        print(f"{name:<20} {component.kind:<10} {component.description}{extra}", file=out)
    return EXIT_OK


def _init(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from gitops_flow.cli.install import check_spec, default_spec

    root: Path = args.directory
    note = None
    if args.install is not None:
        try:
            spec = check_spec(args.install)
        except ValueError as exc:
            raise UsageError(f"--install: {exc}") from None
    else:
        spec, note = default_spec(__version__)
    templates = resources.files("gitops_flow.cli") / "starter"
    files = {WORKFLOW_PATH: (templates / "github-workflow.yml").read_text().replace("__INSTALL__", spec)}
    if not (root / "flows").is_dir():
        files[Path("flows/hello.json")] = (templates / "hello.json").read_text()
    existing = [str(p) for p in files if (root / p).exists()]
    if existing and not args.force:
        raise UsageError(
            f"{_listed(existing)} {'exists' if len(existing) == 1 else 'exist'} already; pass --force to overwrite"
            f" {'it' if len(existing) == 1 else 'them'}"
        )
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
        print(f"wrote {root / relative}", file=out)
    print(f"CI installs: {spec}", file=out)
    if note is not None:
        print(f"note: {note}", file=out)
    print(
        "next: commit these files; pull requests now run `gitops-flow validate`, `gitops-flow test` and"
        " `gitops-flow plan`",
        file=out,
    )
    return EXIT_OK


def _serve(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from gitops_flow.cli import preflight, workers  # the server's imports are paid by `serve` only, not by `validate`
    from gitops_flow.observability.telemetry import logs

    if args.repo is not None and carries_credentials(args.repo):
        raise UsageError(
            f"--repo {redact(args.repo)}: a URL with a credential on the command line is visible to every user of"
            " this machine (ps); give it in GITOPS_FLOW_REPO instead"
        )
    count = settings.worker_count()
    if count > 1 and settings.state.startswith("memory:"):
        raise UsageError(
            f"--workers {count} with --state memory://: workers are processes and cannot share memory; give"
            " --workers 1, or a state they share (the default SQLite file, or redis://)"
        )
    # the app is made before anything else (a wrong setting is refused before any file is made); with several
    # workers, once here too, so what is wrong is said once, before any worker starts. Then what would leave the
    # server running unready is refused at once (preflight.py): the state store, the repository and its branch,
    # and the port, each with its reason and fix on stderr and exit status 1.
    logs.configure(settings.log_format, settings.log_level)
    _vector_store(settings)
    if count > 1:
        workers.check(settings)
    else:
        server = workers.server(settings)
    asyncio.run(preflight.check_store(settings))
    asyncio.run(preflight.check_source(settings))
    _provider_packages(settings)
    if count > 1:
        print(
            f"gitops-flow: starting {count} workers on {settings.host}:{settings.port}"
            f" (each loads the flows before it answers; /readyz says when)",
            file=sys.stderr,
            flush=True,
        )
        return workers.Supervisor(settings, count).run()
    sock = workers.bind(settings)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return EXIT_OK if server.started else EXIT_PROBLEMS  # uvicorn has logged why it could not start


def _vector_store(settings: Settings) -> None:
    """Refuse to start (ConfigError, exit 1) when the vector store the operator chose cannot load: its extra is
    missing. Checked before any worker starts, so it is said once."""
    if settings.vector_store == "sqlite-vec":
        from gitops_flow.stores.sqlitevec import missing_package

        problem = missing_package()
        if problem is not None:
            raise ConfigError(problem)


def _provider_packages(settings: Settings) -> None:
    """Refuse to start (ConfigError, exit 1) while a provider package the followed branch's flows need is missing."""
    from gitops_flow.assembly import git_auth
    from gitops_flow.components.registry import ComponentRegistry
    from gitops_flow.delivery.package_check import check_packages

    check_packages(settings, ComponentRegistry.configured(settings), git_auth(settings))


def _show_settings(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    rows = Resolved(settings, args.sources).rows()
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode(), file=out)
        return EXIT_OK
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        value = json.dumps(row["value"]) if not isinstance(row["value"], str) else row["value"]
        print(f"{row['name']:<{width}}  {value}  ({row['source']}; {row['env'] or 'no variable'})", file=out)
        print(f"{'':<{width}}  {row['doc']}", file=out)
    return EXIT_OK


def _demo(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from gitops_flow.cli import demo

    demo.run(port=args.port, keep_serving=sys.stdin.isatty() and not args.exit, out=out)
    return EXIT_OK


def _listed(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)

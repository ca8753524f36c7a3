"""Move gitops_flow's flat modules into subsystem packages, and rewrite every reference to them (issue 22, point 1).

Run from the repository's root: ``python tools/restructure.py``. The move is data (``MOVES``, ``DATA``), so it can be
replayed on a newer tree: modules not in the mapping stay where they are and are listed as "unmapped" at the end, to be
added to ``MOVES`` by whoever merges. It is idempotent: a module whose old path is gone has been moved already, and
its references are left alone (rewriting them twice would turn ``gitops_flow.cli`` -> ``gitops_flow.cli.main`` into
``gitops_flow.cli.main.main``).

What is rewritten, in every tracked text file (code, tests, tools, benchmarks, docs, CI, pyproject.toml):
- ``from gitops_flow[.pkg] import a, b`` where ``a`` is a moved module: split into one import per new parent, with
  ``as a`` when the module's name changed, so the code that uses ``a.x`` is untouched;
- dotted names ``gitops_flow.old[.rest]`` (the longest moved prefix wins), in imports, ``mock.patch`` and
  ``module:attr`` strings, ``python -m``; except ``PROTECTED`` names that are not modules (a logger, an entry-point
  group);
- paths ``gitops_flow/old.py`` and ``gitops_flow/old/...``, ``resources.files("gitops_flow") / "dir"`` and the
  package-data globs of pyproject.toml;
- a renamed module named alone in prose (``(shown.py)`` -> ``(display.py)``, ``routingcheck.py`` ->
  ``validation/routing.py`` where the new name is not unique), when no other module of the old tree had its file name
  (``builder.py`` and ``pages.py`` were two modules each, and stay as they are written).
Then ``ruff check --fix --select I`` sorts the imports and ``ruff format`` formats.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = "gitops_flow"

# every module of the old layout -> where it lives now (dotted); a package moves with everything in it
MOVES: dict[str, str] = {
    # flow/: the document a flow is, and the routing file beside it
    "spec": "flow.document",
    "graph": "flow.graph",
    "routing": "flow.routing",
    "limits": "flow.bounds",
    "jsonpos": "flow.locations",
    "templates": "flow.prompts",
    # security/: which secrets may be read and where they may go, and hiding them
    "secretpolicy": "security.policy",
    "secretrefs": "security.references",
    "providers": "security.providers",
    "redaction": "security.redaction",
    "gitauth": "security.repo_credentials",
    # components/: what a node can be; the only place LangChain's model classes are named
    "component": "components.base",
    "components": "components.registry",
    "builtins": "components.builtins",
    "agent": "components.agent",
    "calculator": "components.calculator",
    "textify": "components.textify",
    "credentials": "components.credentials",
    "fakemodel": "components.fake_model",
    "fakeanswers": "components.fake_answers",
    "lean.models": "components.model_calls",  # LangChain's model classes, called the way BaseChatModel calls them
    # runtime/: a flow compiled and executed
    "build": "runtime.compiler",
    "runtime": "runtime.executor",
    "lean": "runtime.lean",
    "tweaks": "runtime.tweaks",
    "testing": "runtime.flow_tests",
    "history": "runtime.conversations",
    # validation/: every static check of a working tree (it dry-builds, so it sits above runtime/)
    "validate": "validation.documents",
    "routingcheck": "validation.routing",
    "contract": "validation.contract",
    # observability/: what the server tells about itself
    "metrics": "observability.metrics",
    "recent": "observability.recent",
    "telemetry": "observability.telemetry",
    # stores/
    "sqlitetx": "stores.sqlitetx",
    # delivery/: Git in, versions built, published and guarded
    "source": "delivery.source",
    "builder": "delivery.builds",
    "versions": "delivery.versions",
    "reconcile": "delivery.reconciler",
    "canaries": "delivery.canaries",
    "analysis": "delivery.guard",
    "leader": "delivery.leader",
    "rebuilds": "delivery.rebuilds",
    "pins": "delivery.pins",
    "deploylog": "delivery.journal",
    "traffic": "delivery.routing_table",
    "choosing": "delivery.choice",
    "attempts": "delivery.attempts",
    "experiment": "experiments.report",
    "posterior": "experiments.posterior",
    "scores": "experiments.scores",
    "ledger": "experiments.ledger",
    "experiments_api": "server.experiments_api",
    "langchain_internals": "components.langchain_internals",
    "sandbox": "runtime.sandbox",
    "sandboxhost": "runtime.sandbox_host",
    "regexes": "flow.regexes",
    "brake": "guardrails.brake",
    "committext": "flow.commit_text",
    # githost/: every Git host, its webhooks in and its statuses out
    "webhook": "githost.github_webhook",
    "githost.gitlab": "githost.gitlab_webhook",
    "githost.gitea": "githost.gitea_webhook",
    # langflow/: conversion of exports only
    "langflow.builder": "langflow.workbench",
    # server/: the request path over HTTP
    "endpoints": "server.endpoints",
    "httpio": "server.edge",
    "views": "server.views",
    "langserve_api": "server.langserve_api",
    "langflow.api": "server.langflow_api",
    "openapi": "server.openapi",
    "sse": "server.sse",
    "pages": "server.assets",
    "confighash": "server.confighash",
    "nesting": "server.nesting",
    "receivers": "server.webhooks",
    "http_server": "server.listener",
    # console/
    "console.pages": "console.renderer",
    "console.shown": "console.display",
    "console.pending": "console.backlog",
    # cli/: the command line and what only it uses
    "cli": "cli.main",
    "servercli": "cli.remote",
    "demo": "cli.demo",
    "install": "cli.install",
    "report": "cli.report",
    "workers": "cli.workers",
}
# data directories (paths under gitops_flow/) -> their new place
DATA: dict[str, str] = {
    "schema": "flow/schema",
    "static": "server/static",
    "templates": "cli/starter",
}
# what stays at the top of the package: entry points, the error vocabulary, settings, the composition root
KEEP = {"__init__", "__main__", "exceptions", "problems", "config", "app"}
# names that look like modules but are not: a logger's name and the components' entry-point group
PROTECTED = {"gitops_flow.reconcile", "gitops_flow.components"}
# the one-line face of each package created here
PACKAGES: dict[str, str] = {
    "flow": "The flow document: its model and JSON Schema, its graph, its bounds, prompts, and the routing file.",
    "security": "Secrets and credentials: which may be read, where each may go, and how they are masked.",
    "components": "What a node can be: the allowlist, the built-in components, the agent and the fakes.",
    "runtime": "A flow compiled to a runnable and executed (lean or LangChain), its tests, tweaks and conversations.",
    "validation": "Static checks of a working tree: flow documents, the routing file and contracts -> problems.",
    "observability": "What the server tells about itself: Prometheus metrics, recent figures, traces and logs.",
    "delivery": "Git in, versions out: the source, builds, versions, the reconciler, canaries, pins and the journal.",
    "server": "The request path over HTTP: endpoints, the edge, LangServe's and LangFlow's APIs, OpenAPI, SSE.",
    "cli": "The `gitops-flow` command line and what only it uses: demo, workers, reports, remote commands.",
}
TEXT_SUFFIXES = {".py", ".toml", ".md", ".yml", ".yaml", ".cfg", ".txt", ".ini", ".html", ".js"}
SKIP_DIRS = ("tests/data/", "tests/npm/", "tools/restructure.py")  # fixtures, and this mapping itself


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def _old_path(dotted: str) -> Path:
    """``githost.gitlab`` -> gitops_flow/githost/gitlab.py, or the package directory when it is one."""
    base = Path(PACKAGE, *dotted.split("."))
    return base if base.is_dir() and not base.with_suffix(".py").exists() else base.with_suffix(".py")


def _is_package(dotted: str) -> bool:
    return (
        Path(PACKAGE, *dotted.split(".")).is_dir() and not Path(PACKAGE, *dotted.split(".")).with_suffix(".py").exists()
    )


def _move(pending: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Make the packages, ``git mv`` each module still at its old place; returns the moves done (modules, paths)."""
    done: dict[str, str] = {}
    paths: dict[str, str] = {}
    for package, doc in PACKAGES.items():
        init = Path(PACKAGE, package, "__init__.py")
        if not init.exists():
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text(f'"""{doc}"""\n')
            _git("add", str(init))
    # deepest names first: a module leaving a package before the package itself moves (lean.models, then lean)
    for old in sorted(pending, key=lambda name: -name.count(".")):
        new = pending[old]
        source = _old_path(old)
        target = Path(PACKAGE, *new.split("."))
        if target.exists() or target.with_suffix(".py").exists() or not source.exists():
            continue  # moved already (``components/`` is now the package that ``components.py`` moved into)
        target = target if source.is_dir() else target.with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        _git("mv", str(source), str(target))
        done[f"{PACKAGE}.{old}"] = f"{PACKAGE}.{new}"
        paths[source.as_posix()] = target.as_posix()
    for old, new in DATA.items():
        source, target = Path(PACKAGE, old), Path(PACKAGE, new)
        if source.is_dir() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _git("mv", str(source), str(target))
            paths[source.as_posix()] = target.as_posix()
    return done, paths


class Rewriter:
    """Rewrites the references of one set of moves in a text."""

    def __init__(self, modules: dict[str, str], paths: dict[str, str], bare: dict[str, str] | None = None) -> None:
        self.modules = modules
        self.paths = paths
        self.bare = bare or {}  # ``leader.py`` -> ``delivery/leader.py``: file names of one module only
        # a moved name that is now a package: its new children are new names, not attributes of the old module
        self.children = {
            old: {new[len(old) + 1 :].split(".")[0] for new in modules.values() if new.startswith(old + ".")}
            for old in modules
        }
        bare = "|".join(map(re.escape, sorted(self.bare, key=len, reverse=True)))
        self.pattern = re.compile(
            r"(?P<files>files\(\s*[\"']gitops_flow(?P<fpkg>(?:\.\w+)*)[\"']\s*\)\s*/\s*[\"'](?P<fdir>[\w-]+)[\"'])"
            r"|(?P<imp>^(?P<indent>[ \t]*)from[ \t]+(?P<src>gitops_flow(?:\.\w+)*)[ \t]+import[ \t]+"
            r"(?P<names>\([^)]*\)|[^\n#]*[^\s#]))"
            r"|(?P<path>(?<![\w/.-])gitops_flow/(?P<rel>[\w.-]*[\w-](?:/[\w.-]*[\w*-])*)/?)"
            r"|(?P<dotted>(?<![\w.])gitops_flow(?:\.\w+)+)"
            r"|(?P<bare>(?<![\w/.-])(?:" + (bare or "(?!)") + r")\b)",
            re.MULTILINE,
        )

    def dotted(self, name: str, *, protect: bool = True) -> str:
        if protect and name in PROTECTED:
            return name
        parts = name.split(".")
        for k in range(len(parts), 1, -1):
            old = ".".join(parts[:k])
            if old in self.modules:
                if k < len(parts) and parts[k] in self.children[old]:
                    return name  # already the new layout (``gitops_flow.cli.main`` is not ``cli``'s attribute)
                return ".".join([self.modules[old], *parts[k:]])
        return name

    def path(self, rel: str) -> str:
        full = f"{PACKAGE}/{rel}"
        for old, new in sorted(self.paths.items(), key=lambda item: -len(item[0])):
            if full == old or full.startswith(old + "/"):
                return new + full[len(old) :]
        return full

    def imports(self, match: re.Match[str]) -> str:
        indent, src, names = match["indent"], match["src"], match["names"]
        inner = names.strip()
        wrapped = inner.startswith("(")
        items = [item.strip() for item in inner.strip("()").replace("\n", " ").split(",") if item.strip()]
        keep: list[str] = []
        moved: dict[str, list[str]] = {}
        for item in items:
            name, _, alias = item.partition(" as ")
            name, alias = name.strip(), alias.strip()
            child = f"{src}.{name}"
            if child in self.modules:
                parent, _, base = self.modules[child].rpartition(".")
                spelled = base if (alias or name) == base else f"{base} as {alias or name}"
                moved.setdefault(parent, []).append(spelled)
            else:
                keep.append(item)
        if not moved:
            return f"{indent}from {self.dotted(src, protect=False)} import {names}"
        lines = []
        if keep:
            lines.append(f"{indent}from {self.dotted(src, protect=False)} import {', '.join(keep)}")
        lines += [f"{indent}from {parent} import {', '.join(spelled)}" for parent, spelled in moved.items()]
        return "\n".join(lines) if not wrapped or len(lines) > 1 else lines[0]

    def __call__(self, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match["files"]:
                old = "/".join([PACKAGE, *match["fpkg"].split(".")[1:], match["fdir"]])
                new = self.path(old[len(PACKAGE) + 1 :])
                if new == old:
                    return match[0]
                parent, _, leaf = new.rpartition("/")
                return f'files("{parent.replace("/", ".")}") / "{leaf}"'
            if match["imp"]:
                return self.imports(match)
            if match["bare"]:
                return self.bare[match["bare"]]
            if match["path"]:
                new = self.path(match["rel"])
                return new + ("/" if match[0].endswith("/") and not new.endswith("/") else "")
            return self.dotted(match["dotted"])

        return self.pattern.sub(one, text)


def _package_data(text: str, rewrite: Rewriter) -> str:
    """pyproject's ``gitops_flow = ["schema/*.json", ...]`` globs, relative to the package, follow their folders."""

    def entries(match: re.Match[str]) -> str:
        globs = re.sub(
            r"\"([^\"]+)\"",
            lambda g: '"' + rewrite.path(g[1])[len(PACKAGE) + 1 :] + '"',
            match[2],
        )
        return match[1] + globs

    return re.sub(r"(?m)^(gitops_flow = )(\[.*\])$", entries, text)


def _text_files() -> list[Path]:
    files = []
    for name in _git("ls-files").splitlines():
        path = Path(name)
        if name.startswith(SKIP_DIRS) or path.is_symlink() or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or name == ".ci/run" or name.startswith(".github/"):
            files.append(path)
    return files


def _unmapped() -> list[str]:
    known = set(KEEP) | {old.split(".")[0] for old in MOVES} | {new.split(".")[0] for new in MOVES.values()}
    known |= {"stores", "guardrails", "githost", "langflow", "console", "plan", "examples"} | set(DATA)
    found = []
    for entry in sorted(Path(PACKAGE).iterdir()):
        name = entry.stem if entry.suffix == ".py" else entry.name
        if (entry.suffix == ".py" or (entry.is_dir() and entry.name != "__pycache__")) and name not in known:
            found.append(entry.as_posix())
    return found


def main() -> int:
    if not Path(PACKAGE, "__init__.py").exists():
        print("run from the repository's root", file=sys.stderr)
        return 2
    names = [path.name for path in Path(PACKAGE).rglob("*.py")]
    modules, paths = _move(MOVES)
    now = [path.name for path in Path(PACKAGE).rglob("*.py")]
    bare = {
        Path(old).name: Path(new).name if now.count(Path(new).name) == 1 else new[len(PACKAGE) + 1 :]
        for old, new in paths.items()
        if old.endswith(".py") and names.count(Path(old).name) == 1 and Path(old).name != Path(new).name
    }
    print(f"moved {len(modules)} modules and {len(paths) - len(modules)} data folders")
    if "--all" in sys.argv:  # after a merge: a branch of the old layout brought references to the old names
        modules = {f"{PACKAGE}.{old}": f"{PACKAGE}.{new}" for old, new in MOVES.items()}
        paths = {
            **{
                f"{PACKAGE}/{old.replace('.', '/')}.py": f"{PACKAGE}/{new.replace('.', '/')}.py"
                for old, new in MOVES.items()
            },
            **{f"{PACKAGE}/{old}": f"{PACKAGE}/{new}" for old, new in DATA.items()},
        }
        bare = {}
    rewrite = Rewriter(modules, paths, bare)
    changed = 0
    only = {Path(arg) for arg in sys.argv[1:] if not arg.startswith("--")}  # --all FILE...: just those files
    for path in (p for p in _text_files() if not only or p in only) if paths else []:
        text = path.read_text()
        new = rewrite(text)
        if path.name == "pyproject.toml":
            new = _package_data(new, rewrite)
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"rewrote references in {changed} files")
    ruff = Path(".venv/bin/ruff") if Path(".venv/bin/ruff").exists() else Path("ruff")
    subprocess.run([str(ruff), "check", "--fix", "--select", "I", "--quiet", "."], check=False)
    subprocess.run([str(ruff), "format", "--quiet", "."], check=False)
    long = subprocess.run(
        [str(ruff), "check", "--select", "E501", "--output-format", "concise", "."], text=True, capture_output=True
    ).stdout.strip()
    if long:
        print("lines past 120 columns after the rewrite (wrap them by hand):\n" + long)
    for entry in _unmapped():
        print(f"unmapped: {entry} (add it to MOVES in tools/restructure.py, or to KEEP)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

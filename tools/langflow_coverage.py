"""Which of LangFlow's starter projects gitops-flow converts and serves, and why it refuses the others.

    python tools/langflow_coverage.py                              # every LangFlow release from 1.0, fetched with pip
    python tools/langflow_coverage.py 1.13.0 0.5.1 --wheels DIR      # langflow-base versions; wheels kept in DIR
    python tools/langflow_coverage.py --write docs/langflow.md       # rewrite the tables between the page's markers
    python tools/langflow_coverage.py --check                        # exit 1 when a release has under half running

For each ``langflow-base`` release (LangFlow 1.N ships as langflow-base 0.N up to 1.11, then as 1.N) it fetches the
wheel (``pip download --no-deps langflow-base==X``), reads every starter project
(``langflow/initial_setup/starter_projects/*.json``) as data, and validates it as the server would (the file name is
LangFlow's own). Then it serves what converts, as a user would: the exports are committed, under their own
file names prefixed with their release, to a local Git repository (with a sample document under
``knowledge/<flow>/`` for each flow whose conversion asks for committed documents), a real
``gitops-flow serve --fake-models`` follows it, and each flow is run once through LangFlow's run API,
``POST /api/v1/run/<flow>``, with ``{"input_value": "Hello"}`` and a session. A project *runs* when that
answers 200. Nothing in the wheel is imported or run.

It prints one row per release (projects, converted, ran 200), what blocks the refused ones (each node type or
other reason a refusal names, with the number of projects that name it and the number it alone blocks), and one row
per project with the reason of each refusal or failure.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.security.egress import TAVILY_URL, EgressLimits, EgressPolicy
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.providers import default_secret_names
from gitops_flow.validation.documents import flow_name, validate_bytes

# LangFlow's minor releases from 1.0, each its last patch, as the langflow-base version it ships
RELEASES: dict[str, str] = {
    "0.0.99": "1.0.19",
    "0.1.4.post1": "1.1.4",
    "0.2.0": "1.2.0",
    "0.3.4": "1.3.4",
    "0.4.3": "1.4.3",
    "0.5.1": "1.5.1",
    "0.6.9": "1.6.9",
    "0.7.3": "1.7.3",
    "0.8.4": "1.8.4",
    "0.9.6": "1.9.6",
    "0.10.3": "1.10.3",
    "0.11.6": "1.11.6",
    "1.12.8": "1.12.8",
    "1.13.0": "1.13.0",
}
STARTERS = re.compile(r"^langflow/initial_setup/starter_projects/[^/]+\.json$")
START, END = "<!-- langflow-coverage:start -->", "<!-- langflow-coverage:end -->"
# a refusal's node label: "<id> (<type>, '<name>') cannot be converted: ..." or "<id> (<type>, '<name>'): <reason>"
_LABEL = re.compile(r"^\S.*? \(([^,()]+)(?:, '[^']*')?\)(?: cannot be converted|: ([^(;,:]+))")
_RUN_ID = re.compile(r" \(run [0-9a-f-]+\)")
SAMPLE = (
    "# Sample knowledge\n\nCommitted by tools/langflow_coverage.py where the converted flow reads documents from Git: "
    "a team commits its own here (what LangFlow loaded into its store or read from its file storage).\n"
)
# the server the tool runs allows what a team moving these projects would: every provider key name and Tavily's may
# be referenced, and requests may go to any public address (the exports' URLs, Tavily's API). Under --fake-models the
# tool nodes (HttpRequest, WebSearch) are answered by fakes as the models are, and a faked agent calls no tool, so
# nothing leaves the machine.
SECRETS = (*default_secret_names(), "TAVILY_API_KEY")
ALLOWED = ("*",)
READY_TIMEOUT = 180.0  # seconds a release's server may take to build its flows
RUN_TIMEOUT = 60.0


@dataclass
class Row:
    release: str
    project: str
    converted: bool
    ran: bool | None = None  # answered 200 on the run API under fakes; None when not converted
    why: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)  # what a refusal names: node types, or other reasons
    file_name: str = ""
    raw: bytes = b""
    knowledge: bool = False  # its conversion asks for documents committed under knowledge/<flow>/

    @property
    def committed(self) -> str:
        """Its file name in the repository the tool serves: the release first, as releases share names."""
        return f"{self.release} {self.file_name}"

    @property
    def flow(self) -> str:
        return flow_name(self.committed.removesuffix(".json"))


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
    """Validate one starter project as the server the tool runs would (its secrets and egress allowlist): converted
    or refused (with each error's reason)."""
    report = validate_bytes(raw, registry, file=file_name, stem=file_name.removesuffix(".json"), policy=policy())
    row = Row(release, file_name.removesuffix(".json"), report.ok, file_name=file_name, raw=raw)
    row.knowledge = any(p.code == "langflow-knowledge" for p in report.problems)
    if not report.ok:
        errors = [p for p in report.problems if p.severity == "error"]
        row.why = [f"{p.code}: {p.message}" for p in errors]
        row.blockers = list(dict.fromkeys(blocker(p.code, p.message) for p in errors))
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


def policy() -> SecretPolicy:
    """What the server the tool runs allows (see SECRETS and ALLOWED)."""
    return SecretPolicy(SECRETS, egress=EgressPolicy.parse(list(ALLOWED), EgressLimits(), TAVILY_URL))


def serve_and_run(rows: Sequence[Row], scratch: Path) -> None:
    """Commit the converted exports (and a sample document for each flow that reads committed ones), serve them with
    a real ``gitops-flow serve --fake-models`` and run each through LangFlow's run API; sets each row's ``ran``."""
    converted = [r for r in rows if r.converted]
    if not converted:
        return
    files = {f"flows/{r.committed}": r.raw for r in converted}
    files |= {f"knowledge/{r.flow}/sample.md": SAMPLE.encode() for r in converted if r.knowledge}
    bare = _repository(scratch, files)
    try:
        with _server(bare, scratch) as client:
            for row in converted:
                _run(client, row)
    except RuntimeError as exc:  # the server never became ready: every converted project failed with it
        for row in converted:
            row.ran, row.why = False, [f"serve: {exc}"]


def _run(client: httpx.Client, row: Row) -> None:
    body = {"input_value": "Hello", "session_id": "coverage"}
    try:
        response = client.post(f"/api/v1/run/{row.flow}", json=body, timeout=RUN_TIMEOUT)
    except httpx.HTTPError as exc:
        row.ran, row.why = False, [f"run API: {type(exc).__name__}"]
        return
    row.ran = response.status_code == 200
    if not row.ran:
        try:
            error = response.json().get("error") or {}
        except ValueError:
            error = {}
        message = _RUN_ID.sub("", str(error.get("message", "")))  # the table stays the same from run to run
        row.why = [f"run API: {response.status_code} {error.get('code', '')}: {message}".strip()]


def _repository(scratch: Path, files: dict[str, bytes]) -> Path:
    """A bare repository whose ``main`` holds ``files``, committed with the real ``git`` CLI."""
    bare, work = scratch / "origin.git", scratch / "work"
    scratch.mkdir(parents=True, exist_ok=True)
    _git(scratch, "init", "--bare", "--quiet", str(bare))
    _git(scratch, "init", "--quiet", str(work))
    for path, content in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    _git(work, "add", "-A")
    _git(work, "commit", "--quiet", "-m", "LangFlow starter projects")
    _git(work, "push", "--quiet", str(bare), "HEAD:main")
    return bare


def _git(cwd: Path, *args: str) -> None:
    who = {"GIT_AUTHOR_NAME": "coverage", "GIT_AUTHOR_EMAIL": "coverage@localhost"}
    env = {**os.environ, **who, "GIT_COMMITTER_NAME": "coverage", "GIT_COMMITTER_EMAIL": "coverage@localhost"}
    subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=env, check=True, capture_output=True)


@contextmanager
def _server(bare: Path, scratch: Path) -> Iterator[httpx.Client]:
    """``gitops-flow serve --fake-models`` following ``bare`` on a loopback port, until its version is ready."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)  # the admin token, in the environment (never on a command line)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")} | {
        "GITOPS_FLOW_ADMIN_TOKEN": token,
        "GITOPS_FLOW_SECRETS": ",".join(SECRETS),
        "GITOPS_FLOW_ALLOWED_FETCH_URLS": ",".join(ALLOWED),
    }
    command = [sys.executable, "-m", "gitops_flow", "serve", "--repo", str(bare), "--port", str(port)]
    command += ["--data-dir", str(scratch / "state"), "--poll-interval", "3600", "--workers", "1", "--fake-models"]
    log = scratch / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gitops-flow serve exited with {process.returncode}: {_tail(log)}")
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not started after {READY_TIMEOUT:.0f} s: {_tail(log)}")
            time.sleep(0.1)
        # the commit is fetched and built now (a version whose flows all failed never becomes ready: each flow's
        # run then answers why)
        client.post("/admin/reconcile", headers={"Authorization": f"Bearer {token}"}, timeout=READY_TIMEOUT)
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1][:200] if lines else "(no output)"


def table(rows: list[Row]) -> str:
    lines = ["| release | starter project | result | why |", "| --- | --- | --- | --- |"]
    for row in rows:
        if row.converted and row.ran:
            result, why = "converted, runs (200)", ""
        elif row.converted:
            result, why = "converted, fails on the run API", "; ".join(row.why)
        else:
            result, why = "refused", "; ".join(_short(w) for w in row.why[:3])
            why += f" (and {len(row.why) - 3} more)" if len(row.why) > 3 else ""
        lines.append(f"| {_release(row.release)} | {row.project} | {result} | {why.replace('|', '/')} |")
    return "\n".join(lines)


def _release(base: str) -> str:
    """A release as LangFlow names it, with the langflow-base version it ships as."""
    return f"{RELEASES[base]} ({base})" if base in RELEASES and RELEASES[base] != base else base


def _short(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."


def summary(rows: list[Row]) -> str:
    converted = sum(1 for r in rows if r.converted)
    runs = sum(1 for r in rows if r.converted and r.ran)
    return (
        f"{converted} of {len(rows)} starter projects convert ({runs} answer 200 on the run API under fakes); "
        f"{len(rows) - converted} are refused."
    )


def releases(rows: list[Row]) -> str:
    """One row per release: its projects, how many convert, how many answer 200, how many are refused."""
    lines = [
        "| LangFlow (langflow-base) | starter projects | converted | ran 200 | refused | at least half run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for release in dict.fromkeys(r.release for r in rows):
        mine = [r for r in rows if r.release == release]
        converted = sum(1 for r in mine if r.converted)
        ran = sum(1 for r in mine if r.ran)
        half = "yes" if 2 * ran >= len(mine) else "**no**"
        lines.append(f"| {_release(release)} | {len(mine)} | {converted} | {ran} | {len(mine) - converted} | {half} |")
    return "\n".join(lines)


def short_releases(rows: list[Row]) -> list[str]:
    """The releases under half of whose starter projects answer 200."""
    found = []
    for release in dict.fromkeys(r.release for r in rows):
        mine = [r for r in rows if r.release == release]
        if 2 * sum(1 for r in mine if r.ran) < len(mine):
            found.append(release)
    return found


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


def coverage(releases_wanted: Sequence[str], wheels: Path | None) -> list[Row]:
    """Every starter project of each release, judged and, when converted, served and run."""
    registry = ComponentRegistry.builtin()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = wheels or Path(scratch) / "wheels"
        folder.mkdir(parents=True, exist_ok=True)
        for release in releases_wanted:
            for name, raw in starters(fetch(release, folder)).items():
                rows.append(judge(release, name, raw, registry))
        serve_and_run(rows, Path(scratch) / "served")  # one server for every release's projects
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="*", default=list(RELEASES), help="langflow-base versions")
    parser.add_argument("--wheels", type=Path, help="a folder holding (or to hold) the wheels")
    parser.add_argument("--write", type=Path, help="a Markdown file whose table (between its markers) to rewrite")
    parser.add_argument("--check", action="store_true", help="exit 1 when a release has under half running")
    args = parser.parse_args(argv)
    rows = coverage(args.releases, args.wheels)
    text = f"{summary(rows)}\n\n{releases(rows)}\n\n{blockers(rows)}\n\n{table(rows)}\n"
    short = short_releases(rows)
    if args.write is None:
        print(text)
    else:
        page = args.write.read_text()
        if START not in page or END not in page:
            print(f"{args.write} has no {START} ... {END} markers", file=sys.stderr)
            return 2
        before, _, rest = page.partition(START)
        _, _, after = rest.partition(END)
        args.write.write_text(f"{before}{START}\n{text}{END}{after}")
        print(f"{summary(rows)}\n\n{releases(rows)}")
    if args.check and short:
        print(f"under half of the starter projects run in: {', '.join(map(_release, short))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    raise SystemExit(main())

"""`gitops-flow demo`: a local Git repository of the example flows, served with fake models, and a walkthrough."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from pydantic import SecretStr

from gitops_flow.app import create_app
from gitops_flow.config import Settings
from gitops_flow.exceptions import ConfigError
from gitops_flow.server.listener import ServerConfig

FLOW = "support-bot"
QUESTION = {"question": "Hi!"}
NEW_ANSWER = "Hi! Ask me anything about your order."
_GIT_IDENTITY = ("-c", "user.name=gitops-flow demo", "-c", "user.email=demo@gitops-flow.invalid")


class Demo:
    """A bare ``origin.git``, a working clone that commits and pushes to it, and a server following it."""

    def __init__(self, root: Path, flows: Path, port: int, out: TextIO) -> None:
        self.root = root
        self.origin = root / "origin.git"
        self.work = root / "work"
        self.flows = flows
        self.port = port
        self.out = out
        self.url = f"http://127.0.0.1:{port}"
        self.token = secrets.token_urlsafe(16)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        done = subprocess.run(["git", *_GIT_IDENTITY, *args], cwd=self.work, env=env, capture_output=True, text=True)
        if done.returncode:
            raise ConfigError(f"git {args[0]} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def make_repository(self) -> str:
        subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(self.origin)], check=True)
        subprocess.run(["git", "clone", "--quiet", str(self.origin), str(self.work)], check=True, capture_output=True)
        self.git("checkout", "--quiet", "-B", "main")
        shutil.copytree(self.flows, self.work / "flows")
        self.git("add", "flows")
        self.git("commit", "--quiet", "-m", "Add the example flows")
        self.git("push", "--quiet", "origin", "main")
        return self.git("rev-parse", "HEAD")

    def call(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers={"content-type": "application/json"})
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def invoke(self, headers: dict[str, str] | None = None) -> tuple[str, str]:
        status, body = self.call(f"/flows/{FLOW}/invoke", {"input": QUESTION}, headers)
        if status != 200:
            raise ConfigError(f"invoke answered {status}: {body}")
        return body["output"], body["metadata"]["flow_version"]

    def deploy(self, sha: str) -> float:
        """Wake the server's fetcher, as GitHub's push webhook does (the poll would find it within a second)."""
        start = time.monotonic()
        status, body = self.call("/admin/reconcile", {}, {"Authorization": f"Bearer {self.token}"})
        if status != 200:
            raise ConfigError(f"the fetch failed: {body}")
        self.wait_for(sha)
        return time.monotonic() - start

    def wait_for(self, sha: str, timeout: float = 30.0) -> float:
        """Seconds until the server serves ``sha`` at the branch head."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            status, body = self.call("/readyz")
            if status == 200 and body["version"] == sha:
                return time.monotonic() - start
            time.sleep(0.05)
        raise ConfigError(f"the server did not serve {sha[:12]} within {timeout:.0f} s")

    def walkthrough(self, first: str) -> None:
        body = json.dumps({"input": QUESTION})
        curl = f"curl -s {self.url}/flows/{FLOW}/invoke -H 'content-type: application/json' -d '{body}'"
        self.say(f"1. The server is serving commit {first[:12]}. Ask the support bot (its model is a fake):")
        self.say(f"   $ {curl}")
        answer, version = self.invoke({"X-Flow-Session": "alice"})
        self.say(f"   -> {answer!r} from {version[:12]}  (as session 'alice', who is now pinned to this version)")

        path = self.work / "flows" / f"{FLOW}.json"
        doc = json.loads(path.read_text())
        for case in doc.get("tests", []):
            case["fakes"] = {node: [NEW_ANSWER] for node in case.get("fakes", {})}
            case["expect"] = {"contains": "order"}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        self.git("commit", "--quiet", "-am", "Friendlier greeting")
        self.git("push", "--quiet", "origin", "main")
        second = self.git("rev-parse", "HEAD")
        self.say(f"2. Commit a change and push it: {second[:12]} 'Friendlier greeting'.")
        seconds = self.deploy(second)
        answer, version = self.invoke()
        self.say(
            f"   Fetched, validated, built and live {seconds * 1000:.0f} ms after the fetch began, with no restart:"
        )
        self.say(f"   -> {answer!r} from {version[:12]}")
        answer, version = self.invoke({"X-Flow-Session": "alice"})
        self.say(f"   Alice's conversation stays where it began: {answer!r} from {version[:12]}")

        self.git("revert", "--no-edit", "HEAD")
        self.git("push", "--quiet", "origin", "main")
        third = self.git("rev-parse", "HEAD")
        self.say(f"3. Roll back with git: `git revert HEAD && git push` made {third[:12]}.")
        seconds = self.deploy(third)
        answer, version = self.invoke()
        self.say(f"   Its content was built before, so it was live {seconds * 1000:.0f} ms after the fetch began:")
        self.say(f"   -> {answer!r} from {version[:12]}")
        self.say("4. What the server did, newest first (gitops-flow history):")
        _, events = self.call("/history")
        for event in events["events"][:6]:
            self.say(f"   {event['event']:<9} {event['sha'][:12]} {event.get('message') or event.get('detail') or ''}")


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _example_flows() -> Path:
    """The example flows, shipped in the package (the repository's ``flows/`` links to them), wherever it runs."""
    return Path(str(resources.files("gitops_flow") / "examples"))


@contextmanager
def _serving(settings: Settings) -> Iterator[uvicorn.Server]:
    server = uvicorn.Server(ServerConfig(create_app(settings), settings, log_level="warning"))
    thread = threading.Thread(target=server.run, name="gitops-flow-demo", daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.02)
        if not server.started:
            raise ConfigError(f"the demo server could not start on port {settings.port}")
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run(*, port: int, keep_serving: bool, out: TextIO) -> None:
    """Set up the demo in a temporary folder, run the walkthrough, then keep serving until Ctrl-C if
    ``keep_serving``; the folder (the repository, the clone, the state) is removed at the end, however it ends."""
    root = Path(tempfile.mkdtemp(prefix="gitops-flow-demo-"))
    try:
        _run(root, port=port, keep_serving=keep_serving, out=out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, *, port: int, keep_serving: bool, out: TextIO) -> None:
    demo = Demo(root, _example_flows(), _free_port(port), out)
    first = demo.make_repository()
    settings = Settings(
        repo_url=str(demo.origin),
        port=demo.port,
        poll_interval=1.0,
        fake_models=True,
        data_dir=root / "server",
        load_entry_points=False,
        admin_token=SecretStr(demo.token),
    )
    demo.say(f"gitops-flow demo: a Git repository of the example flows in {root}, served at {demo.url}")
    demo.say()
    with _serving(settings):
        demo.wait_for(first)
        demo.walkthrough(first)
        demo.say()
        if not keep_serving:
            demo.say("The walkthrough passed. (Run it in a terminal to keep the server up and try it yourself.)")
            return
        demo.say("The server keeps running. Try it yourself:")
        demo.say(f"   cd {demo.work}    # edit flows/*.json, then: git commit -am 'my change' && git push")
        demo.say(f"   gitops-flow versions --server {demo.url}")
        demo.say(f"   gitops-flow history --server {demo.url}")
        demo.say(f"   gitops-flow status --server {demo.url}    # or open {demo.url}/ui in a browser")
        demo.say(f"Press Ctrl-C to stop (it removes {root}: copy your changes elsewhere first).")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            demo.say("stopped")

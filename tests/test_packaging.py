"""The release artefacts as the release workflow makes them: the wheel and the sdist (`python -m build`, `twine
check`), the wheel installed alone into a fresh virtual environment by the Dockerfile's own install step, that
environment serving the example flows through the Dockerfile's entry point as its unprivileged user, and the linters
the Dockerfile and the workflows must pass (hadolint, actionlint).

The tools come with the dev extra and sit beside this interpreter; a missing one fails, it never skips.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from gitops_flow import __version__
from gitops_flow.cli.demo import FLOW as DEMO_FLOW
from gitops_flow.cli.demo import QUESTION as DEMO_QUESTION
from tests.gitrepo import Remote
from tests.process import answers_the_examples, await_ready, free_port
from tests.served import ROOT, example_files

BIN = Path(sys.executable).parent  # the project's virtual environment: the dev extra's tools are here
WHEEL = f"gitops_flow-{__version__}-py3-none-any.whl"


def tool(name: str) -> str:
    """The path of a dev-extra tool; fails (never skips) when it is missing."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: pip install -e '.[dev]'")
    return str(path)


# building and installing share the machine with the rest of the suite: more than the default 300 s
pytestmark = pytest.mark.timeout(600)


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{shlex.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's build stages, each its instructions in order (continuations joined, comments dropped)."""
    stages: list[list[Instruction]] = []
    for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(Instruction(keyword.upper(), argument.strip()))
    return stages


def only(stage: list[Instruction], keyword: str) -> str:
    [argument] = [i.argument for i in stage if i.keyword == keyword]
    return argument


def image_env(stage: list[Instruction], paths: Mapping[str, str]) -> dict[str, str]:
    """The final stage's ENV, with the image's paths moved to where this test put them."""
    env: dict[str, str] = {}
    for argument in (i.argument for i in stage if i.keyword == "ENV"):
        for pair in shlex.split(argument):
            name, _, value = pair.partition("=")
            for image_path, here in paths.items():
                value = value.replace(image_path, here)
            env[name] = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it, as the release workflow builds them."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    return out


@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment holding the wheel alone, in a folder every user may read (the image's user too)."""

    home: Path  # world-readable: the venv, and the image user's home
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def installed(dist: Path) -> Iterator[Installed]:
    """The Dockerfile's install stage run here: its RUN step, with /opt/gitops-flow and /tmp/dist/ moved."""
    home = Path(tempfile.mkdtemp(prefix="gitops-flow-image-"))
    home.chmod(0o755)
    venv = home / "venv"
    install, *_ = dockerfile_stages()
    extras = only(install, "ARG").partition("=")[2]
    step = only(install, "RUN").replace("/opt/gitops-flow", str(venv)).replace("/tmp/dist/", f"{dist}/")
    step = step.replace("--no-cache-dir ", "")  # the image keeps no cache; here the warm cache saves a minute
    env = dict(os.environ)
    if os.getuid() == 0:
        # the image's user must be able to run the venv's interpreter: Debian's python3, not one under /root
        env["PATH"] = "/usr/bin:/bin"
    run(["sh", "-c", step.replace("${EXTRAS}", extras)], cwd=home, env=env)
    try:
        yield Installed(home, venv)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_wheel_and_the_sdist_pass_twine_check(dist: Path) -> None:
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted([f"gitops_flow-{__version__}.tar.gz", WHEEL])
    checked = run([sys.executable, "-m", "twine", "check", "--strict", *(str(dist / n) for n in names)])
    assert checked.stdout.count("PASSED") == 2


def test_the_version_has_one_place(installed: Installed) -> None:
    """gitops_flow.__version__ names the wheel (above), the installed command's --version and CHANGELOG's entry."""
    assert run([installed.bin("gitops-flow"), "--version"]).stdout.split()[-1] == __version__
    assert f"\n## [{__version__}]\n" in (ROOT / "CHANGELOG.md").read_text()


def test_the_wheel_installed_alone_runs_the_demo(installed: Installed, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITOPS_FLOW_")}
    done = subprocess.run(
        [installed.bin("gitops-flow"), "demo"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_init_from_the_wheel_installs_the_release_wheel(installed: Installed, tmp_path: Path) -> None:
    """Installed from a local wheel, which CI cannot reach, `init` writes the release's wheel on the project's home,
    not a pin on a package index that may not have the version (the first step of every pull request's check)."""
    done = run([installed.bin("gitops-flow"), "init", str(tmp_path)], stdin=subprocess.DEVNULL)
    release = f"https://github.com/gitops-flow/gitops-flow/releases/download/v{__version__}/{WHEEL}"  # pyproject.toml
    assert f"CI installs: gitops-flow @ {release}" in done.stdout
    workflow = tmp_path / ".github/workflows/gitops-flow.yml"
    steps = yaml.safe_load(workflow.read_text())["jobs"]["flows"]["steps"]
    [install] = [s for s in steps if s.get("name") == "Install gitops-flow"]
    assert f"'gitops-flow @ {release}'" in install["env"]["GITOPS_FLOW_INSTALL"]
    run([tool("actionlint"), str(workflow)])


def test_the_dockerfile_passes_hadolint() -> None:
    run([tool("hadolint"), str(ROOT / "Dockerfile")])


def test_the_workflows_pass_actionlint() -> None:
    workflows = sorted(str(p) for p in (ROOT / ".github/workflows").glob("*.yml"))
    assert any(w.endswith("release.yml") for w in workflows)
    run([tool("actionlint"), *workflows])


def test_the_release_workflow_builds_publishes_and_pushes_from_one_build() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    jobs = workflow["jobs"]
    assert jobs["pypi"]["permissions"] == {"id-token": "write"}  # trusted publishing, no token
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for s in jobs["pypi"]["steps"])
    for job in ("pypi", "github-release", "image"):
        assert jobs[job]["needs"] == "build"
        assert any(s.get("uses", "").startswith("actions/download-artifact@") for s in jobs[job]["steps"])
    assert any(s.get("uses", "").startswith("docker/build-push-action@") for s in jobs["image"]["steps"])


def test_the_image_is_multi_stage_from_the_wheel_without_a_compiler() -> None:
    install, final = dockerfile_stages()
    assert "COPY dist/" in {f"{i.keyword} {i.argument}"[:10] for i in install}
    assert "--only-binary=:all:" in only(install, "RUN")  # wheels only: the install stage needs no compiler either
    assert only(final, "COPY").startswith("--from=install ")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", only(final, "RUN"))
    assert only(final, "USER").split(":")[0] not in ("0", "root")
    assert json.loads(only(final, "ENTRYPOINT")) == ["gitops-flow", "serve"]


def test_the_image_entry_point_serves_the_example_flows_as_its_user(installed: Installed) -> None:
    """The final stage's ENV, USER, ENTRYPOINT and HEALTHCHECK, run here over the installed wheel: settings from the
    environment only, as the image's unprivileged user, the example flows served; SIGTERM stops it cleanly."""
    *_, final = dockerfile_stages()
    uid, _, gid = only(final, "USER").partition(":")
    as_user: dict[str, object] = {}
    if os.getuid() == 0:  # root here: become the image's user, as the container runtime would
        as_user = {"user": int(uid), "group": int(gid or uid), "extra_groups": []}
    user_home = installed.home / "home"
    (installed.home / "repo").mkdir()
    remote = Remote.create(installed.home / "repo")
    remote.publish(example_files(), "the example flows")
    user_home.mkdir()
    if as_user:
        for path in (user_home, *remote.bare.parent.rglob("*"), remote.bare.parent):
            os.chown(path, int(uid), int(gid or uid))
    env = image_env(final, {"/opt/gitops-flow": str(installed.venv), "/var/lib/gitops-flow": str(user_home)})
    port = free_port()
    # what an operator passes with `docker run -e`: the repository, fake models to try it, this test's port
    env.update(
        GITOPS_FLOW_REPO=str(remote.bare),
        GITOPS_FLOW_FAKE_MODELS="true",
        GITOPS_FLOW_PORT=str(port),
    )
    assert env["GITOPS_FLOW_HOST"] == "0.0.0.0"
    entry = json.loads(only(final, "ENTRYPOINT"))
    entry[0] = shutil.which(entry[0], path=env["PATH"]) or entry[0]
    log = installed.home / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(entry, env=env, cwd=user_home, stdout=sink, stderr=subprocess.STDOUT, **as_user)  # type: ignore[call-overload]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
    try:
        await_ready(process, client, log, timeout=90)
        answers_the_examples(client, DEMO_FLOW, DEMO_QUESTION)
        healthcheck = json.loads(only(final, "HEALTHCHECK").partition(" CMD ")[2])
        run(healthcheck, env=env, **as_user)
        owners = {p.stat().st_uid for p in (user_home / "data").rglob("*")}
        assert owners == {os.getuid() if not as_user else int(uid)}  # everything it wrote is its user's
        process.send_signal(signal.SIGTERM)  # docker stop, a pod's deletion: the workers drain, the server exits 0
        assert process.wait(timeout=60) == 0, log.read_text()
        assert "stopping" in log.read_text() and "gracefully" in log.read_text()
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
            process.wait()

"""The container image itself: the Dockerfile built from the wheel by Debian's buildah, over a Debian bookworm base
that mmdebstrap made from Debian's packages (no image registry is reachable here: .ci/run makes the base), then run
from the image as the image's user, serving the example flows, its HEALTHCHECK passing.

Without buildah or the base this skips, except under CI=true, where it fails; tests/test_packaging.py runs the same
install and entry-point steps without a container everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitops_flow.cli.demo import FLOW as DEMO_FLOW
from gitops_flow.cli.demo import QUESTION as DEMO_QUESTION
from tests.gitrepo import Remote
from tests.process import answers_the_examples, await_ready, free_port
from tests.served import ROOT, example_files

# made by .ci/run: mmdebstrap --variant=minbase --include=python3,python3-venv,git,ca-certificates bookworm, imported
BASE = os.environ.get("TEST_IMAGE_BASE", "localhost/gitops-flow-base:bookworm")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# building and installing share the machine with the rest of the suite: more than the default 300 s
pytestmark = pytest.mark.timeout(900)


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def buildah() -> str:
    found = shutil.which("buildah")
    missing = "buildah is not installed" if found is None else None
    if (
        found is not None
        and subprocess.run([found, "inspect", "--type", "image", BASE], capture_output=True).returncode
    ):
        missing = f"the base image {BASE} is not here (.ci/run makes it with mmdebstrap)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def image(buildah: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The image built as the release workflow builds it: the wheel in dist/, then the Dockerfile."""
    context = tmp_path_factory.mktemp("context")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(context / "dist"), str(ROOT)])
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy(ROOT / name, context / name)
    volumes: list[str] = []
    if CA_BUNDLE.is_file():  # this machine's TLS trust (a proxy's CA) for pip inside the build's RUN steps
        pip_conf = context.parent / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {CA_BUNDLE}\n")
        volumes = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro"]
    tag = f"localhost/gitops-flow-test:{uuid.uuid4().hex[:12]}"
    build = [buildah, "bud", "--isolation", "chroot", "--format", "docker", *volumes, "--build-arg"]
    run([*build, f"PYTHON_IMAGE={BASE}", "-t", tag, str(context)], timeout=900)
    try:
        yield tag
    finally:
        subprocess.run([buildah, "rmi", "-f", tag], capture_output=True)


def test_the_image_serves_the_example_flows_as_its_user(buildah: str, image: str, tmp_path: Path) -> None:
    config = json.loads(run([buildah, "inspect", "--type", "image", image]).stdout)["Docker"]["config"]
    user = config["User"]
    assert user.split(":")[0] not in ("", "0", "root")
    (tmp_path / "repo").mkdir()
    remote = Remote.create(tmp_path / "repo")
    remote.publish(example_files(), "the example flows")
    uid, _, gid = user.partition(":")
    for path in (remote.bare, *remote.bare.rglob("*")):
        os.chown(path, int(uid), int(gid or uid))  # the image's user reads the repository it is given
    container = run([buildah, "from", "--name", f"gitops-flow-test-{uuid.uuid4().hex[:8]}", image]).stdout.strip()
    port = free_port()
    in_container = [buildah, "run", "--isolation", "chroot", "--user", user]
    log = tmp_path / "serve.log"
    settings = ["-e", "GITOPS_FLOW_REPO=/srv/flows.git", "-e", "GITOPS_FLOW_FAKE_MODELS=true"]
    settings += ["-e", f"GITOPS_FLOW_PORT={port}", "-v", f"{remote.bare}:/srv/flows.git:ro"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*in_container, *settings, container, "--", *config["Entrypoint"]], stdout=sink, stderr=subprocess.STDOUT
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
    try:
        await_ready(process, client, log, timeout=120)
        answers_the_examples(client, DEMO_FLOW, DEMO_QUESTION)
        kind, *healthcheck = config["Healthcheck"]["Test"]
        assert kind == "CMD"
        run([*in_container, "-e", f"GITOPS_FLOW_PORT={port}", container, "--", *healthcheck], timeout=60)
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        subprocess.run([buildah, "rm", container], capture_output=True)

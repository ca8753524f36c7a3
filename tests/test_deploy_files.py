"""The deployment files as an operator applies them: the Kubernetes kustomizations rendered by `kubectl kustomize`
and checked by kubernetes-validate (--strict) and checkov, their drain matched to `serve`'s, no secret among them;
and the systemd unit, verified and scored by systemd-analyze, with its env file read by `gitops-flow settings`.

checkov pins old libraries, so it lives in a virtual environment of its own (.ci/run makes /tmp/checkov-venv;
CHECKOV_BIN names another). Under CI=true every tool must be there; elsewhere only checkov may be missing.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_flow import __version__
from gitops_flow.cli.workers import Supervisor
from tests.served import ROOT

KUSTOMIZATIONS = [
    "deploy/kubernetes",
    "deploy/kubernetes/overlays/try-redis",
    "deploy/kubernetes/overlays/webhook-ingress",
]
BIN = Path(sys.executable).parent
UNIT = ROOT / "deploy/systemd/gitops-flow.service"


def command(name: str) -> str:
    """A command on PATH or beside this interpreter; fails when missing."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (kubectl and systemd-analyze from the machine, the rest from '.[dev]')")
    return found


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each kustomization rendered to a file of YAML documents."""
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for kustomization in KUSTOMIZATIONS:
        path = out / (kustomization.replace("/", "_") + ".yaml")
        path.write_text(run([command("kubectl"), "kustomize", str(ROOT / kustomization)]).stdout)
        files[kustomization] = path
    return files


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str = "gitops-flow") -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_manifests_pass_kubernetes_validate_strict(rendered: dict[str, Path], kustomization: str) -> None:
    done = run([command("kubernetes-validate"), "--strict", "--quiet", str(rendered[kustomization])])
    assert "ERROR" not in done.stdout + done.stderr


def checkov() -> str | None:
    path = os.environ.get("CHECKOV_BIN", "/tmp/checkov-venv/bin/checkov")
    if Path(path).is_file():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"checkov is not at {path}: .ci/run installs it in /tmp/checkov-venv")
    return None


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_manifests_pass_checkov_and_every_skip_says_why(rendered: dict[str, Path], kustomization: str) -> None:
    binary = checkov()
    if binary is None:
        pytest.skip("checkov is not installed here (python3 -m venv /tmp/checkov-venv && ... pip install checkov)")
    done = subprocess.run(
        [binary, "-f", str(rendered[kustomization]), "--framework", "kubernetes", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads(done.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in results["failed_checks"]]
    assert failed == [] and done.returncode == 0, failed
    assert report["summary"]["passed"] > 50
    for skipped in results["skipped_checks"]:  # each skip is an annotation with its reason beside the resource
        assert len(skipped["check_result"]["suppress_comment"]) > 40, skipped["check_id"]


def test_the_deployment_probes_limits_and_drains_as_serve_does(rendered: dict[str, Path]) -> None:
    docs = documents(rendered["deploy/kubernetes"])
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # the pod is killed only after the preStop pause and serve's own drain (workers.Supervisor's grace) have passed
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = inspect.signature(Supervisor.__init__).parameters["grace"].default
    assert pod["terminationGracePeriodSeconds"] >= pause + grace + 5
    # a read-only root: the server writes its data folder and /tmp only, each a volume
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts and any(env["GITOPS_FLOW_DATA_DIR"].startswith(m + "/") for m in mounts)
    kinds = {d["kind"] for d in docs}
    assert {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "NetworkPolicy"} <= kinds
    # the autoscaler owns the replica count: a count in the Deployment would reset it at every apply
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "gitops-flow"
    assert "replicas" not in one(docs, "Deployment")["spec"]


def test_the_base_runs_the_release_image() -> None:
    base = yaml.safe_load((ROOT / "deploy/kubernetes/base/kustomization.yaml").read_text())
    [image] = base["images"]
    assert image["newTag"] == __version__


def test_no_secret_is_in_the_manifests(rendered: dict[str, Path]) -> None:
    """Secrets come from a Secret the operator creates (base/secrets.env.example, every line commented out)."""
    for path in rendered.values():
        docs = documents(path)
        assert "Secret" not in {d["kind"] for d in docs}
        for doc in docs:
            for value in (doc.get("data") or {}).values():
                assert not re.search(r"://[^/@\s]+:[^/@\s]*@", value), value  # no password in a URL
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        [container] = pod["containers"]
        secret_refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        assert secret_refs == ["gitops-flow-secrets"]
        assert list(container["envFrom"][-1]) == ["secretRef"]  # read last: a key in it wins over the ConfigMap
    example = (ROOT / "deploy/kubernetes/base/secrets.env.example").read_text().splitlines()
    assert all(line.startswith("#") for line in example if line.strip())


def test_the_try_redis_overlay_points_the_replicas_at_its_redis(rendered: dict[str, Path]) -> None:
    docs = documents(rendered["deploy/kubernetes/overlays/try-redis"])
    [settings] = [d for d in docs if d["kind"] == "ConfigMap"]
    service = one(docs, "Service", "gitops-flow-redis")
    port = service["spec"]["ports"][0]["port"]
    assert settings["data"]["GITOPS_FLOW_STATE"] == f"redis://gitops-flow-redis:{port}/0"
    assert one(docs, "StatefulSet", "gitops-flow-redis")["spec"]["replicas"] == 1


def test_the_ingress_example_exposes_the_webhooks_only(rendered: dict[str, Path]) -> None:
    docs = documents(rendered["deploy/kubernetes/overlays/webhook-ingress"])
    [rule] = one(docs, "Ingress", "gitops-flow-webhooks")["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/webhooks/"]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == one(docs, "Service")["metadata"]["name"]


@pytest.mark.parametrize(
    "env_file", ["deploy/kubernetes/base/settings.env", "deploy/systemd/gitops-flow.env.example"], ids=["k8s", "vm"]
)
def test_every_setting_in_the_env_files_is_one_serve_reads(env_file: str) -> None:
    """`gitops-flow settings` ignores a name it does not know: a misspelt setting would be silently lost."""
    names = {
        line.partition("=")[0] for line in (ROOT / env_file).read_text().splitlines() if line.startswith("GITOPS_FLOW_")
    }
    done = run([command("gitops-flow"), "settings", "--json", "--env-file", str(ROOT / env_file)], env={})
    from_file = {s["env"] for s in json.loads(done.stdout) if s["source"] == "file"}
    assert names and names == from_file


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart's binary where this machine has it."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/gitops-flow/bin/gitops-flow serve\n" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/gitops-flow/bin/gitops-flow", command("gitops-flow")))
    done = run([command("systemd-analyze"), "verify", str(unit)])
    assert done.stderr.strip() == ""  # an unknown or misspelt directive is a warning here


def test_the_systemd_unit_is_hardened() -> None:
    """systemd's own exposure score: at most 2.0 of 10 (`systemd-analyze security`, 'OK')."""
    run([command("systemd-analyze"), "security", "--offline=yes", "--threshold=20", "--no-pager", str(UNIT)])
    text = UNIT.read_text()
    assert "EnvironmentFile=/etc/gitops-flow/gitops-flow.env" in text
    assert "TimeoutStopSec=45" in text and "KillSignal=SIGTERM" in text  # serve's drain, as in Kubernetes

"""How CI installs gitops-flow: the pip requirement `gitops-flow init` writes into the workflow.

By default it is where this copy was installed from, when CI can reach that too (PEP 610's ``direct_url.json``): a
Git repository at the installed commit, or an archive's https URL. Installed from a package index, it is that
version from the index. Installed from what CI cannot reach (a local wheel, a checkout, an editable install), it is
the wheel the release workflow attached to this version's release on the project's home (the ``Repository`` URL of
the package's metadata, pyproject.toml), and ``init`` says so: never a pin on an index that may not have the version.
A project passes its own with ``--install`` (a version pin, a wheel URL, an internal index's name) or sets the
repository variable ``GITOPS_FLOW_INSTALL``.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from urllib.parse import urlsplit

DISTRIBUTION = "gitops-flow"
# a pip requirement on one line: name, version operators, extras, `@ URL`, markers; no quote, `$`, backtick or `{}`
_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 @+:/._=<>!~,;\[\]#%&?-]*$")


def check_spec(spec: str) -> str:
    """A requirement safe to write into the workflow's YAML and expression; raises ValueError saying why not."""
    if not spec or len(spec) > 500 or not _SPEC.match(spec) or " #" in spec or ": " in spec or spec.endswith(":"):
        raise ValueError(
            f"{spec!r} is not an install spec the workflow can carry: one pip requirement (gitops-flow==0.2.0, "
            "'gitops-flow @ git+https://host/org/repo@v0.2.0', a wheel's URL), without quotes, $, backticks, braces, "
            "' #' or ': '"
        )
    if _credentials(spec):
        raise ValueError("the install spec holds a credential (user:password@ in a URL); it would be in the workflow")
    return spec


def default_spec(version: str) -> tuple[str, str | None]:
    """The requirement for this copy of gitops-flow, and a note when it is a fallback (None otherwise)."""
    pinned = f"{DISTRIBUTION}=={version}"
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return pinned, f"gitops-flow is not installed as a package here; the workflow installs {pinned} from the index"
    raw = dist.read_text("direct_url.json")
    if raw is None:
        return pinned, None  # from an index: the same version from the same index
    try:
        origin = json.loads(raw)
    except ValueError:
        return pinned, None
    url = origin.get("url", "") if isinstance(origin, dict) else ""
    vcs = origin.get("vcs_info") if isinstance(origin, dict) else None
    remote = urlsplit(url).scheme in ("https", "http", "ssh") and not _credentials(url)
    if isinstance(vcs, dict) and vcs.get("vcs") == "git" and remote and vcs.get("commit_id"):
        return f"{DISTRIBUTION} @ git+{url}@{vcs['commit_id']}", None
    if isinstance(origin, dict) and "archive_info" in origin and urlsplit(url).scheme == "https" and remote:
        return f"{DISTRIBUTION} @ {url}", None
    where = "a local file or folder" if url.startswith("file:") else "a place"
    release = release_wheel(_repository(dist), version)
    if release is None:
        return pinned, (
            f"gitops-flow was installed from {where} CI cannot reach, and its metadata names no GitHub repository "
            f"to take the release's wheel from; the workflow installs {pinned} from the package index: pass "
            "--install SPEC, or set the repository variable GITOPS_FLOW_INSTALL"
        )
    spec = f"{DISTRIBUTION} @ {release}"
    return spec, (
        f"gitops-flow was installed from {where} CI cannot reach; the workflow installs the {version} release's "
        f"wheel ({release}): pass --install SPEC, or set the repository variable GITOPS_FLOW_INSTALL, to install "
        "another"
    )


def release_wheel(repository: str | None, version: str) -> str | None:
    """The URL of the wheel the release workflow attaches to release ``v<version>`` of a GitHub ``repository``
    (.github/workflows/release.yml), or None when ``repository`` is not an https GitHub repository URL."""
    if repository is None:
        return None
    parts = urlsplit(repository)
    path = parts.path.strip("/").removesuffix(".git")
    if parts.scheme != "https" or parts.netloc != "github.com" or not re.fullmatch(r"[\w.-]+/[\w.-]+", path):
        return None
    return f"https://github.com/{path}/releases/download/v{version}/gitops_flow-{version}-py3-none-any.whl"


def _repository(dist: metadata.Distribution) -> str | None:
    """The ``Repository`` project URL of the installed metadata (pyproject.toml's [project.urls])."""
    entries: list[str] = dist.metadata.get_all("Project-URL") or []
    for entry in entries:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip()
    return None


def _credentials(text: str) -> bool:
    return bool(re.search(r"://[^/@\s]+:[^/@\s]*@", text))

"""What `serve` checks before it starts: that every model provider package the followed branch's flows need is
installed here. A flow whose package is missing would otherwise go live as a failed version and answer nothing, which
the operator learns from a request; `serve` refuses to start instead, naming the extra or package to install.

It fetches the branch as the reconciler will (into the same clone, which the server then reuses), reads the flow
files of its head and lists each flow's model nodes' providers (their fallbacks' too). A branch that cannot be
fetched yet is not a reason to refuse: the server starts and retries, as it always has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from gitops_flow.components.provider_packages import ProviderPackage, needed
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.config import Settings
from gitops_flow.delivery.source import GitSource
from gitops_flow.exceptions import ConfigError, GitOpsFlowError
from gitops_flow.flow.routing import ROUTING_FILE
from gitops_flow.security.repo_credentials import GitAuth
from gitops_flow.validation.documents import flow_name, validate_bytes
from gitops_flow.validation.routing import validate_routing_bytes

log = logging.getLogger("gitops_flow.delivery")

MAX_FLOW_BYTES = 16 * 1024 * 1024  # a flow file read here, at most (an export's limit; builds.MAX_EXPORT_BYTES)


def check_packages(settings: Settings, registry: ComponentRegistry, auth: GitAuth | None = None) -> None:
    """Raise ConfigError naming every provider package the followed branch's flows need that is not installed,
    with the flows that need it and what to install; nothing when all are, when models are faked, or when the
    branch cannot be read yet (logged)."""
    if settings.fake_models or settings.repo_url is None:
        return
    # one attempt: a remote that does not answer delays the start by one fetch_timeout at most
    source = GitSource(
        str(settings.repo_url), settings.data_dir / "repo", timeout=settings.fetch_timeout, attempts=1, auth=auth
    )
    try:
        missing = asyncio.run(_missing(source, settings.branch, registry))
    except GitOpsFlowError as exc:
        log.warning("the provider packages of the flows were not checked before start: %s", exc)
        return
    finally:
        source.close()
    if missing:
        lines = [
            f"{package.distribution} (model provider {package.provider!r}, needed by {', '.join(flows)}): "
            f"{package.install_hint()}"
            for package, flows in missing
        ]
        raise ConfigError("flows on the followed branch need provider packages not installed here: " + "; ".join(lines))


async def _missing(
    source: GitSource, branch: str, registry: ComponentRegistry
) -> list[tuple[ProviderPackage, list[str]]]:
    refs = source.refs()  # the clone the start-up check fetched a moment ago (cli/preflight.check_source)
    if branch not in refs.branches:
        refs = await source.fetch()  # no clone yet (a caller that did not check the source first)
    head = refs.branches.get(branch)
    if head is None:
        return []
    found: dict[str, tuple[ProviderPackage, list[str]]] = {}
    for name, packages in _needs(source, head, registry):
        for package in packages:
            if not package.installed:
                found.setdefault(package.distribution, (package, []))[1].append(name)
    return [found[key] for key in sorted(found)]


def _needs(source: GitSource, head: str, registry: ComponentRegistry) -> Iterator[tuple[str, list[ProviderPackage]]]:
    flows_dir = "flows"
    routing = source.read_file(head, ROUTING_FILE, max_bytes=MAX_FLOW_BYTES)
    if routing is not None:
        config, _ = validate_routing_bytes(routing[1], file=ROUTING_FILE)
        if config is not None:
            flows_dir = config.flows_dir
    for file_name, blob in sorted(source.list_files(head, flows_dir).items()):
        stem = file_name.removesuffix(".json")
        raw = source.read_blob(blob, max_bytes=MAX_FLOW_BYTES)
        report = validate_bytes(raw, registry, file=file_name, stem=stem, dry_build=False)
        if report.spec is not None:
            nodes = [(node.component, dict(node.params)) for node in report.spec.nodes]
            yield flow_name(stem), needed(nodes)

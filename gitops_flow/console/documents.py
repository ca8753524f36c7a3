"""Flow documents at the versions the server has seen, read from each commit's tree and parsed (never built), for the
console's drawings and diffs.

Only versions of the server's own list are read (the commits of the tracked branch it fetched), so a page cannot make
the server read an unmerged commit. Documents are cached by their blob, at most MAX_CACHED of them; reading and
parsing runs in a worker thread, a few at a time, so a burst of diff pages cannot take the server's cores.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

import anyio

from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.delivery import corpus
from gitops_flow.delivery.source import GitSource
from gitops_flow.delivery.versions import Version
from gitops_flow.exceptions import LookupFailed, SourceError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.validation.documents import MAX_EXPORT_BYTES, validate_bytes

MAX_CACHED = 64
MAX_READERS = 2


@dataclass(frozen=True, slots=True)
class Document:
    """A flow's file at a version: its path and the parsed document (None when the file is absent there, or does not
    parse into a flow document; ``error`` then says why)."""

    flow: str
    sha: str
    path: str
    spec: FlowSpec | None
    error: str | None = None


class Documents:
    """Reads flow documents from the server's clone."""

    def __init__(
        self, source: GitSource, registry: ComponentRegistry, policy: SecretPolicy, *, max_cached: int = MAX_CACHED
    ) -> None:
        self.source = source
        self.registry = registry
        self.policy = policy
        self.max_cached = max_cached
        self._cache: OrderedDict[str, FlowSpec | None] = OrderedDict()  # blob sha -> parsed document
        self._readers = asyncio.Semaphore(MAX_READERS)

    async def read(self, version: Version, flow: str, flows_dir: str) -> Document:
        """``flow``'s document at ``version``; ``flows_dir`` is where flows live when the version does not say
        (a version read back from the store has no routing file in memory)."""
        folder = version.routing.flows_dir if version.routing is not None else flows_dir
        path = f"{folder}/{flow}.json" if folder not in ("", ".") else f"{flow}.json"
        build = version.blobs.get(flow)
        blob = corpus.file_blob(build) if build is not None else None  # a build id names the file's blob first
        async with self._readers:
            try:
                if blob is None:
                    files = await anyio.to_thread.run_sync(self.source.list_files, version.sha, folder)
                    blob = files.get(f"{flow}.json")
                if blob is None:
                    return Document(flow, version.sha, path, None, f"{path} is not in {version.sha[:12]}")
                if blob not in self._cache:
                    spec = await anyio.to_thread.run_sync(self._parse, blob, path, flow)
                    self._cache[blob] = spec
                    while len(self._cache) > self.max_cached:
                        self._cache.popitem(last=False)
                self._cache.move_to_end(blob)
                spec = self._cache[blob]
            except (SourceError, LookupFailed):
                return Document(flow, version.sha, path, None, f"{version.sha[:12]} is no longer in the server's clone")
        error = None if spec is not None else f"{path} at {version.sha[:12]} is not a flow document"
        return Document(flow, version.sha, path, spec, error)

    def _parse(self, blob: str, path: str, flow: str) -> FlowSpec | None:
        raw = self.source.read_blob(blob, max_bytes=MAX_EXPORT_BYTES)
        report = validate_bytes(raw, self.registry, file=path, stem=flow, dry_build=False, policy=self.policy)
        return report.spec

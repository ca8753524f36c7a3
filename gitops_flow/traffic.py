"""The routing table: an immutable snapshot of what can be served, and the choice of a version for a request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gitops_flow.exceptions import NoReadyVersion, NotServable
from gitops_flow.routing import RoutingConfig
from gitops_flow.versions import Version, find

DEFAULT_SESSION_TTL = RoutingConfig().session_ttl


@dataclass(frozen=True, slots=True)
class Choice:
    """The version that serves a request, and the ref it was reached by (None for a pin by sha)."""

    version: Version
    ref: str | None


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Everything a request needs to pick its version. Never changed: the reconciler publishes a new one in one step,
    so a request that read the table keeps a consistent view while a deploy goes on.

    ``head`` is the last good version of the tracked branch (a failed commit at the head leaves it where it was);
    ``refs`` maps tag and branch names to commits as last fetched; ``versions`` holds every version seen.
    """

    branch: str
    head: Version | None = None
    refs: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, Version] = field(default_factory=dict)

    @property
    def session_ttl(self) -> float:
        routing = self.head.routing if self.head is not None else None
        return routing.session_ttl if routing is not None else DEFAULT_SESSION_TTL

    def default(self, flow: str, *, user: str | None = None) -> Choice:
        """The version a request without a pin gets. Today the branch head; the ref weights of `gitops-flow.yaml`
        plug in here, choosing by a sticky hash of ``user``."""
        if self.head is None:
            raise NoReadyVersion("no good version is loaded yet")
        return Choice(self.head, self.branch)

    def resolve(self, text: str) -> tuple[str, str | None]:
        """The commit an explicit pin names, and the ref it named (None for a sha): a tag or branch as last fetched,
        or the full or short sha of a version seen. The branch means what it serves, its last good commit.

        Raises UnknownVersion when nothing matches; whether the commit can serve is the caller's question.
        """
        if text == self.branch and self.head is not None:
            return self.head.sha, text
        if text in self.refs:
            return self.refs[text], text
        return find(self.versions, text).sha, None

    def session(self, sha: str) -> Choice | None:
        """The version a session's pin names, if it can still serve."""
        version = self.versions.get(sha)
        if version is None or not version.ready:
            return None
        return Choice(version, self.ref_of(sha))

    def ref_of(self, sha: str) -> str | None:
        if self.head is not None and self.head.sha == sha:
            return self.branch
        return next((name for name, target in self.refs.items() if target == sha and name != self.branch), None)

    @staticmethod
    def servable(version: Version) -> Version:
        if version.status == "failed":
            raise NotServable(
                f"version {version.sha[:12]} failed validation ({len(version.problems)} problems); it is never served"
            )
        if version.status == "retired":
            raise NotServable(f"version {version.sha[:12]} was retired; pin a version that is live (see /versions)")
        return version

"""What a deploy event means on the Git host: a commit status per ref and a deployment status per environment.

Pure: a deploy event (as /history shows it) and a view of the routing in, the updates to write out. A ref is both a
status context (``gitops-flow/<ref>``) and a deployment environment (``<ref>``), as Argo CD's and Flux's notifiers
name theirs after the application. The commit status says whether the commit is good on that ref: ``failure`` when a
flow it changed failed there, when it failed as a whole, when its canary was aborted, or when it was yanked. The
deployment says what the environment runs: a commit that went live is a ``success`` even when some of its flows
failed and keep serving their last good builds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gitops_flow.flow.routing import RoutingConfig
from gitops_flow.stores.events import DeployEvent

StatusState = Literal["success", "failure", "error", "pending"]
DeploymentState = Literal["success", "failure", "error", "inactive", "in_progress", "queued", "pending"]
CONTEXT_PREFIX = "gitops-flow/"
_REMEMBERED = 64  # commits whose failed flows are remembered, so a second failure's status names both


@dataclass(frozen=True, slots=True)
class CommitStatus:
    """A status on commit ``sha`` under ``context``."""

    sha: str
    context: str
    state: StatusState
    description: str
    target_url: str | None = None


@dataclass(frozen=True, slots=True)
class DeploymentUpdate:
    """A status on the deployment of ``sha`` to ``environment`` (every environment it went to, when None).

    ``create``: make the deployment when there is none yet (a commit going live); otherwise only deployments that
    exist are updated (a canary aborted, a tag deleted, a commit yanked)."""

    sha: str
    environment: str | None
    state: DeploymentState
    description: str
    create: bool
    production: bool = False
    log_url: str | None = None
    environment_url: str | None = None


Update = CommitStatus | DeploymentUpdate


@dataclass(frozen=True, slots=True)
class Links:
    """Where a status links to: ``target`` is a template with ``{url}`` (the server's public URL), ``{sha}``,
    ``{ref}`` and ``{flow}``; the environment's URL is the server's console, ``/ui``."""

    public_url: str | None = None
    target: str = "{url}/ui/history?ref={ref}"

    def status(self, sha: str, ref: str, flow: str = "") -> str | None:
        if not self.public_url and "{url}" in self.target:
            return None
        values = {"{url}": (self.public_url or "").rstrip("/"), "{sha}": sha, "{ref}": ref, "{flow}": flow}
        text = self.target
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def environment(self) -> str | None:
        return f"{self.public_url.rstrip('/')}/ui" if self.public_url else None


@dataclass(frozen=True, slots=True)
class RefView:
    """What the routing says of refs when an event is sent: which refs route traffic (a tag that routes nothing gets
    no status), and which are primaries (the first ref of a route: a production environment)."""

    branch: str
    named: frozenset[str] | None = None  # None: every ref routes
    primaries: frozenset[str] = frozenset()

    @classmethod
    def of(cls, branch: str, routing: RoutingConfig | None) -> RefView:
        """The view of a routing file (None: no file, the branch serves everything)."""
        if routing is None:
            return cls(branch, frozenset({branch}))
        named = frozenset(t.ref for targets in routing.routes.values() for t in targets) | {branch}
        primaries = frozenset(targets[0].ref for targets in routing.routes.values() if targets)
        return cls(branch, named, primaries)

    def routed(self, ref: str) -> bool:
        """Whether ``ref`` (or, for a flow's own ``<flow>/<ref>``, its ``<ref>``) routes traffic."""
        return self.named is None or ref in self.named or ref.partition("/")[2] in self.named

    def primary(self, ref: str) -> bool:
        return ref in self.primaries or ref.partition("/")[2] in self.primaries


@dataclass(slots=True)
class Translator:
    """Turns deploy events into updates; remembers the flows that failed at recent commits (bounded), so that when
    two flows fail at one commit its status names both."""

    links: Links = field(default_factory=Links)
    _failed: OrderedDict[str, list[str]] = field(default_factory=OrderedDict)

    def updates(self, event: DeployEvent, view: RefView) -> list[Update]:
        kind = str(event.get("event", ""))
        sha = event.get("sha")
        if not isinstance(sha, str) or not sha:
            return []
        handler = _HANDLERS.get(kind)
        return handler(self, event, sha, view) if handler is not None else []

    # -- the branch ---------------------------------------------------------------------------------------------

    def _deployed(self, event: DeployEvent, sha: str, view: RefView) -> list[Update]:
        branch = view.branch
        changed = set(_names(event.get("changed")))
        failed = _names(event.get("failed_flows"))
        here = [name for name in failed if name in changed]
        earlier = [name for name in failed if name not in changed]
        if event.get("event") == "rolled-back":
            restores = str(event.get("restores") or "")
            text = f"Rolled back: {branch} serves the content of {restores[:7]} again"
        elif detail := event.get("detail"):
            text = f"Live on {branch}: {detail}"
        else:
            text = f"Live on {branch}"
        if here:
            status_text = f"{text} except {_list(here)}, which failed here"
        elif earlier:
            status_text = f"{text}; {_list(earlier)} still failing from an earlier commit"
        else:
            status_text = text
        state: StatusState = "failure" if here else "success"
        kept = "kept its last good build" if len(failed) == 1 else "kept their last good builds"
        deployment_text = f"{text}; {_list(failed)} {kept}" if failed else text
        return [
            CommitStatus(sha, CONTEXT_PREFIX + branch, state, status_text, self.links.status(sha, branch)),
            self._deployment(sha, branch, "success", deployment_text, view, create=True),
        ]

    def _failed_event(self, event: DeployEvent, sha: str, view: RefView) -> list[Update]:
        branch = view.branch
        flow = event.get("flow")
        first = _first_problem(event.get("problems"))
        if not isinstance(flow, str):  # the commit as a whole: nothing of it is served
            text = f"Not deployed: {first}" if first else "Not deployed: the commit failed"
            return [
                CommitStatus(sha, CONTEXT_PREFIX + branch, "failure", text, self.links.status(sha, branch)),
                self._deployment(sha, branch, "failure", text, view, create=True),
            ]
        names = self._remember(sha, flow)
        serving = event.get("serving")
        keeps = f"; serving {serving[:7]}" if isinstance(serving, str) and serving else "; not served"
        if len(names) == 1:
            text = f"{flow} failed: {first}{keeps}" if first else f"{flow} failed{keeps}"
        else:
            text = f"{len(names)} flows failed here: {_list(names)}"
        return [CommitStatus(sha, CONTEXT_PREFIX + branch, "failure", text, self.links.status(sha, branch, flow))]

    def _yanked(self, event: DeployEvent, sha: str, view: RefView) -> list[Update]:
        text = "Yanked by gitops-flow.yaml: never served again"
        return [
            CommitStatus(sha, CONTEXT_PREFIX + view.branch, "failure", text, self.links.status(sha, view.branch)),
            DeploymentUpdate(sha, None, "inactive", text, create=False),
        ]

    # -- refs ---------------------------------------------------------------------------------------------------

    def _tag_moved(self, event: DeployEvent, sha: str, view: RefView) -> list[Update]:
        ref = event.get("ref")
        if not isinstance(ref, str) or not view.routed(ref):
            return []
        before, after = event.get("before"), event.get("after")
        if not isinstance(after, str) or not after:
            if not isinstance(before, str) or not before:
                return []
            return [DeploymentUpdate(before, ref, "inactive", f"Tag {ref} was deleted", create=False)]
        was = f" (was {before[:7]})" if isinstance(before, str) and before else " (a new tag)"
        text = f"{ref} points here: promoted{was}"
        return [
            CommitStatus(after, CONTEXT_PREFIX + ref, "success", text, self.links.status(after, ref)),
            self._deployment(after, ref, "success", text, view, create=True),
        ]

    def _refused(self, event: DeployEvent, sha: str, view: RefView) -> list[Update]:
        ref = event.get("ref")
        if not isinstance(ref, str):
            return []
        text = f"Not served on {ref}: the commit is not on {view.branch}"
        return [
            CommitStatus(sha, CONTEXT_PREFIX + ref, "failure", text, self.links.status(sha, ref)),
            DeploymentUpdate(sha, ref, "failure", text, create=False),
        ]

    def _canary(self, event: DeployEvent, sha: str, view: RefView) -> list[Update]:
        ref, flow = event.get("ref"), event.get("flow")
        if not isinstance(ref, str) or not isinstance(flow, str):
            return []
        if event.get("event") == "aborted":
            reason = event.get("reason")
            text = f"{flow}'s canary on {ref} aborted" + (f": {reason}" if isinstance(reason, str) else "")
            state: Literal["success", "failure"] = "failure"
        else:
            text = f"{flow}'s canary on {ref} resumed"
            state = "success"
        return [
            CommitStatus(sha, CONTEXT_PREFIX + ref, state, text, self.links.status(sha, ref, flow)),
            DeploymentUpdate(sha, ref, state, text, create=False, log_url=self.links.status(sha, ref, flow)),
        ]

    def _stepped(self, event: DeployEvent, sha: str, view: RefView) -> list[Update]:
        if event["event"] != "stepped":
            return []
        flow, ref = event["flow"], event["ref"]
        # GitHub keeps 140 characters of a description: the command names the commit by 12 digits here
        text = f"{flow} on {ref}: step {event['step']}/{event['steps']}, {event['share']:g} %"
        command = event.get("command")
        text += f"; durable: {command.replace(sha, sha[:12])}" if command and sha else " of the traffic"
        return [
            CommitStatus(sha, CONTEXT_PREFIX + ref, "success", text, self.links.status(sha, ref, flow)),
            DeploymentUpdate(sha, ref, "success", text, create=False, log_url=self.links.status(sha, ref, flow)),
        ]

    # -- helpers ------------------------------------------------------------------------------------------------

    def _deployment(
        self, sha: str, ref: str, state: DeploymentState, text: str, view: RefView, *, create: bool
    ) -> DeploymentUpdate:
        return DeploymentUpdate(
            sha,
            ref,
            state,
            text,
            create=create,
            production=view.primary(ref),
            log_url=self.links.status(sha, ref),
            environment_url=self.links.environment(),
        )

    def _remember(self, sha: str, flow: str) -> list[str]:
        names = self._failed.pop(sha, [])
        if flow not in names:
            names.append(flow)
        self._failed[sha] = names
        while len(self._failed) > _REMEMBERED:
            self._failed.popitem(last=False)
        return names


_HANDLERS: dict[str, Callable[[Translator, DeployEvent, str, RefView], list[Update]]] = {
    "deployed": Translator._deployed,
    "rolled-back": Translator._deployed,
    "failed": Translator._failed_event,
    "yanked": Translator._yanked,
    "tag-moved": Translator._tag_moved,
    "ref-refused": Translator._refused,
    "aborted": Translator._canary,
    "resumed": Translator._canary,
    "stepped": Translator._stepped,
}


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def _list(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _first_problem(problems: Any) -> str:
    """``flows/triage.json:12 missing-secret`` (and how many more), from an event's problems."""
    if not isinstance(problems, list) or not problems or not isinstance(problems[0], dict):
        return ""
    first = problems[0]
    where = str(first.get("file") or "")
    if first.get("line"):
        where += f":{first['line']}"
    text = f"{where} {first.get('code', '')}".strip()
    return text + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")

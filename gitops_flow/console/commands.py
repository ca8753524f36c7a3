"""The Git commands that promote or roll back a flow's version: the console shows them and never runs them.

Git stays the truth (SPEC, "the idea"): a promotion is a tag moved by a person, a rollback a `git revert` that is
reviewed like any commit, so the console has no button that would make the server differ from the repository.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Command:
    """What to run, in a shell at a clone of the flow repository, and what it does."""

    title: str
    lines: tuple[str, ...]
    note: str = ""


def promote(flow: str, ref: str, sha: str, *, weight: float | None = None) -> Command:
    """Move the tag ``ref`` (the route's primary) to ``sha``, so all of ``flow``'s traffic goes to that build."""
    share = f" ({weight:g} % now)" if weight is not None else ""
    return Command(
        title=f"Promote {sha[:12]} to {ref}{share}",
        lines=(
            f"git tag --force {shlex.quote(ref)} {sha}",
            f"git push --force origin {shlex.quote('refs/tags/' + ref)}",
        ),
        note=_others(flow, ref),
    )


def rollback(flow: str, sha: str, branch: str, changed: Sequence[str]) -> Command:
    """Revert the commit ``sha`` on ``branch`` (its flows go back to what they were before it)."""
    others = sorted(set(changed) - {flow})
    note = (
        f"{sha[:12]} also changed {', '.join(others)}: the revert takes those changes back too"
        if others
        else f"the revert is a new commit on {branch}, deployed (and guarded) like any other"
    )
    return Command(
        title=f"Roll back {flow} to before {sha[:12]}",
        lines=(f"git revert --no-edit {sha}", f"git push origin {shlex.quote(branch)}"),
        note=note,
    )


def _others(flow: str, ref: str) -> str:
    if ref.startswith(f"{flow}/"):
        return f"{ref} is {flow}'s own tag: no other flow moves"
    return f"every flow routed through {ref} moves with it; a tag {flow}/{ref} would move {flow} alone"

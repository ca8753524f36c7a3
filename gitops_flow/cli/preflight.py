"""What `serve` checks before it serves: the state store, the repository and its branch, and the port.

A setting that cannot work makes `serve` exit at once with status 1 and one line on stderr naming the reason and
the fix (each check raises ConfigError), instead of a server that runs unready with the reason in /readyz only.
Two starts are not refused: a repository with no branch at all (a new, empty one: the server waits for its first
push), and a repository that cannot be fetched while the server's clone already holds the branch (a restart during
a Git host's outage serves what it served, and says so in the log).
"""

from __future__ import annotations

import logging

from gitops_flow.assembly import git_source
from gitops_flow.config import Settings
from gitops_flow.delivery.source import GitSource
from gitops_flow.exceptions import ConfigError, SourceError, StoreError
from gitops_flow.stores import open_store

log = logging.getLogger("gitops_flow.server")
MAX_BRANCHES_NAMED = 10  # in the message for a branch that does not exist


async def check_store(settings: Settings) -> None:
    """Open the state store once, write and read a probe, close it; ConfigError with the reason when it cannot."""
    store = open_store(settings.state, data_dir=settings.data_dir)
    try:
        await store.open()
        try:
            await store.ping()
        finally:
            await store.close()
    except StoreError as exc:
        raise ConfigError(
            f"{exc}; fix: give a state the server can open, write and read (--state sqlite:///PATH or redis://HOST,"
            " or GITOPS_FLOW_STATE)"
        ) from None


async def check_source(settings: Settings) -> None:
    """Fetch the repository into the server's clone (the fetch the server would make first) and look for the branch.

    Raises ConfigError when the repository cannot be read and the clone does not hold the branch already, or when
    the repository has branches but not this one (naming those it has)."""
    source = git_source(settings)
    branch = settings.branch
    try:
        try:
            refs = await source.fetch()
        except SourceError as exc:
            held = _held(source)
            if branch in held:
                log.warning(
                    "%s; serving what the server's clone holds of branch %r until a fetch succeeds", exc, branch
                )
                return
            raise ConfigError(
                f"cannot read the repository: {exc}; fix: give --repo (or GITOPS_FLOW_REPO) a path or URL that git can"
                " fetch, with its credential (GITOPS_FLOW_GIT_TOKEN, GITOPS_FLOW_GIT_SSH_KEY_FILE) if it is private"
            ) from None
    finally:
        source.close()
    if branch in refs.branches:
        return
    if not refs.branches:
        log.warning("%s has no branch yet: the server waits for a first push to %r", source.url, branch)
        return
    names = sorted(refs.branches)
    shown = ", ".join(names[:MAX_BRANCHES_NAMED]) + (
        f" and {len(names) - MAX_BRANCHES_NAMED} more" if len(names) > MAX_BRANCHES_NAMED else ""
    )
    raise ConfigError(
        f"branch {branch!r} does not exist in {source.url} (its branches: {shown}); fix: give --branch NAME (or"
        " GITOPS_FLOW_BRANCH) naming the branch to follow"
    )


def _held(source: GitSource) -> set[str]:
    """The branches the clone holds from an earlier run (none when it cannot even be read)."""
    try:
        return set(source.refs().branches)
    except SourceError:
        return set()

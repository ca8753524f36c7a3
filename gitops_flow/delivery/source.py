"""The Git source: a bare clone of the flow repository, fetched on demand and read from commit trees."""

from __future__ import annotations

import asyncio
import binascii
import logging
import re
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
import git

from gitops_flow.exceptions import ConfigError, SourceError, UnknownVersion
from gitops_flow.flow import commit_text as committext
from gitops_flow.security.redaction import query_secrets, redact
from gitops_flow.security.repo_credentials import AuthError, GitAuth

# Mirror branches and tags. An explicit tag refspec makes --prune drop deleted tags too (what --prune-tags is
# shorthand for), and "+" follows force-pushed branches and moved tags.
log = logging.getLogger("gitops_flow.reconcile")
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_ENV = {"GIT_TERMINAL_PROMPT": "0"}  # a missing credential fails at once instead of waiting for a password
# The credential of an HTTP(S) URL reaches git through a credential helper that reads it from git's environment,
# never through the URL: git hands a URL to its transport helper on the command line (`git-remote-https <url>`),
# where any local user's `ps` reads it, and `url.<real>.insteadOf` rewriting does not change that. The helper is
# configured for the remote's origin only, so a redirect to another host gets nothing.
_USERNAME_VAR, _PASSWORD_VAR = "GITOPS_FLOW_GIT_USERNAME", "GITOPS_FLOW_GIT_PASSWORD"
_HELPER = (
    f'!f() {{ if [ "$1" = get ]; then printf \'username=%s\\npassword=%s\\n\' "${_USERNAME_VAR}"'
    f' "${_PASSWORD_VAR}"; fi; }}; f'
)
_GIT_MESSAGE = re.compile(r"(?:fatal|error): (.+)")
_TIMED_OUT = re.compile(r"did not complete in (\S+) secs")
_CHUNK = 1 << 16
MAX_TREE_FILES = 200_000  # files tree_files lists of one commit, at most


def _reason(exc: git.exc.GitError) -> str:
    """The meaningful line of what git said, without GitPython's wrapping (which repeats the command line)."""
    stderr = getattr(exc, "stderr", "") or ""
    if found := _TIMED_OUT.search(stderr):
        return f"timed out after {found[1]}s"
    stderr = stderr.removeprefix("\n  stderr: '").removesuffix("'")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if found := _GIT_MESSAGE.match(line):
            return found[1]
    return lines[-1] if lines else type(exc).__name__


@contextmanager
def _git_errors(action: str) -> Iterator[None]:
    """Translate GitPython's exceptions into SourceError; ``from None`` because their text may hold a token."""
    try:
        yield
    except git.exc.GitError as exc:
        raise SourceError(redact(f"{action} failed: {_reason(exc)}")) from None


@dataclass(frozen=True, slots=True)
class Refs:
    """Branches and tags of the clone, each naming a commit sha (annotated tags are peeled to their commit)."""

    branches: Mapping[str, str]
    tags: Mapping[str, str]

    def resolve(self, name: str) -> str | None:
        """The commit a tag or, failing that, a branch of this name points at; None if neither exists."""
        return self.tags.get(name, self.branches.get(name))


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What the source tells about one commit."""

    sha: str
    author: str
    email: str
    time: float
    message: str
    parents: tuple[str, ...]

    @property
    def summary(self) -> str:
        return self.message.partition("\n")[0]


def _info(commit: git.Commit) -> CommitInfo:
    """What the server keeps of a commit: its author's text cut to committext's bounds, here at ingest, so nothing
    downstream holds or shows more."""
    message = commit.message
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return CommitInfo(
        sha=commit.hexsha,
        author=committext.name(commit.author.name or ""),
        email=committext.name(commit.author.email or ""),
        time=float(commit.authored_date),
        message=committext.message(message.strip()),
        parents=tuple(parent.hexsha for parent in commit.parents),
    )


def _text(value: str | bytes) -> str:
    """cat-file headers come back as bytes although GitPython annotates them as str."""
    return value.decode("ascii") if isinstance(value, bytes) else value


def _is_url(url: str) -> bool:
    """``scheme://...`` or scp-like ``user@host:path`` (a colon before any slash); anything else is a local path."""
    head, colon, _ = url.partition(":")
    return "://" in url or (bool(colon) and "/" not in head)


@dataclass(frozen=True, slots=True)
class _Remote:
    """What git is given for a repository URL: the URL without its credential, and the credential apart."""

    url: str
    options: tuple[str, ...] = ()  # `git -c` settings: the credential helper (it holds no secret)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # the credential, for the helper to read

    @classmethod
    def parse(cls, url: str) -> _Remote:
        """Split the credential off ``url``; raises ConfigError for one that cannot be kept off git's command line.

        ``https://USER:TOKEN@host/path`` (or ``https://TOKEN@host/path``) becomes ``https://host/path`` plus a
        credential helper for ``https://host``. A query-string credential (``?private_token=...``) cannot be
        separated (git sends its own paths after the query, and hands the URL to its transport on the command
        line), nor can a password in an ``ssh://`` or ``git://`` URL: both are refused.
        """
        if not _is_url(url):
            return cls(str(Path(url).expanduser().resolve()))
        named = query_secrets(url)
        if named:
            raise ConfigError(
                f"the repository URL {redact(url)!r} carries a credential in its query string ({', '.join(named)}),"
                " which git cannot keep off the process list; give it as https://USER:TOKEN@HOST/PATH instead"
            )
        parts = urlsplit(url) if "://" in url else None
        if parts is None or "@" not in parts.netloc:
            return cls(url)
        userinfo, _, host = parts.netloc.rpartition("@")
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            if ":" in userinfo:
                raise ConfigError(
                    f"the repository URL {redact(url)!r} has a password, which git would show on its command line;"
                    f" use a key for {scheme}:// or an https:// URL"
                )
            return cls(url)  # an SSH user name is no secret
        username, _, password = userinfo.partition(":")
        origin = f"{scheme}://{host}"
        return cls(
            urlunsplit(parts._replace(netloc=host)),
            ("credential.helper=", f"credential.{origin}.helper={_HELPER}"),  # the empty one drops other helpers
            {_USERNAME_VAR: unquote(username), _PASSWORD_VAR: unquote(password)},
        )

    def authenticated(self, auth: GitAuth) -> _Remote:
        """This remote with the operator's credentials added (repo_credentials.py): a token through the same credential
        helper as a URL's, for this origin only; a deploy key through GIT_SSH_COMMAND. Reads a token file now; raises
        SourceError when it cannot."""
        try:
            token = auth.current_token()
        except AuthError as exc:
            raise SourceError(str(exc)) from None
        if token:
            parts = urlsplit(self.url)
            origin = f"{parts.scheme.lower()}://{parts.netloc}"
            helper = ("credential.helper=", f"credential.{origin}.helper={_HELPER}")
            return _Remote(self.url, helper, {**self.env, _USERNAME_VAR: auth.token_user, _PASSWORD_VAR: token})
        command = auth.ssh_command()
        if command is not None:
            return _Remote(self.url, self.options, {**self.env, "GIT_SSH_COMMAND": command})
        return self


class GitSource:
    """A bare clone of ``url`` in ``cache_dir``: ``fetch`` mirrors the remote, the other methods read the clone only.

    Nothing is read from a working tree; files come from the tree of a commit, so what a sha shows never changes.
    The clone outlives the process: a restart reads the existing clone before its first fetch succeeds.
    """

    def __init__(
        self,
        url: str,
        cache_dir: Path,
        *,
        timeout: float = 30.0,
        attempts: int = 3,
        backoff: float = 0.5,
        auth: GitAuth | None = None,
    ) -> None:
        assert attempts >= 1, "attempts counts the first try"
        self._remote = _Remote.parse(url)
        self._auth = auth or GitAuth()
        if self._auth:
            try:
                self._auth.check(url)
            except AuthError as exc:
                raise ConfigError(str(exc)) from None
        self._url = redact(url)
        self._cache_dir = Path(cache_dir)
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._repo: git.Repo | None = None
        self._lock = threading.RLock()  # GitPython's persistent `git cat-file --batch` pipes are not thread-safe
        self._inflight: asyncio.Future[Refs] | None = None

    @property
    def url(self) -> str:
        """The remote's URL with any credentials redacted, for display."""
        return self._url

    async def fetch(self) -> Refs:
        """Clone on first use, then fetch every branch and tag (forced, pruned); returns the refs afterwards.

        Callers arriving while a fetch runs share its outcome. Each attempt is killed after ``timeout`` seconds;
        ``attempts`` tries are made, ``backoff``, ``2 * backoff``, ... seconds apart. Raises SourceError.
        """
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch_with_retries())
            self._inflight.add_done_callback(self._landed)
        # shield: one caller giving up must not cancel the fetch the others wait for
        return await asyncio.shield(self._inflight)

    def _landed(self, task: asyncio.Future[Refs]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here, so it is not reported as lost when every caller was cancelled

    async def _fetch_with_retries(self) -> Refs:
        attempt = 1
        while True:
            try:
                return await anyio.to_thread.run_sync(self._fetch_once)
            except SourceError:
                if attempt >= self._attempts:
                    raise
            await anyio.sleep(self._backoff * 2 ** (attempt - 1))
            attempt += 1

    def _fetch_once(self) -> Refs:
        repo = self._open(create=True)
        assert repo is not None
        remote = self._remote.authenticated(self._auth) if self._auth else self._remote
        with _git_errors(f"fetch of {self.url}"):
            # the URL goes on the command line without its credential, and nowhere into the clone's config or
            # FETCH_HEAD; the credential goes only into git's environment (readable by this user alone). A git
            # command of its own, as `-c` options stay on a Git object until its next command, from any thread.
            git.Git(repo.git_dir)(c=list(remote.options)).fetch(
                "--prune",
                "--no-write-fetch-head",
                remote.url,
                *_REFSPECS,
                env={**_ENV, **remote.env},
                kill_after_timeout=self._timeout,
            )
        return self.refs()

    def _open(self, *, create: bool = False) -> git.Repo | None:
        """The clone in cache_dir: reused if there is one, made empty (``git init --bare``) if ``create``."""
        with self._lock:
            if self._repo is None:
                # what is wrong goes to the log with the folder; the error (shown by /readyz) names no local path
                with _git_errors("opening the server's clone (in its data folder)"):
                    if (self._cache_dir / "HEAD").is_file():
                        self._repo = git.Repo(self._cache_dir)
                        if not self._repo.bare:
                            self.close()
                            log.error("%s holds a working tree, not a bare clone", self._cache_dir)
                            raise SourceError("the clone folder holds a working tree, not a bare clone")
                    elif create:
                        if self._cache_dir.is_dir() and any(self._cache_dir.iterdir()):
                            log.error("%s is neither empty nor a git clone", self._cache_dir)
                            raise SourceError("the clone folder is neither empty nor a git clone")
                        self._repo = git.Repo.init(self._cache_dir, mkdir=True, bare=True)
            return self._repo

    def close(self) -> None:
        """Stop the git processes GitPython keeps running; the clone stays on disk and is reopened on next use."""
        with self._lock:
            if self._repo is not None:
                self._repo.close()
                self._repo = None

    def refs(self) -> Refs:
        """Branches and tags of the clone as of the last fetch (no network); empty before the first clone. A ref
        whose name is longer than committext.MAX_REF_NAME is left out (one log line says how many): no routing file
        can name it, and it is shown nowhere."""
        branches: dict[str, str] = {}
        tags: dict[str, str] = {}
        repo = self._open()
        if repo is None:
            return Refs(branches, tags)
        with _git_errors(f"reading the refs of {self.url}"):
            fields = "%(refname) %(objecttype) %(objectname) %(*objecttype) %(*objectname)"
            listing = repo.git.for_each_ref(f"--format={fields}", "refs/heads", "refs/tags")
        too_long = 0
        for line in listing.splitlines():
            name, kind, sha, peeled_kind, peeled_sha = line.split(" ")
            short = name.removeprefix("refs/heads/").removeprefix("refs/tags/")
            if not committext.ref_kept(short):
                too_long += 1
                continue
            if peeled_kind:
                kind, sha = peeled_kind, peeled_sha
            if kind != "commit":
                continue  # a tag of a tree or blob (or of another tag) names no version
            if name.startswith("refs/heads/"):
                branches[name.removeprefix("refs/heads/")] = sha
            else:
                tags[name.removeprefix("refs/tags/")] = sha
        if too_long:
            log.warning("ignored %d refs of %s longer than %d characters", too_long, self.url, committext.MAX_REF_NAME)
        return Refs(branches, tags)

    def _commit(self, rev: str) -> git.Commit:
        """The commit ``rev`` (sha, short sha, branch or tag) names in the clone; raises UnknownVersion."""
        repo = self._open()
        if repo is None or not rev:
            raise UnknownVersion(f"{rev!r} is not a commit of the repository")
        try:
            sha, _, _ = repo.git.get_object_header(f"{rev}^{{commit}}")
        except ValueError:  # cat-file answered "missing" or "ambiguous", or GitPython refused a line feed
            raise UnknownVersion(f"{rev!r} is not a commit of the repository") from None
        return git.Commit(repo, binascii.a2b_hex(sha))  # GitPython hands back the hex sha as bytes here

    def commit(self, rev: str) -> CommitInfo:
        """The commit ``rev`` names; raises UnknownVersion if it is not a commit in the clone."""
        with self._lock:
            return _info(self._commit(rev))

    def has_commit(self, sha: str) -> bool:
        try:
            self.commit(sha)
        except UnknownVersion:
            return False
        return True

    def commits_between(self, old: str | None, new: str, *, limit: int = 100) -> list[CommitInfo]:
        """Commits reachable from ``new`` but not from ``old``, oldest first, at most the newest ``limit``.

        An unknown (or None) ``old`` gives just ``[commit(new)]``. A force-pushed-away ``old`` still works while its
        objects remain in the clone.
        """
        with self._lock:
            head = self._commit(new)
            try:
                base = self._commit(old) if old is not None else None
            except UnknownVersion:
                base = None
            if base is None:
                return [_info(head)]
            with _git_errors(f"listing commits of {self.url}"):
                shas = head.repo.git.rev_list(f"--max-count={limit}", head.hexsha, f"^{base.hexsha}").split()
            return [_info(head.repo.commit(sha)) for sha in reversed(shas)]

    def is_ancestor(self, old: str, new: str) -> bool:
        """Whether ``new`` descends from ``old`` (False means a force push); False if ``old`` is unknown."""
        with self._lock:
            head = self._commit(new)
            try:
                base = self._commit(old)
            except UnknownVersion:
                return False
            with _git_errors(f"comparing commits of {self.url}"):
                return head.repo.is_ancestor(base, head)

    def _entry(self, rev: str, path: str) -> git.Blob | git.Tree | None:
        """The object at ``path`` ("" or "." is the root) in the tree of commit ``rev``; None if absent."""
        tree = self._commit(rev).tree
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if not parts:
            return tree
        try:
            entry = tree / "/".join(parts)
        except KeyError:
            return None
        return entry if isinstance(entry, git.Blob | git.Tree) else None  # a submodule is neither

    def list_files(self, rev: str, folder: str, suffix: str = ".json") -> dict[str, str]:
        """Regular files directly in ``folder`` at commit ``rev`` whose names end with ``suffix``: {name: blob sha}.

        Not recursive; no blob is read. Symlinks are skipped. A missing folder gives {}; raises UnknownVersion.
        """
        with self._lock:
            tree = self._entry(rev, folder)
            if not isinstance(tree, git.Tree):
                return {}
            return {b.name: b.hexsha for b in tree.blobs if stat.S_ISREG(b.mode) and b.name.endswith(suffix)}

    def tree_files(self, rev: str) -> dict[str, str]:
        """Every regular file of commit ``rev``'s tree, recursively: {path from the root: blob sha}, at most
        MAX_TREE_FILES (a larger tree lists its first ones). Symlinks and submodules are skipped, so nothing read
        through this listing leaves the repository. Raises UnknownVersion."""
        found: dict[str, str] = {}
        with self._lock:
            tree = self._entry(rev, "")
            if not isinstance(tree, git.Tree):
                return found
            for item in tree.traverse():
                if isinstance(item, git.Blob) and stat.S_ISREG(item.mode):
                    found[str(item.path)] = item.hexsha
                    if len(found) >= MAX_TREE_FILES:
                        break
        return found

    def read_blob(self, blob_sha: str, *, max_bytes: int) -> bytes:
        """The blob's bytes, or only its first ``max_bytes + 1`` if larger (so callers see it is oversize).

        Raises SourceError if the clone holds no such blob.
        """
        with self._lock:
            repo = self._open()
            missing = SourceError(f"blob {blob_sha!r} is not in the clone of {self.url}")
            if repo is None:
                raise missing
            try:
                _, kind, size, stream = repo.git.stream_object_data(blob_sha)
            except ValueError:  # cat-file answered "missing"
                raise missing from None
            data = stream.read(min(size, max_bytes + 1))
            while stream.read(_CHUNK):
                pass  # drain the rest in chunks: the shared cat-file pipe must end up at the next object
        if _text(kind) != "blob":
            raise SourceError(f"{blob_sha!r} is a {_text(kind)}, not a blob")
        return data

    def read_file(self, rev: str, path: str, *, max_bytes: int) -> tuple[str, bytes] | None:
        """(blob sha, bytes) of the regular file at ``path`` in commit ``rev``, None if absent; sizes as read_blob."""
        with self._lock:
            blob = self._entry(rev, path)
            if not isinstance(blob, git.Blob) or not stat.S_ISREG(blob.mode):
                return None
            return blob.hexsha, self.read_blob(blob.hexsha, max_bytes=max_bytes)


def read_at(paths: Sequence[Path], rev: str, *, max_bytes: int) -> dict[Path, bytes | None]:
    """What each of ``paths`` (files of a local working tree) held at commit ``rev`` of the Git repository that holds
    it: its bytes (only the first ``max_bytes + 1`` of a larger file, as read_blob), or None where that commit has no
    regular file there. For `gitops-flow validate --base`: nothing is fetched, and the working tree is not touched.

    Raises SourceError when a path is in no Git working tree, UnknownVersion when ``rev`` names no commit of it.
    """
    found: dict[Path, bytes | None] = {}
    opened: dict[Path, git.Repo] = {}
    try:
        for path in paths:
            real = path.resolve()
            repo, root = _working_tree(real, path, opened)
            try:
                sha, _, _ = repo.git.get_object_header(f"{rev}^{{commit}}")
            except ValueError:  # cat-file answered "missing" or "ambiguous", or GitPython refused a line feed
                raise UnknownVersion(f"{rev!r} is not a commit of the repository at {root}") from None
            with _git_errors(f"reading {path} at {rev}"):
                try:
                    blob = git.Commit(repo, binascii.a2b_hex(sha)).tree / real.relative_to(root).as_posix()
                except KeyError:
                    blob = None
                if not isinstance(blob, git.Blob) or not stat.S_ISREG(blob.mode):
                    found[path] = None
                    continue
                _, _, size, stream = repo.git.stream_object_data(blob.hexsha)
                found[path] = stream.read(min(size, max_bytes + 1))
                while stream.read(_CHUNK):
                    pass  # drain the rest: the shared cat-file pipe must end up at the next object
    finally:
        for repo in opened.values():
            repo.close()
    return found


def refs_at(folder: Path) -> Refs:
    """The branches (local, and origin's remote-tracking ones as CI checks them out) and tags of the repository whose
    working tree holds ``folder``, each naming a commit (annotated tags peeled). For `gitops-flow plan`: where each
    ref of a route points; nothing is fetched. Raises SourceError when the folder is in no Git working tree."""
    opened: dict[Path, git.Repo] = {}
    branches: dict[str, str] = {}
    tags: dict[str, str] = {}
    try:
        repo, _ = _working_tree(folder.resolve() / "_", folder, opened)
        with _git_errors(f"reading the refs of {folder}"):
            fields = "%(refname) %(objecttype) %(objectname) %(*objecttype) %(*objectname)"
            listing = repo.git.for_each_ref(f"--format={fields}", "refs/heads", "refs/tags", "refs/remotes/origin")
    finally:
        for opened_repo in opened.values():
            opened_repo.close()
    for line in listing.splitlines():
        name, kind, sha, peeled_kind, peeled_sha = line.split(" ")
        if peeled_kind:
            kind, sha = peeled_kind, peeled_sha
        if kind != "commit" or name == "refs/remotes/origin/HEAD":
            continue
        if name.startswith("refs/tags/"):
            tags[name.removeprefix("refs/tags/")] = sha
        elif name.startswith("refs/heads/"):
            branches[name.removeprefix("refs/heads/")] = sha
        else:
            branches.setdefault(name.removeprefix("refs/remotes/origin/"), sha)
    return Refs(branches, tags)


def files_at(folder: Path, rev: str, *, suffix: str, max_bytes: int) -> dict[str, bytes]:
    """The regular files directly in ``folder`` (a folder of a local working tree, present there or not) at commit
    ``rev`` whose names end with ``suffix``: name -> bytes (only the first ``max_bytes + 1`` of a larger file). For
    `gitops-flow plan`, which must also see the flows a branch removes; nothing is fetched or touched.

    Raises SourceError when the folder is in no Git working tree, UnknownVersion when ``rev`` names no commit of it.
    """
    opened: dict[Path, git.Repo] = {}
    real = folder.resolve()
    try:
        repo, root = _working_tree(real / "_", folder, opened)
        tree, _ = _folder_at(repo, root, real, rev, f"reading {folder} at {rev}")
        found: dict[str, bytes] = {}
        if tree is None:
            return found
        with _git_errors(f"reading {folder} at {rev}"):
            for blob in tree.blobs:
                if stat.S_ISREG(blob.mode) and blob.name.endswith(suffix):
                    _, _, size, stream = repo.git.stream_object_data(blob.hexsha)
                    found[blob.name] = stream.read(min(size, max_bytes + 1))
                    while stream.read(_CHUNK):
                        pass  # drain the rest: the shared cat-file pipe must end up at the next object
        return found
    finally:
        for opened_repo in opened.values():
            opened_repo.close()


def tree_at(folder: Path, rev: str) -> dict[str, str]:
    """Every regular file under ``folder`` (a folder of a local working tree) at commit ``rev``, recursively:
    {path from ``folder``: blob sha}, at most MAX_TREE_FILES. For `gitops-flow plan`, which compares the documents
    flows read with the base's; nothing is fetched or touched. Raises SourceError, UnknownVersion as files_at."""
    opened: dict[Path, git.Repo] = {}
    real = folder.resolve()
    try:
        repo, root = _working_tree(real / "_", folder, opened)
        tree, relative = _folder_at(repo, root, real, rev, f"listing {folder} at {rev}")
        found: dict[str, str] = {}
        if tree is None:
            return found
        with _git_errors(f"listing {folder} at {rev}"):
            prefix = "" if relative == "." else relative + "/"
            for item in tree.traverse():
                if isinstance(item, git.Blob) and stat.S_ISREG(item.mode):
                    found[str(item.path).removeprefix(prefix)] = item.hexsha
                    if len(found) >= MAX_TREE_FILES:
                        break
        return found
    finally:
        for opened_repo in opened.values():
            opened_repo.close()


def _folder_at(repo: git.Repo, root: Path, real: Path, rev: str, doing: str) -> tuple[git.Tree | None, str]:
    """The tree of the folder ``real`` (inside the working tree at ``root``) at commit ``rev``, None when the commit
    has no such folder, and the folder's path from the root. Raises UnknownVersion when ``rev`` names no commit."""
    try:
        sha, _, _ = repo.git.get_object_header(f"{rev}^{{commit}}")
    except ValueError:
        raise UnknownVersion(f"{rev!r} is not a commit of the repository at {root}") from None
    relative = real.relative_to(root).as_posix()
    with _git_errors(doing):
        tree: object = git.Commit(repo, binascii.a2b_hex(sha)).tree
        if relative != ".":
            try:
                tree = tree / relative  # type: ignore[operator]
            except KeyError:
                return None, relative
    return (tree if isinstance(tree, git.Tree) else None), relative


def _working_tree(real: Path, shown: Path, opened: dict[Path, git.Repo]) -> tuple[git.Repo, Path]:
    """The repository whose working tree holds ``real`` (opened once per tree, kept in ``opened``) and its root."""
    with _git_errors(f"finding the repository of {shown}"):
        try:
            repo = git.Repo(real.parent, search_parent_directories=True)
        except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError):
            raise SourceError(f"{shown} is not in a Git repository") from None
    tree = repo.working_tree_dir
    root = Path(tree).resolve() if tree is not None else None
    if root is None or not real.is_relative_to(root):
        repo.close()
        raise SourceError(f"{shown} is not in the working tree of a Git repository")
    if root in opened:
        repo.close()
    return opened.setdefault(root, repo), root

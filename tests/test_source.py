"""GitSource against real git repositories: a bare origin, a working clone pushing to it, and a bare cache clone."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from gitops_flow.delivery.source import CommitInfo, GitSource, Refs
from gitops_flow.exceptions import SourceError, UnknownVersion
from gitops_flow.security.redaction import redact
from tests.gitrepo import EPOCH, Remote, git

MakeSource = Callable[..., GitSource]


@pytest.fixture
def make_source(tmp_path: Path) -> Iterator[MakeSource]:
    """GitSource factory caching in ``tmp_path/cache`` unless told otherwise; closes every source it made."""
    made: list[GitSource] = []

    def make(url: str, cache_dir: Path | None = None, **options: Any) -> GitSource:
        made.append(GitSource(url, cache_dir or tmp_path / "cache", **options))
        return made[-1]

    yield make
    for source in made:
        source.close()


def fetch(source: GitSource) -> Refs:
    return asyncio.run(source.fetch())


def count_fetches(source: GitSource, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the start time of every git fetch the source runs (one per attempt)."""
    started: list[float] = []
    fetch_once = source._fetch_once

    def counting() -> Refs:
        started.append(time.monotonic())
        return fetch_once()

    monkeypatch.setattr(source, "_fetch_once", counting)
    return started


# --- redact and the value objects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:s3cret@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
        ("https://ghp_token@github.com/org/repo", "https://***@github.com/org/repo"),
        ("https://user:p@ss@host:8443/r.git", "https://***@host:8443/r.git"),
        (
            "fatal: unable to access 'https://u:t@h/r/': Failed; retry https://u:t@h/r",
            "fatal: unable to access 'https://***@h/r/': Failed; retry https://***@h/r",
        ),
        ("ssh://git@example.com:22/r.git", "ssh://***@example.com:22/r.git"),
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("/srv/git/repo.git mail me@example.com", "/srv/git/repo.git mail me@example.com"),
        ("https://host/path?q=a@b", "https://host/path?q=a@b"),
    ],
    ids=["user-password", "token", "at-in-password", "in-error-text", "ssh-user", "plain", "scp", "path", "query"],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_refs_resolve_prefers_a_tag_over_a_branch_of_the_same_name() -> None:
    refs = Refs(branches={"main": "a" * 40, "stable": "b" * 40}, tags={"stable": "c" * 40})
    assert refs.resolve("stable") == "c" * 40
    assert refs.resolve("main") == "a" * 40
    assert refs.resolve("nope") is None


def test_source_url_is_redacted(make_source: MakeSource) -> None:
    assert make_source("https://user:s3cret@example.com/r.git").url == "https://***@example.com/r.git"


# --- cloning and fetching -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "file-url", "working-clone", "relative-path"])
def test_clone_then_fetch(
    kind: str, remote: Remote, make_source: MakeSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = remote.commit({"flows/a.json": "{}"}, "first")
    remote.push()
    monkeypatch.chdir(tmp_path)
    url = {"path": remote.url, "file-url": remote.file_url, "working-clone": str(remote.work)}.get(kind, "origin.git")
    source = make_source(url)

    assert fetch(source) == Refs(branches={"main": first}, tags={})
    assert (tmp_path / "cache" / "HEAD").is_file() and not (tmp_path / "cache" / "flows").exists()  # bare: no checkout
    second = remote.commit({"flows/b.json": "[]"}, "second")
    remote.push()
    assert source.refs().branches == {"main": first}  # refs() never touches the network
    assert fetch(source).branches == {"main": second}
    assert source.list_files(second, "flows") == source.list_files("main", "flows")
    assert set(source.list_files("main", "flows")) == {"a.json", "b.json"}


def test_the_clone_keeps_no_url_or_credentials(remote: Remote, make_source: MakeSource, tmp_path: Path) -> None:
    remote.commit({"a.json": "{}"})
    remote.push()
    fetch(make_source(remote.url))
    config = (tmp_path / "cache" / "config").read_text()
    assert "origin" not in config and str(remote.bare) not in config
    assert not (tmp_path / "cache" / "FETCH_HEAD").exists()


def test_first_fetch_of_an_empty_remote_gives_no_refs(remote: Remote, make_source: MakeSource) -> None:
    source = make_source(remote.url)
    assert source.refs() == Refs({}, {})  # no clone yet
    assert not source.has_commit("main")
    assert fetch(source) == Refs({}, {})


def test_new_commits_appear_after_fetch_oldest_first(remote: Remote, make_source: MakeSource) -> None:
    shas = [remote.commit({"flows/a.json": f'{{"n": {n}}}'}, f"commit {n}") for n in range(6)]
    remote.push()
    source = make_source(remote.url)
    fetch(source)

    def between(old: str | None, new: str, **limit: int) -> list[str]:
        return [info.sha for info in source.commits_between(old, new, **limit)]

    assert between(shas[1], shas[5]) == shas[2:]
    assert between(shas[1], "main", limit=2) == shas[4:]  # the newest `limit`, still oldest first
    assert between(None, shas[3]) == [shas[3]]
    assert between("0" * 40, shas[3]) == [shas[3]]  # an unknown old counts as None
    assert between(shas[5], shas[5]) == []
    assert between(shas[5], shas[1]) == []
    assert source.is_ancestor(shas[0], shas[5]) and not source.is_ancestor(shas[5], shas[0])
    assert not source.is_ancestor("0" * 40, shas[5])
    with pytest.raises(UnknownVersion):
        source.commits_between(shas[0], "0" * 40)


def test_commit_info(remote: Remote, make_source: MakeSource) -> None:
    first = remote.commit({"a.json": "{}"}, "first")
    second = remote.commit({"a.json": "[]"}, "Switch to a list\n\nBecause lists.\n")
    remote.push()
    source = make_source(remote.url)
    fetch(source)

    info = source.commit("main")
    assert info == CommitInfo(
        sha=second,
        author="Ada Lovelace",
        email="ada@example.com",
        time=float(EPOCH + 2 * 60),  # the second commit the helper made
        message="Switch to a list\n\nBecause lists.",
        parents=(first,),
    )
    assert info.summary == "Switch to a list"
    assert source.commit(second[:10]) == info
    assert source.commit(first).parents == ()


@pytest.mark.parametrize("rev", ["0" * 40, "deadbeef", "no-such-branch", "", "main~5", "main^{tree}", "a\nb"])
def test_commit_of_an_unknown_rev_is_unknown_version(rev: str, remote: Remote, make_source: MakeSource) -> None:
    remote.commit({"a.json": "{}"})
    remote.push()
    source = make_source(remote.url)
    fetch(source)
    with pytest.raises(UnknownVersion):
        source.commit(rev)
    assert not source.has_commit(rev)
    with pytest.raises(UnknownVersion):
        source.list_files(rev, "")


# --- tags and force pushes ----------------------------------------------------------------------------------------


def test_tags_lightweight_annotated_moved_and_deleted(remote: Remote, make_source: MakeSource) -> None:
    first = remote.commit({"a.json": "1"}, "first")
    second = remote.commit({"a.json": "2"}, "second")
    remote.tag("canary")
    remote.tag("stable", first, annotated=True)
    remote.git("tag", "tree-tag", "HEAD^{tree}")  # names no commit, so no version
    remote.push()
    remote.push_tags()
    source = make_source(remote.url)

    refs = fetch(source)
    assert refs.tags == {"canary": second, "stable": first}  # the annotated tag is peeled to its commit
    assert source.commit("stable").sha == first

    remote.tag("stable", second, annotated=True)  # promote: the tag moves, which needs a forced fetch
    remote.delete_tag("canary")
    remote.push_tags()
    assert fetch(source).tags == {"stable": second}


def test_force_pushed_branch_is_followed(remote: Remote, make_source: MakeSource) -> None:
    base = remote.commit({"a.json": "base"}, "base")
    bad = remote.commit({"a.json": "bad"}, "bad")
    remote.push()
    source = make_source(remote.url)
    fetch(source)

    fixed = remote.force_push_reset(base)
    assert fixed == base
    rewritten = remote.commit({"a.json": "rewritten"}, "rewritten")
    remote.git("push", "--quiet", "--force", "origin", "HEAD")
    assert fetch(source).branches == {"main": rewritten}
    assert not source.is_ancestor(bad, rewritten)  # history was rewritten
    assert source.has_commit(bad)  # the orphan stays readable in the clone until git gc
    assert [c.sha for c in source.commits_between(bad, rewritten)] == [rewritten]
    assert source.read_file(bad, "a.json", max_bytes=100) == (source.list_files(bad, "")["a.json"], b"bad")

    reverted = remote.revert(rewritten)  # a revert is a new commit on top: no force push
    remote.push()
    fetch(source)
    assert source.is_ancestor(rewritten, reverted)
    assert source.read_file("main", "a.json", max_bytes=100) == (source.list_files(base, "")["a.json"], b"base")


# --- reading files from commit trees ------------------------------------------------------------------------------


def test_files_come_from_the_commit_tree_not_a_working_tree(remote: Remote, make_source: MakeSource) -> None:
    old = remote.commit({"flows/a.json": '{"v": 1}'}, "old")
    new = remote.commit({"flows/a.json": '{"v": 2}', "flows/b.json": "{}"}, "new")
    remote.push()
    source = make_source(remote.url)
    fetch(source)

    old_files = source.list_files(old, "flows")
    assert list(old_files) == ["a.json"]
    assert source.read_blob(old_files["a.json"], max_bytes=100) == b'{"v": 1}'
    assert source.read_file(old, "flows/a.json", max_bytes=100) == (old_files["a.json"], b'{"v": 1}')
    new_blob = source.list_files(new, "flows")["a.json"]
    assert new_blob != old_files["a.json"]
    assert source.read_file(new, "flows/a.json", max_bytes=100) == (new_blob, b'{"v": 2}')
    assert source.read_file(old, "flows/b.json", max_bytes=100) is None


def test_list_files_lists_regular_files_directly_in_the_folder(remote: Remote, make_source: MakeSource) -> None:
    files: dict[str, str | None] = {"top.json": "{}", "README.md": "#", "flows/a.json": "{}", "flows/notes.txt": "x"}
    files |= {"flows/nested/deep.json": "{}", "flows/dir.json/inner.json": "{}"}
    remote.commit(files)
    os.symlink("a.json", remote.work / "flows" / "link.json")
    sha = remote.commit({})
    remote.push()
    source = make_source(remote.url)
    fetch(source)

    assert set(source.list_files(sha, "flows")) == {"a.json"}  # not recursive; no dirs, no links, no other suffix
    assert set(source.list_files(sha, "flows/")) == {"a.json"}
    assert set(source.list_files(sha, "./flows/nested")) == {"deep.json"}
    assert set(source.list_files(sha, "")) == set(source.list_files(sha, ".")) == {"top.json"}
    assert set(source.list_files(sha, "flows", suffix=".txt")) == {"notes.txt"}
    assert source.list_files(sha, "missing") == {}
    assert source.list_files(sha, "top.json") == {}  # a file is not a folder
    assert source.list_files(sha, "../flows") == {}
    assert source.read_file(sha, "flows/link.json", max_bytes=100) is None  # a link is not a flow file
    assert source.read_file(sha, "flows/nested", max_bytes=100) is None
    assert source.read_file(sha, "", max_bytes=100) is None


def test_identical_content_is_the_same_blob(remote: Remote, make_source: MakeSource) -> None:
    first = remote.commit({"flows/a.json": '{"same": true}'})
    second = remote.commit({"flows/b.json": '{"same": true}', "flows/c.json": "other"})
    remote.push()
    source = make_source(remote.url)
    fetch(source)
    blobs = source.list_files(second, "flows")
    assert blobs["a.json"] == blobs["b.json"] == source.list_files(first, "flows")["a.json"] != blobs["c.json"]
    assert blobs["a.json"] == git("hash-object", "--stdin", cwd=remote.work, input='{"same": true}')


def test_an_oversize_blob_reads_max_bytes_plus_one(remote: Remote, make_source: MakeSource) -> None:
    big, small, empty = "x" * 200_000, '{"ok": 1}', ""
    sha = remote.commit({"big.json": big, "small.json": small, "empty.json": empty, "exact.json": "y" * 10})
    remote.push()
    source = make_source(remote.url)
    fetch(source)
    blobs = source.list_files(sha, "")

    for _ in range(2):  # the shared cat-file pipe stays in step after a cut-off read
        assert source.read_blob(blobs["big.json"], max_bytes=10) == b"x" * 11
        assert source.read_blob(blobs["small.json"], max_bytes=10) == small.encode()
        assert source.read_blob(blobs["exact.json"], max_bytes=10) == b"y" * 10
        assert source.read_blob(blobs["empty.json"], max_bytes=10) == b""
    assert source.read_file(sha, "big.json", max_bytes=5) == (blobs["big.json"], b"xxxxxx")
    assert source.read_blob(blobs["big.json"], max_bytes=1_000_000) == big.encode()


def test_read_blob_of_something_else_is_a_source_error(remote: Remote, make_source: MakeSource) -> None:
    sha = remote.commit({"a.json": "{}"})
    remote.push()
    source = make_source(remote.url)
    with pytest.raises(SourceError, match="not in the clone"):
        source.read_blob(sha, max_bytes=10)  # nothing cloned yet
    fetch(source)
    with pytest.raises(SourceError, match="not in the clone"):
        source.read_blob("0" * 40, max_bytes=10)
    with pytest.raises(SourceError, match="is a commit, not a blob"):
        source.read_blob(sha, max_bytes=10)
    assert source.read_file(sha, "a.json", max_bytes=10) is not None  # and the pipe is still in step


# --- single flight, retries, failures -----------------------------------------------------------------------------


def test_concurrent_fetches_share_one_git_fetch(
    remote: Remote, make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = remote.commit({"a.json": "{}"})
    remote.push()
    source = make_source(remote.url)
    started = count_fetches(source, monkeypatch)

    async def five() -> list[Refs]:
        return await asyncio.gather(*(source.fetch() for _ in range(5)))

    assert asyncio.run(five()) == [Refs({"main": sha}, {})] * 5
    assert len(started) == 1
    fetch(source)  # once it has landed, the next call fetches again
    assert len(started) == 2


def test_concurrent_fetches_share_one_failure(make_source: MakeSource, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source("/nonexistent/repo.git", attempts=2, backoff=0)
    started = count_fetches(source, monkeypatch)

    async def three() -> list[Refs | BaseException]:
        return await asyncio.gather(*(source.fetch() for _ in range(3)), return_exceptions=True)

    errors = asyncio.run(three())
    assert all(isinstance(e, SourceError) for e in errors) and len(started) == 2


def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(remote: Remote, make_source: MakeSource) -> None:
    sha = remote.commit({"a.json": "{}"})
    remote.push()
    source = make_source(remote.url)

    async def main() -> Refs:
        impatient = asyncio.ensure_future(source.fetch())
        patient = asyncio.ensure_future(source.fetch())
        await asyncio.sleep(0)
        impatient.cancel()
        return await patient

    assert asyncio.run(main()).branches == {"main": sha}


def test_failures_are_retried_with_backoff_and_redacted(
    make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source("https://user:s3cret@127.0.0.1:9/nope.git", attempts=3, backoff=0.5)  # port 9 refuses
    started = count_fetches(source, monkeypatch)
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(anyio, "sleep", sleep)

    with pytest.raises(SourceError) as caught:
        fetch(source)
    assert len(started) == 3 and slept == [0.5, 1.0]
    message = str(caught.value)
    assert message.startswith("fetch of https://***@127.0.0.1:9/nope.git failed: ")
    assert "127.0.0.1" in message.removeprefix("fetch of https://***@127.0.0.1:9/nope.git failed: ")  # git's reason
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "s3cret" not in "".join(traceback.format_exception(caught.value))
    assert caught.value.retryable


def test_a_missing_repository_says_so(make_source: MakeSource, tmp_path: Path) -> None:
    source = make_source(str(tmp_path / "nope.git"), attempts=1)
    with pytest.raises(SourceError, match=r"failed: '.*nope.git' does not appear to be a git repository$"):
        fetch(source)


def test_a_fetch_that_hangs_is_killed_after_the_timeout(make_source: MakeSource) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        source = make_source(f"https://127.0.0.1:{port}/r.git", timeout=0.5, attempts=1)
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"failed: timed out after 0.5s$"):
            fetch(source)
    assert time.monotonic() - started < 5


def test_the_clone_keeps_serving_when_the_remote_disappears(remote: Remote, make_source: MakeSource) -> None:
    sha = remote.commit({"flows/a.json": "{}"})
    remote.push()
    source = make_source(remote.url, attempts=1)
    fetch(source)
    shutil.rmtree(remote.bare)

    with pytest.raises(SourceError, match="does not appear to be a git repository"):
        fetch(source)
    assert source.refs().branches == {"main": sha}
    assert list(source.list_files("main", "flows")) == ["a.json"]
    assert source.read_file(sha, "flows/a.json", max_bytes=10) is not None


def test_a_restart_reuses_the_clone_in_cache_dir(remote: Remote, make_source: MakeSource, tmp_path: Path) -> None:
    first = remote.commit({"a.json": "{}"})
    remote.push()
    before = make_source(remote.url)
    fetch(before)
    before.close()
    second = remote.commit({"a.json": "[]"})
    remote.push()

    after = make_source(remote.file_url)  # the same repository, spelled differently
    assert after.refs().branches == {"main": first}  # served from the existing clone before any fetch
    assert fetch(after).branches == {"main": second}
    assert before.commit("main").sha == second  # a closed source reopens the clone on use


def test_cache_dir_that_is_not_a_clone_is_refused(remote: Remote, make_source: MakeSource, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(SourceError, match="is neither empty nor a git clone"):
        fetch(make_source(remote.url, tmp_path / "other", attempts=1))
    assert (tmp_path / "other" / "precious.txt").read_text() == "keep me"
    with pytest.raises(SourceError, match="holds a working tree, not a bare clone"):
        fetch(make_source(remote.url, remote.work / ".git", attempts=1))


# --- scale --------------------------------------------------------------------------------------------------------


def _fast_import(bare: Path, *, files: int, commits: int) -> None:
    """``commits`` commits on main: the first adds ``files`` flows, each later one changes a counter beside them."""
    chunks: list[str] = []
    for n in range(commits):
        message = f"commit {n}"
        chunks.append(f"commit refs/heads/main\ncommitter A <a@example.com> {EPOCH + n} +0000\n")
        chunks.append(f"data {len(message)}\n{message}\n")
        changed = {f"flows/f{f:04}.json": f'{{"flow": {f}}}' for f in range(files)} if n == 0 else {"counter": str(n)}
        for path, content in changed.items():
            chunks.append(f"M 100644 inline {path}\ndata {len(content)}\n{content}\n")
    git("fast-import", "--quiet", cwd=bare, input="".join(chunks))


def test_a_thousand_flows_and_ten_thousand_commits_are_quick(remote: Remote, make_source: MakeSource) -> None:
    _fast_import(remote.bare, files=1_000, commits=10_000)
    source = make_source(remote.url)
    timings: dict[str, float] = {}

    def timed(label: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        timings[label] = time.perf_counter() - started
        return result

    refs = timed("clone", lambda: fetch(source))
    blobs = timed("list 1,000 files", lambda: source.list_files("main", "flows"))
    contents = timed("read 1,000 blobs", lambda: [source.read_blob(b, max_bytes=1_000) for b in blobs.values()])
    oldest = timed("rev-parse", lambda: source.commits_between(None, "main~9999")[0])
    recent = timed("commits_between 10,000 -> 100", lambda: source.commits_between(oldest.sha, refs.branches["main"]))

    assert len(blobs) == 1_000 and contents[999] == b'{"flow": 999}'
    assert [c.summary for c in recent] == [f"commit {n}" for n in range(9_900, 10_000)]
    assert timings["list 1,000 files"] + timings["read 1,000 blobs"] < 5
    assert timings["commits_between 10,000 -> 100"] < 2

"""Real git repositories for tests: a bare "origin" and a working clone that commits and pushes, as users do.

Everything runs the ``git`` command line with the machine's global and system config switched off, a fixed identity
and a fixed clock (the n-th commit is made at ``EPOCH + 60 * n``), so commit shas are the same on every run.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = 1_700_000_000  # unix time of the clock before the first commit; each commit advances it by a minute


def git(*args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None) -> str:
    """Run git with no user or system config; returns stdout without the trailing newline, raises on failure."""
    isolated = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Ada Lovelace",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada Lovelace",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
        **(env or {}),
    }
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=isolated,
        input=input,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise AssertionError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.rstrip("\n")


@dataclass
class Remote:
    """A bare repository ``origin.git`` (what a server fetches) and a working clone ``work`` pushing to it."""

    bare: Path
    work: Path
    _clock: int = field(default=EPOCH, repr=False)

    @classmethod
    def create(cls, tmp_path: Path) -> Remote:
        """An empty ``tmp_path/origin.git`` and its clone ``tmp_path/work`` on branch ``main``."""
        bare, work = tmp_path / "origin.git", tmp_path / "work"
        git("init", "--bare", "--quiet", str(bare), cwd=tmp_path)
        git("clone", "--quiet", str(bare), str(work), cwd=tmp_path)
        return cls(bare, work)

    @property
    def url(self) -> str:
        """The bare repository as a plain local path."""
        return str(self.bare)

    @property
    def file_url(self) -> str:
        """The bare repository as a ``file://`` URL."""
        return self.bare.as_uri()

    def git(self, *args: str, input: str | None = None) -> str:
        """Run git in the working clone, dating whatever it commits or tags by the fixed clock."""
        when = f"@{self._clock} +0000"
        return git(*args, cwd=self.work, input=input, env={"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when})

    def sha(self, rev: str = "HEAD") -> str:
        """The full sha of ``rev`` (peeled to a commit) in the working clone."""
        return self.git("rev-parse", f"{rev}^{{commit}}")

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        """Write (or, for None, delete) files under the working tree, commit them all and return the new sha."""
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        self._clock += 60
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.sha()

    def push(self) -> None:
        """Push the current branch to origin."""
        self.git("push", "--quiet", "origin", "HEAD")

    def publish(self, files: dict[str, str | None], message: str = "change") -> str:
        """Commit ``files`` (as ``commit``) and push the branch, as a merge does; returns the new sha."""
        sha = self.commit(files, message)
        self.push()
        return sha

    def tag(self, name: str, rev: str = "HEAD", *, annotated: bool = False) -> str:
        """Create or move (force) a tag locally; returns the commit it points at. Push it with ``push_tags``."""
        self.git("tag", "--force", *(["-a", "-m", f"release {name}"] if annotated else []), name, rev)
        return self.sha(name)

    def push_tags(self, *, force: bool = True) -> None:
        """Push every local tag; ``force`` replaces tags that moved."""
        self.git("push", "--quiet", "--tags", *(["--force"] if force else []), "origin")

    def delete_tag(self, name: str) -> None:
        """Delete a tag locally and on origin."""
        self.git("tag", "--delete", name)
        self.git("push", "--quiet", "origin", f":refs/tags/{name}")

    def revert(self, sha: str) -> str:
        """Commit the inverse of ``sha`` (``git revert``) and return the new sha; push it with ``push``."""
        self._clock += 60
        self.git("revert", "--no-edit", sha)
        return self.sha()

    def force_push_reset(self, rev: str) -> str:
        """Reset the current branch to ``rev`` and force-push it, rewriting origin's history; returns the new sha."""
        self.git("reset", "--quiet", "--hard", rev)
        self.git("push", "--quiet", "--force", "origin", "HEAD")
        return self.sha()

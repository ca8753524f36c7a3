"""WorkingTree: a local checkout's files as a Retriever reads them in CI (`gitops-flow validate` and `test`).

The root is the Git working tree that holds the flow file (the nearest folder up with ``.git``), or, outside Git,
the folder above the flows folder, as the server sees a repository. Paths are listed from that root; a symlink is
followed only where its target stays inside the root (so ``flows -> gitops_flow/examples`` is read, and a link to
``/etc`` is not); hidden folders (``.git``, ``.venv``) are not listed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gitops_flow.components.documents import readable

MAX_LISTED = 200_000  # files listed of one working tree, at most (as GitSource.tree_files)
_SKIPPED = frozenset({"node_modules", "__pycache__"})


def root_of(flow_file: Path) -> Path:
    """The repository root a flow file's Retriever paths are relative to (the module's docstring)."""
    start = flow_file.absolute().parent
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start.parent


class WorkingTree:
    """The readable documents under ``root`` (a RepoFiles): listed once, by path; nothing outside ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self._real = self.root.resolve()
        self._files: dict[str, str] | None = None

    def files(self) -> Mapping[str, str]:
        if self._files is None:
            self._files = self._list()
        return self._files

    def read(self, path: str, *, max_bytes: int) -> bytes:
        if path not in self.files():
            raise KeyError(path)
        real = (self.root / path).resolve()
        if not real.is_relative_to(self._real) or not real.is_file():
            raise KeyError(path)
        with real.open("rb") as handle:
            return handle.read(max_bytes + 1)

    def _list(self) -> dict[str, str]:
        found: dict[str, str] = {}
        seen: set[Path] = set()
        for folder, dirs, names in os.walk(self.root, followlinks=True):
            here = Path(folder)
            real = here.resolve()
            if not real.is_relative_to(self._real) or real in seen:
                dirs[:] = []
                continue
            seen.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED)
            for name in sorted(names):
                file = here / name
                if not readable(name) or not file.resolve().is_relative_to(self._real):
                    continue
                stat = file.stat()
                found[file.relative_to(self.root).as_posix()] = f"{stat.st_size}:{stat.st_mtime_ns}"
                if len(found) >= MAX_LISTED:
                    return found
        return found

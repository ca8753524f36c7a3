"""Corpus: the documents a commit's flows read (their Retrievers' ``paths``), as the builder sees them.

A flow's build depends on its file and on the blobs of the documents its Retrievers match at the commit: the
``reads`` of a flow file are its Retrievers' globs (read from the document itself, so nothing is built to know
them), and a flow's ``fingerprint`` at a commit names those documents' paths and blobs. Two commits whose flow file
and matched documents are the same build the same (a revert is instant); a commit that changes a document changes
only the flows whose globs match it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from gitops_flow.components.knowledge import matching, path_problem
from gitops_flow.delivery.source import GitSource
from gitops_flow.exceptions import SourceError
from gitops_flow.langflow import convert as langflow

RETRIEVER = "Retriever"


class CommitFiles:
    """The regular files of one commit's tree (a RepoFiles): listed once, read as blobs; nothing else is reachable."""

    def __init__(self, source: GitSource, tree: Mapping[str, str]) -> None:
        self.source = source
        self._tree = tree

    def files(self) -> Mapping[str, str]:
        return self._tree

    def read(self, path: str, *, max_bytes: int) -> bytes:
        blob = self._tree[path]  # KeyError: not a file of this commit
        try:
            return self.source.read_blob(blob, max_bytes=max_bytes)
        except SourceError as exc:
            raise KeyError(path) from exc


def reads(raw: bytes, name: str = "flow") -> tuple[str, ...]:
    """The globs the Retriever nodes of a flow document read (only those that stay in the repository); () for a
    document with none, or one that is not a flow document (validation says why). A LangFlow export is read as the
    document it converts to, under the flow's ``name`` (its Retrievers read ``knowledge/<name>/``)."""
    try:
        data: Any = orjson.loads(raw.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return ()
    if isinstance(data, dict) and langflow.is_export(data):
        data = langflow.convert(data, name=name).document
    nodes = data.get("nodes") if isinstance(data, dict) else None
    found: list[str] = []
    for node in nodes if isinstance(nodes, list) else ():
        if not isinstance(node, dict) or node.get("component") != RETRIEVER:
            continue
        params = node.get("params")
        paths = params.get("paths") if isinstance(params, dict) else None
        for pattern in paths if isinstance(paths, list) else ():
            if isinstance(pattern, str) and path_problem(pattern) is None:
                found.append(pattern)
    return tuple(dict.fromkeys(found))


def fingerprint(tree: Mapping[str, str], globs: tuple[str, ...]) -> str:
    """The documents ``globs`` match in ``tree``, as one hash of their paths and blobs; "" when ``globs`` is
    empty (a flow that reads no documents builds from its file alone)."""
    if not globs:
        return ""
    matched = matching(tree, globs)
    lines = [*globs, "", *(f"{path} {blob}" for path, blob in matched.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_id(blob: str, knowledge: str) -> str:
    """What names a flow's build: its file's blob, and the fingerprint of the documents it reads when it reads
    some (``blob:fingerprint``); the response cache, yanks and the console compare builds by it."""
    return f"{blob}:{knowledge[:24]}" if knowledge else blob


def file_blob(build: str) -> str:
    """The flow file's blob of a build id."""
    return build.partition(":")[0]

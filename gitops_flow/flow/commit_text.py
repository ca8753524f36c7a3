"""Commit text: what a commit's author writes (its message, name and email) and ref names, cut to bounds at ingest.

Everything the server shows about a commit (``/versions``, ``/history``, the console, logs, notifications, commit
statuses) comes from what is kept here, so a push of multi-MiB messages or names costs each answer a few KiB. A cut
is marked: ``…`` ends a cut subject line or name, and a line saying how long the message was ends a cut message.
"""

from __future__ import annotations

MAX_SUBJECT_BYTES = 256  # a message's first line, the one lists and logs show
MAX_MESSAGE_BYTES = 4096  # the whole message kept, its subject line and the cut's mark included
MAX_NAME_BYTES = 256  # an author's name, an author's email
MAX_REF_NAME = 200  # characters of a branch or tag name; a longer ref is ignored (a routing file names at most this)

ELLIPSIS = "…"


def cut(text: str, max_bytes: int, mark: str = ELLIPSIS) -> str:
    """``text`` when its UTF-8 fits in ``max_bytes``; else its start, never split inside a character, then ``mark``,
    within ``max_bytes`` together."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    room = max(max_bytes - len(mark.encode()), 0)
    return data[:room].decode("utf-8", "ignore") + mark


def message(text: str) -> str:
    """A commit message as kept: the subject line cut to MAX_SUBJECT_BYTES and the whole to MAX_MESSAGE_BYTES, with
    a last line saying how many bytes the message had when it was cut. Cutting a kept message again changes
    nothing."""
    size = len(text.encode())
    if size <= MAX_MESSAGE_BYTES and len(text.partition("\n")[0].encode()) <= MAX_SUBJECT_BYTES:
        return text
    subject, _, body = text.partition("\n")
    note = f"[… cut by gitops-flow: the message has {size:,} bytes]"
    subject = cut(subject, MAX_SUBJECT_BYTES)
    room = MAX_MESSAGE_BYTES - len(subject.encode()) - len(note.encode()) - 2  # the two line feeds
    body = cut(body, room, "").rstrip() if body else ""
    return "\n".join(part for part in (subject, body, note) if part)


def name(text: str) -> str:
    """An author's name or email as kept: at most MAX_NAME_BYTES, ``…`` ending a cut one."""
    return cut(text, MAX_NAME_BYTES)


def ref_kept(ref: str) -> bool:
    """Whether a branch or tag name is short enough to be kept, served and shown (MAX_REF_NAME characters)."""
    return len(ref) <= MAX_REF_NAME

"""What a commit's author writes is cut at ingest (issue 21, finding 8): ten 8 MiB commit messages made `/versions`
84 MB per anonymous request, and 20 unread requests took the server from 227 MB to 1.8 GB. Now a message is kept
to 4 KiB (a 256-byte subject line), names and emails to 256 bytes, and refs with names past 200 characters are
ignored, against a real `serve` following a real remote."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from gitops_flow.flow import commit_text as committext
from tests.gitrepo import Remote
from tests.process import ADMIN, ServeProcess, serve_process
from tests.served import echo_flow
from tests.test_http_bounds import head, port

MIB = 1024 * 1024
LONG_REF = "/".join(["r" * 200] * 10)  # 2,009 characters: git takes it (each path part is under 255)


def rss(server: ServeProcess) -> int:
    """The server's resident memory in bytes."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def huge_commit(remote: Remote, n: int) -> tuple[str, int]:
    """An empty commit with a 2 MiB message (a 10 KB subject line, then the body) and a 60 KB author name; its
    sha and its message's size."""
    message = f"subject {n} " + "s" * 10_000 + "\n\n" + ("body line of a huge message\n" * (2 * MIB // 28))
    author = f"{'A' * 60_000} <{'e' * 40_000}@example.com>"  # one argument: at most 128 KiB
    remote.git("commit", "--quiet", "--allow-empty", f"--author={author}", "-F", "-", input=message)
    return remote.sha(), len(message.strip().encode())


def test_huge_messages_names_and_ref_names_stay_out_of_every_answer(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()}, "echo")
    remote.push()
    with serve_process(remote, tmp_path) as server:
        before = rss(server)
        shas = [huge_commit(remote, n) for n in range(4)]
        remote.push()
        remote.tag("stable")
        remote.tag(LONG_REF)
        remote.push_tags()
        assert server.reconcile()["changed"]
        server.wait_ready()
        versions = server.client.get("/versions", params={"limit": 500})
        admin_versions = server.client.get("/versions", params={"limit": 500}, headers=ADMIN)
        history = server.client.get("/history", headers=ADMIN)
        ready = server.client.get("/readyz")
        # 20 requests for every version whose answers are never read
        held = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port(server)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(head("/versions?limit=500", "GET", f"Authorization: {ADMIN['Authorization']}"))
            held.append(sock)
        time.sleep(1.0)
        grown = rss(server) - before
        for sock in held:
            sock.close()
        log = server.log_text()
    assert versions.status_code == admin_versions.status_code == history.status_code == 200
    assert len(versions.content) < 64 * 1024 and len(admin_versions.content) < 64 * 1024, len(admin_versions.content)
    listed = {v["sha"]: v for v in admin_versions.json()["versions"]}
    for sha, size in shas:
        kept = listed[sha]
        assert len(kept["message"].encode()) <= committext.MAX_MESSAGE_BYTES
        assert kept["message"].splitlines()[0].endswith("…")
        assert kept["message"].endswith(f"[… cut by gitops-flow: the message has {size:,} bytes]")
        assert kept["author"] == "A" * (committext.MAX_NAME_BYTES - 3) + "…"
        assert len(kept["email"].encode()) <= committext.MAX_NAME_BYTES
    assert len(history.content) < 64 * 1024
    assert LONG_REF not in history.text and "r" * 200 not in log
    events = history.json()["events"]
    assert [e["ref"] for e in events if e["event"] == "tag-moved"] == ["stable"]  # and not the long one
    assert {e["message"] for e in events if e["event"] == "deployed"} == {"echo", f"subject 3 {'s' * 243}…"}
    assert "ignored 1 refs" in log and "longer than 200 characters" in log
    assert ready.status_code == 200 and len(ready.content) < 16 * 1024
    assert grown < 64 * MIB, grown  # 4 × 2 MiB messages: held, or answered 20 times over, this would be far more


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("fix: a bug\n\nbecause", "fix: a bug\n\nbecause"),
        ("é" * 200, "é" * 200),  # 400 bytes: a long body is fine while the subject line fits
    ],
    ids=["short", "fits"],
)
def test_a_message_within_bounds_is_kept_as_it_is(text: str, kept: str) -> None:
    if len(text.encode()) > committext.MAX_SUBJECT_BYTES:
        text = "subject\n" + text
        kept = "subject\n" + kept
    assert committext.message(text) == kept


def test_a_cut_message_is_marked_fits_its_bound_and_is_not_cut_again() -> None:
    text = "ü" * 1000 + "\n\n" + "line\n" * 100_000
    kept = committext.message(text)
    assert len(kept.encode()) <= committext.MAX_MESSAGE_BYTES
    subject = kept.splitlines()[0]
    assert subject.endswith("…") and len(subject.encode()) <= committext.MAX_SUBJECT_BYTES
    assert kept.endswith(f"[… cut by gitops-flow: the message has {len(text.encode()):,} bytes]")
    assert committext.message(kept) == kept  # a record saved cut reads back the same


def test_an_author_name_is_cut_on_a_character_boundary() -> None:
    kept = committext.name("é" * 500)
    assert kept == "é" * 126 + "…" and len(kept.encode()) <= committext.MAX_NAME_BYTES
    assert committext.name("Ada Lovelace") == "Ada Lovelace"


def test_records_an_earlier_release_kept_uncut_are_cut_when_read() -> None:
    from gitops_flow.delivery.versions import Version

    record = {"sha": "a" * 40, "author": "A" * 5000, "email": "e" * 5000, "message": "m" * MIB, "status": "retired"}
    version = Version.from_record(record)
    assert len(version.message.encode()) <= committext.MAX_MESSAGE_BYTES
    assert len(version.author.encode()) <= committext.MAX_NAME_BYTES
    assert len(version.email.encode()) <= committext.MAX_NAME_BYTES

"""A Git server over smart HTTP for tests: `git http-backend` behind Basic auth, on a loopback port, in a thread.

What a hosted Git (GitHub, GitLab) is to a server: a URL that needs a credential, answering 401 without it.
"""

from __future__ import annotations

import base64
import hmac
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class GitHttp:
    """The server's base URL (no credential), what it was asked for, and the credential it accepts."""

    base: str
    username: str
    password: str
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path and query, Authorization header)

    def url(self, repository: str, *, userinfo: str | None = None) -> str:
        """``http://[userinfo@]127.0.0.1:PORT/<repository>``."""
        parts = urlsplit(self.base)
        netloc = f"{userinfo}@{parts.netloc}" if userinfo else parts.netloc
        return f"{parts.scheme}://{netloc}/{repository}"


@contextmanager
def git_http(root: Path, *, username: str, password: str) -> Iterator[GitHttp]:
    """Serve the bare repositories under ``root`` read-only; every request needs ``username:password`` (the
    credential the yielded GitHttp holds at that moment: a test can change it, as a token is rotated)."""
    state = GitHttp("", username, password)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            given = self.headers.get("Authorization")
            expected = "Basic " + base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
            state.requests.append((self.path, given))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            env = {
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": state.username,
                "REMOTE_ADDR": "127.0.0.1",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=True)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

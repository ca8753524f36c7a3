"""A stand-in for OpenAI's chat completions API on loopback, for tests whose flows call a real ``ChatModel``
(langchain-openai's ChatOpenAI, through the openai SDK): ``POST /v1/chat/completions``, answered whole or streamed as
server-sent events, with the usage in the last chunk when the request asks for it (``stream_options``), as OpenAI's
API does. It keeps what it billed for each call.

Billing is a provider's: the prompt is its messages' tokens plus 4 a message and 3 for the answer's priming (OpenAI's
documented counting), a token being a run of up to 4 letters or digits, or one other sign. The answer is ``max_tokens``
tokens (a model that writes all it may), or ``answer_tokens`` when the request sets no cap, one token a chunk, each
after ``token_delay`` seconds. A stream whose client goes away is billed the prompt and the tokens sent until then.

It can also fail as a provider does (``Failing``): answer every call with a status and OpenAI's error body (a 5xx,
a 429 with ``retry-after``), wait before answering (``delay``: a model's ``timeout`` runs out), refuse a model it
does not serve (404 ``model_not_found``, as OpenAI does), or stop listening altogether (``stop``); ``hold`` keeps
every call waiting until the test lets it go (an ordering, not a timing).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = re.compile(r"\w{1,4}|[^\w\s]")


def model_flow(
    name: str,
    base_url: str | None,
    model: str = "openai:gpt-4o-mini",
    *,
    document: Mapping[str, Any] | None = None,
    **params: Any,
) -> str:
    """prompt -> ChatModel -> parser, as a flow file's text: ``model`` at ``base_url`` with OpenAI's key (the stand-in),
    or at its provider's own endpoint with the key it reads itself (None). ``params`` are the model's others (a None
    leaves one out); ``document`` adds keys to the flow document (``tweakable``, ...)."""
    endpoint = {"base_url": base_url, "api_key": {"$env": "OPENAI_API_KEY"}} if base_url is not None else {}
    llm = {key: value for key, value in {"model": model, **endpoint, **params}.items() if value is not None}
    doc = {
        "version": 1,
        "name": name,
        "nodes": [
            {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}},
            {"id": "llm", "component": "ChatModel", "params": llm},
            {"id": "answer", "component": "StrOutputParser"},
        ],
        "edges": [{"source": "prompt", "target": "llm"}, {"source": "llm", "target": "answer"}],
        **(document or {}),
    }
    return json.dumps(doc, indent=2)


def tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """What a chat completion's prompt is billed: each message's content and role, 4 a message, 3 for the reply."""
    total = 3
    for message in messages:
        content = message.get("content") or ""
        text = content if isinstance(content, str) else " ".join(str(part.get("text", "")) for part in content)
        total += 4 + tokens(text) + tokens(str(message.get("role", "")))
    return total


@dataclass(frozen=True)
class Failing:
    """How the stand-in fails every call for now: ``status`` with OpenAI's error body (``code``) and ``headers``."""

    status: int
    code: str = "server_error"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Billed:
    """One call as the provider bills it; ``finished`` False when its client left before its end."""

    prompt_tokens: int
    completion_tokens: int
    stream: bool
    finished: bool

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class OpenAIStandIn:
    """The running stand-in: its base URL (what a model's ``base_url`` names) and what it billed."""

    def __init__(self, server: ThreadingHTTPServer, token_delay: float, answer_tokens: int) -> None:
        self._server = server
        self.token_delay = token_delay
        self.answer_tokens = answer_tokens
        self.reply: str | None = None  # a whole (not streamed) answer's text instead of its tokens (an eval's judge)
        self.prompts: list[str] = []  # the last message of each whole call
        self.billed: list[Billed] = []
        self.started = 0  # calls begun (billed or not yet)
        self.received = 0  # requests received, failed ones included
        self.failing: Failing | None = None  # every call fails so while set
        self.delay = 0.0  # seconds every call waits before it is answered
        self.hold: threading.Event | None = None  # while set to an unset event, every call waits for it (30 s at most)
        self.models: frozenset[str] | None = None  # the models served (None: any); another is 404 model_not_found
        self.requests: list[dict[str, Any]] = []  # every request's body, in order
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def bill(self, billed: Billed) -> None:
        with self._lock:
            self.billed.append(billed)

    def calls(self) -> list[Billed]:
        with self._lock:
            return list(self.billed)

    def begin(self) -> None:
        with self._lock:
            self.started += 1

    def receive(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.received += 1
            self.requests.append(body)

    def stop(self) -> None:
        """Stop listening: a call then finds nothing at the base URL (connection refused), as a provider that is
        down."""
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, found: Callable[[list[Billed]], bool], timeout: float = 30.0, what: str = "calls") -> None:
        """Wait until ``found`` holds for what was billed (a deadline for a test that would hang, not a timing)."""
        deadline = time.monotonic() + timeout
        while not found(self.calls()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the stand-in never billed {what}: {self.calls()}")
            time.sleep(0.05)


@contextmanager
def openai_standin(*, token_delay: float = 0.0, answer_tokens: int = 20) -> Iterator[OpenAIStandIn]:
    holder: list[OpenAIStandIn] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            standin = holder[0]
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                return
            standin.receive(body)
            hold = standin.hold
            if hold is not None:
                hold.wait(30.0)
            if standin.delay:
                time.sleep(standin.delay)
            failing = standin.failing
            if failing is not None:
                error = {"message": "the stand-in fails", "type": "server_error", "code": failing.code}
                self._json(failing.status, {"error": error}, dict(failing.headers))
                return
            if standin.models is not None and body.get("model") not in standin.models:
                message = f"The model `{body.get('model')}` does not exist or you do not have access to it."
                error = {"message": message, "type": "invalid_request_error", "code": "model_not_found"}
                self._json(404, {"error": error})
                return
            standin.begin()
            prompt = prompt_tokens(body.get("messages") or [])
            cap = body.get("max_completion_tokens") or body.get("max_tokens")
            count = int(cap) if cap else standin.answer_tokens
            if body.get("stream"):
                self._stream(standin, body, prompt, count)
                return
            time.sleep(standin.token_delay * count)
            standin.bill(Billed(prompt, count, stream=False, finished=True))
            messages = body.get("messages") or [{}]
            standin.prompts.append(str(messages[-1].get("content") or ""))
            self._json(200, _completion(body, count, prompt, standin.reply))

        def _stream(self, standin: OpenAIStandIn, body: dict[str, Any], prompt: int, count: int) -> None:
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            sent = 0
            try:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self._event(_chunk(body, {"role": "assistant", "content": ""}, None, usage))
                for _ in range(count):
                    time.sleep(standin.token_delay)
                    self._event(_chunk(body, {"content": " tok"}, None, usage))
                    sent += 1
                self._event(_chunk(body, {}, "length" if count else "stop", usage))
                if usage:
                    final = {**_chunk(body, {}, None, False), "choices": [], "usage": _usage(prompt, count)}
                    self._event(final)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client left: billed what was made until then
                standin.bill(Billed(prompt, sent, stream=True, finished=False))
                return
            standin.bill(Billed(prompt, count, stream=True, finished=True))

        def _event(self, data: dict[str, Any]) -> None:
            self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
            self.wfile.flush()

        def _json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(OpenAIStandIn(server, token_delay, answer_tokens))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()  # a second shutdown (after stop) returns at once
        server.server_close()
        thread.join(timeout=10)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(body: dict[str, Any], count: int, prompt: int, reply: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "gpt-4o-mini"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " tok" * count if reply is None else reply},
                "finish_reason": "length" if count else "stop",
            }
        ],
        "usage": _usage(prompt, count),
    }


def _chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None, usage: bool) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "gpt-4o-mini"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = None  # OpenAI's chunks carry a null usage until the last one, when it is asked for
    return chunk

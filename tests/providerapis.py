"""Loopback stand-ins of two model providers' HTTP APIs, speaking their real wire formats: OpenAI's chat completions
(``POST /v1/chat/completions``, SSE ``data:`` chunks ending in ``[DONE]`` when streaming, the usage chunk when
``stream_options.include_usage`` asks) and Anthropic's messages (``POST /v1/messages``, named SSE events from
``message_start`` to ``message_stop``). The answer is a function of the request, so two calls with the same
messages get the same answer: the words of the last message's text, echoed, one word a chunk."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREATED = 1_700_000_000


def _last_text(messages: list[dict[str, Any]]) -> str:
    content = messages[-1].get("content", "") if messages else ""
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def answer_words(messages: list[dict[str, Any]]) -> list[str]:
    """The answer's chunks: "echo:" then each word of the last message, each chunk but the first led by a space."""
    words = ["echo:", *_last_text(messages).split()]
    return [words[0], *(" " + w for w in words[1:])]


def _openai(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    words = answer_words(body.get("messages", []))
    model = body.get("model", "gpt-4o-mini")
    usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
    head = {"id": "chatcmpl-standin", "created": CREATED, "model": model, "system_fingerprint": "fp_standin"}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(words), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}, []

    def chunk(delta: dict[str, Any], finish: str | None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return json.dumps({**head, "object": "chat.completion.chunk", "choices": [choice]})

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": w}, None) for w in words]
    events.append(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(json.dumps({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    return None, [f"data: {e}\n\n" for e in events] + ["data: [DONE]\n\n"]


def _anthropic(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    words = answer_words(body.get("messages", []))
    model = body.get("model", "claude-standin")
    message = {"id": "msg_standin", "type": "message", "role": "assistant", "model": model}
    if not body.get("stream"):
        content = [{"type": "text", "text": "".join(words)}]
        usage = {"input_tokens": 7, "output_tokens": len(words)}
        return {**message, "content": content, "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}, []
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 7, "output_tokens": 1},
                }
            },
        ),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
        *(("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words),
        ("content_block_stop", {"index": 0}),
        (
            "message_delta",
            {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": len(words)}},
        ),
        ("message_stop", {}),
    ]
    return None, [f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n" for name, data in events]


ROUTES = {"/v1/chat/completions": _openai, "/v1/messages": _anthropic}


class ProviderAPIs:
    """The running stand-ins: ``base`` is ``http://127.0.0.1:PORT``; ``requests`` lists (path, body) as received."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.server_address[1]}"
        self.requests: list[tuple[str, dict[str, Any]]] = []


@contextmanager
def provider_apis() -> Iterator[ProviderAPIs]:
    """Both stand-ins on one loopback port, for the length of the block."""
    apis: ProviderAPIs

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            route = ROUTES.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            apis.requests.append((self.path, body))
            whole, events = route(body)
            if whole is not None:
                data = json.dumps(whole).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            for event in events:
                self.wfile.write(event.encode())
                self.wfile.flush()
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    apis = ProviderAPIs(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield apis
    finally:
        server.shutdown()
        server.server_close()

"""ASGI applications the serving benchmarks start in their own uvicorn processes, as factories.

    python -m uvicorn --factory --app-dir benchmarks _apps:gitops_flow_app ...

Each factory reads its configuration from BENCH_* environment variables (set by the benchmark that starts the
process), so one module serves every variant:

- ``gitops_flow_app``: gitops-flow's ``create_app(Settings(...))`` following BENCH_REPO (a local bare repository),
  data in BENCH_DATA_DIR, state BENCH_STATE (default: SQLite in the data folder), poll interval BENCH_POLL
  (default 3600 s), keep_versions BENCH_KEEP (default: the server's), admin token BENCH_ADMIN_TOKEN (default: none),
  webhook secret BENCH_WEBHOOK_SECRET (default: none), canary guard tick BENCH_ANALYSIS_INTERVAL (default: 1 s);
- ``langserve_app``: LangServe's ``add_routes(FastAPI(), chain, path="/echo")``;
- ``bare_prompt_app``: the LangFlow export of benchmarks/serve_langflow.py by hand (its prompt, formatted);
- ``bare_app``: one Starlette route calling ``await chain.ainvoke(input)``, JSON in and out with orjson; and one
  streaming ``chain.astream(input)`` as server-sent events framed as LangServe's (``/echo/stream``).

The hand-built chain of the last two is ``PromptTemplate("Q: {question}") | GenericFakeChatModel | StrOutputParser``
answering BENCH_ANSWER, which is what the flow document ``echo_flow(answer=BENCH_ANSWER)`` of tests/served.py
builds to.

Two switches are for what-if runs only (benchmarks/serve_compare.py --gc-freeze, --variants gitops-minimal-config):
BENCH_GC_FREEZE=1 calls ``gc.collect(); gc.freeze()`` once the application is made, so that the objects of the
imports are left out of every later garbage collection; BENCH_MINIMAL_RUN_CONFIG=1 replaces gitops-flow's
``endpoints.run_config`` by one that passes only ``configurable`` to the flow (no metadata, run_id, run_name), to
measure what those cost.
"""

from __future__ import annotations

import gc
import os
from itertools import cycle
from pathlib import Path
from typing import Any

DEFAULT_ANSWER = "Hello from the fake model."


def _answer() -> str:
    return os.environ.get("BENCH_ANSWER", DEFAULT_ANSWER)


def _made(app: Any) -> Any:
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        gc.collect()
        gc.freeze()
    return app


def hand_chain(answer: str) -> Any:
    """prompt -> fake chat model -> parser, written directly in LangChain. With BENCH_TOKEN_LATENCY (seconds), the
    model is gitops-flow's FakeChatModel waiting that long before each token (what the flow's FakeChatModel node
    with ``token_latency_ms`` builds to), so every server streams from the same model."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import PromptTemplate

    model: Any = GenericFakeChatModel(messages=cycle([answer]))
    if os.environ.get("BENCH_TOKEN_LATENCY"):
        from gitops_flow.components.fake_model import FakeChatModel

        model = FakeChatModel(messages=cycle([answer]), token_latency=float(os.environ["BENCH_TOKEN_LATENCY"]))
    return PromptTemplate.from_template("Q: {question}") | model | StrOutputParser()


def gitops_flow_app() -> Any:
    from gitops_flow.app import create_app
    from gitops_flow.config import Settings

    values: dict[str, Any] = {
        "repo_url": os.environ["BENCH_REPO"],
        "data_dir": Path(os.environ["BENCH_DATA_DIR"]),
        "load_entry_points": False,
        "poll_interval": float(os.environ.get("BENCH_POLL", "3600")),
    }
    if os.environ.get("BENCH_STATE"):
        values["state"] = os.environ["BENCH_STATE"]
    if os.environ.get("BENCH_KEEP"):
        values["keep_versions"] = int(os.environ["BENCH_KEEP"])
    if os.environ.get("BENCH_ADMIN_TOKEN"):
        values["admin_token"] = os.environ["BENCH_ADMIN_TOKEN"]
    if os.environ.get("BENCH_WEBHOOK_SECRET"):
        values["webhook_secret"] = os.environ["BENCH_WEBHOOK_SECRET"]
    if os.environ.get("BENCH_CANARY_FALLBACK"):
        values["canary_fallback"] = os.environ["BENCH_CANARY_FALLBACK"] == "1"
    if os.environ.get("BENCH_ANALYSIS_INTERVAL"):
        values["analysis_interval"] = float(os.environ["BENCH_ANALYSIS_INTERVAL"])
    if os.environ.get("BENCH_MINIMAL_RUN_CONFIG") == "1":
        from gitops_flow.server import endpoints

        endpoints.run_config = lambda config, flow, choice, run_id: {"configurable": config.get("configurable", {})}
    return _made(create_app(Settings(**values)))


def langserve_app() -> Any:
    from fastapi import FastAPI
    from langserve import add_routes

    app = FastAPI()
    add_routes(app, hand_chain(_answer()), path="/echo")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return _made(app)


def bare_app() -> Any:
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    chain = hand_chain(_answer())

    async def invoke(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        output = await chain.ainvoke(payload["input"])
        return Response(orjson.dumps({"output": output}), media_type="application/json")

    async def stream(request: Request) -> Response:
        """Server-sent events as LangServe frames them: ``data`` per chunk, then ``end``."""
        payload = orjson.loads(await request.body())

        async def events() -> Any:
            async for chunk in chain.astream(payload["input"]):
                yield b"event: data\r\ndata: " + orjson.dumps(chunk) + b"\r\n\r\n"
            yield b"event: end\r\n\r\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    routes = [
        Route("/echo/invoke", invoke, methods=["POST"]),
        Route("/echo/stream", stream, methods=["POST"]),
        Route("/healthz", healthz),
    ]
    return _made(Starlette(routes=routes))


def bare_prompt_app() -> Any:
    """The LangFlow export's work by hand: ``POST /run`` with LangFlow's ``{"input_value"}``, the prompt
    ``Q: {question}`` formatted by LangChain's PromptTemplate, its text answered as JSON."""
    import orjson
    from langchain_core.prompts import PromptTemplate
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    prompt = PromptTemplate.from_template("Q: {question}")

    async def run(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        value = await prompt.ainvoke({"question": payload["input_value"]})
        return Response(orjson.dumps({"result": value.to_string()}), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return _made(Starlette(routes=[Route("/run", run, methods=["POST"]), Route("/healthz", healthz)]))

"""Several replicas as one service: two `gitops-flow serve` processes on loopback share one Redis (a key prefix of the
test's own) and follow one bare Git repository, as they would behind a load balancer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitops_flow.delivery.routing_table import sticky_point
from gitops_flow.githost import github_webhook as webhook
from gitops_flow.stores.redis import RedisStore
from tests.gitrepo import Remote
from tests.redisenv import RedisServer, RedisSpace, free_port
from tests.served import echo_flow, wait_until

SECRET = "replica-webhook-secret"
Q = {"question": "hi"}
PUSH = json.loads((Path(__file__).parent / "data" / "github-webhooks" / "push.json").read_text())


class Replica:
    """One `gitops-flow serve` process, as an operator starts it."""

    def __init__(self, name: str, remote: Remote, state: str, tmp_path: Path, poll: float = 3600.0) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "gitops_flow", "serve", "--repo", remote.url, "--port", str(self.port)]
        command += ["--state", state, "--data-dir", str(tmp_path / name), "--poll-interval", str(poll)]
        command += ["--workers", "1"]  # a replica of one process each: the workers are tests/test_workers.py's
        env = {**os.environ, "GITOPS_FLOW_WEBHOOK_SECRET": SECRET, "LANGSMITH_TRACING": "false"}
        self.log = tmp_path / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=15)
        wait_until(self._ready, timeout=30, what=f"replica {name} to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"replica {self.name} exited:\n{self.log.read_text()}")
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def ask(self, flow: str = "echo", **headers: str) -> httpx.Response:
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        return self.http.post(f"/flows/{flow}/invoke", json={"input": Q}, headers=sent)

    def served(self, flow: str = "echo", **headers: str) -> tuple[str, str, str | None]:
        response = self.ask(flow, **headers)
        assert response.status_code == 200, response.text
        body = response.json()
        return body["output"], body["metadata"]["flow_version"], body["metadata"]["ref"]

    def deliver_push(self, ref: str, before: str, after: str) -> None:
        body = json.dumps({**PUSH, "ref": ref, "before": before, "after": after, "deleted": False}).encode()
        headers = {
            "content-type": "application/json",
            "x-github-event": "push",
            "x-github-delivery": f"{self.name}-{time.monotonic_ns()}",
            "x-hub-signature-256": webhook.sign(SECRET.encode(), body),
        }
        response = self.http.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 202, response.text

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def replicas(remote: Remote, tmp_path: Path, redis_space: RedisSpace) -> Iterator[Callable[..., Replica]]:
    """Starts replicas sharing the test's Redis prefix; all are stopped after the test."""
    state = f"{redis_space.url}?prefix={redis_space.prefix}"
    with ExitStack() as stack:

        def start(name: str, **options: Any) -> Replica:
            replica = Replica(name, remote, options.pop("state", state), tmp_path, **options)
            stack.callback(replica.stop)
            return replica

        yield start


def routing(*targets: tuple[str, int], **extra: Any) -> str:
    return yaml.safe_dump({"routes": {"default": [{"ref": r, "weight": w} for r, w in targets]}, **extra})


def chat_flow() -> str:
    nodes = [
        {"id": "memory", "component": "ChatHistory", "params": {}},
        {
            "id": "prompt",
            "component": "ChatPromptTemplate",
            "params": {"messages": [["placeholder", "{history}"], ["human", "{question}"]]},
        },
    ]
    return json.dumps(
        {"version": 1, "name": "chat", "nodes": nodes, "edges": [{"source": "memory", "target": "prompt"}]}
    )


def test_a_conversation_continues_on_the_other_replica_on_its_version_with_its_history(
    remote: Remote, replicas: Callable[..., Replica]
) -> None:
    first = remote.publish({"flows/echo.json": echo_flow(answer="one"), "flows/chat.json": chat_flow()})
    a, b = replicas("a"), replicas("b")
    said = a.http.post(
        "/flows/chat/invoke", json={"input": {"question": "My name is Ada."}}, headers={"X-Flow-Session": "s1"}
    )
    assert said.status_code == 200 and said.headers["x-flow-version"] == first
    assert a.served(X_Flow_Session="s1")[1] == first

    second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
    a.deliver_push("refs/heads/main", first, second)
    wait_until(lambda: b.served()[1] == second, what="replica b to serve the new commit")

    again = b.http.post(
        "/flows/chat/invoke", json={"input": {"question": "Who am I?"}}, headers={"X-Flow-Session": "s1"}
    )
    assert again.status_code == 200, again.text
    assert again.headers["x-flow-version"] == first  # the conversation's version, although b serves `second`
    messages = [(m["type"], m["content"]) for m in again.json()["output"]["messages"]]
    assert messages[0] == ("human", "My name is Ada.")  # the turn replica a took, read from the shared history
    assert messages[-1] == ("human", "Who am I?")
    assert b.served(X_Flow_Session="s1") == ("one", first, None)  # echo's session too: no ref names `first` now


def test_a_webhook_to_one_replica_makes_the_other_serve_the_new_commit(
    remote: Remote, replicas: Callable[..., Replica]
) -> None:
    first = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    a, b = replicas("a"), replicas("b")  # neither polls during the test
    second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
    assert b.served()[1] == first
    a.deliver_push("refs/heads/main", first, second)
    wait_until(lambda: b.served()[1] == second, timeout=10, what="replica b to serve the new commit")
    trigger = next(e["trigger"] for e in b.http.get("/history").json()["events"] if e["sha"] == second)
    assert "webhook push refs/heads/main" in trigger  # recorded once, whichever replica got there first


def test_every_replica_routes_each_of_1000_users_to_the_same_ref(
    remote: Remote, replicas: Callable[..., Replica]
) -> None:
    stable = remote.commit(
        {"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": routing(("stable", 90), ("main", 10))}
    )
    remote.tag("stable", stable)
    canary = remote.publish({"flows/echo.json": echo_flow(answer="two")})
    remote.push_tags()
    a, b = replicas("a"), replicas("b")

    async def routes(replica: Replica) -> dict[str, tuple[str, str]]:
        async with httpx.AsyncClient(base_url=replica.url, timeout=15) as client:
            limit = asyncio.Semaphore(16)

            async def one(user: str) -> tuple[str, tuple[str, str]]:
                async with limit:
                    response = await client.post("/flows/echo/invoke", json={"input": Q}, headers={"X-Flow-User": user})
                body = response.json()
                return user, (body["metadata"]["ref"], body["metadata"]["flow_version"])

            return dict(await asyncio.gather(*(one(f"user-{n}") for n in range(1000))))

    on_a, on_b = asyncio.run(routes(a)), asyncio.run(routes(b))
    assert on_a == on_b
    shares = {ref: sum(1 for r, _ in on_a.values() if r == ref) for ref in ("stable", "main")}
    assert 850 <= shares["stable"] <= 950 and shares["stable"] + shares["main"] == 1000
    assert {sha for _, sha in on_a.values()} == {stable, canary}


def test_an_abort_decided_from_both_replicas_traffic_holds_on_both(
    remote: Remote, replicas: Callable[..., Replica]
) -> None:
    config = routing(("stable", 50), ("main", 50), analysis={"min_requests": 20, "max_error_rate": 0.2})
    stable = remote.commit({"flows/echo.json": echo_flow(answer='"one"'), "gitops-flow.yaml": config})
    remote.tag("stable", stable)
    failing = json.loads(echo_flow(answer="not json"))
    failing["nodes"][2]["component"] = "JsonOutputParser"  # every canary request fails while running
    bad = remote.publish({"flows/echo.json": json.dumps(failing)})
    remote.push_tags()
    a, b = replicas("a"), replicas("b")
    canary_users = [u for u in (f"user-{n}" for n in range(200)) if sticky_point("echo", u) >= 0.5][:24]
    # 12 failing canary requests on each replica: under min_requests alone, over it together; each is answered by
    # stable, which succeeds on the same input, so each counts against the canary
    for replica, users in ((a, canary_users[:12]), (b, canary_users[12:])):
        for user in users:
            response = replica.ask(X_Flow_User=user)
            assert (response.status_code, response.headers["x-flow-version"]) == (200, stable)

    def aborted() -> dict[str, Any] | None:
        events = a.http.get("/history").json()["events"]
        return next((e for e in events if e["event"] == "aborted"), None)

    wait_until(lambda: aborted() is not None, timeout=15, what="the abort")
    event = aborted()
    assert event is not None and (event["sha"], event["ref"], event["flow"]) == (bad, "main", "echo")
    # both replicas' traffic, judged together: one replica alone sent 12 (the abort may come before the last few)
    assert 12 < event["requests"] <= 24 and event["errors"] == event["requests"]

    def states(replica: Replica) -> list[tuple[str, str]]:
        return [(t["ref"], t["state"]) for t in replica.http.get("/flows").json()["flows"][0]["versions"]]

    for replica in (a, b):  # the abort holds on both (the other replica learns of it from the store)
        wait_until(lambda r=replica: states(r) == [("stable", "live"), ("main", "aborted")], what="the abort here")
        assert all(on_stable(replica, u) for u in canary_users)
    assert [e["event"] for e in b.http.get("/history").json()["events"]].count("aborted") == 1


def on_stable(replica: Replica, user: str) -> bool:
    response = replica.ask(X_Flow_User=user)
    return response.status_code == 200 and response.json()["metadata"]["ref"] == "stable"


def test_redis_going_away_and_coming_back_is_survived_without_a_restart(
    remote: Remote, replicas: Callable[..., Replica], redis_server: RedisServer
) -> None:
    sha = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    a = replicas("a", state=redis_server.url)
    assert a.served(X_Flow_Session="s1")[1] == sha
    redis_server.stop()
    refused = a.ask(X_Flow_Session="s2")  # a session needs the shared store: 503 at once, not a hang
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "store-unavailable"
    assert a.served()[1] == sha  # a request without a session needs nothing shared and is served
    ready = a.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["store"]["ok"] is False
    assert str(redis_server.port) not in ready.text  # the reason names the host: it is for the log, not a client
    assert f"not ready: Redis at redis://127.0.0.1:{redis_server.port}/0 could not" in a.log.read_text()
    redis_server.start()
    wait_until(lambda: a.http.get("/readyz").status_code == 200, what="readiness after Redis returns")
    assert a.served(X_Flow_Session="s2")[1] == sha


def test_a_replica_refuses_to_start_without_its_redis(remote: Remote, tmp_path: Path) -> None:
    remote.publish({"flows/echo.json": echo_flow()})
    done = subprocess.run(
        [sys.executable, "-m", "gitops_flow", "serve", "--repo", remote.url, "--state", "redis://127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "could not be reached" in done.stderr and "127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_shared_store_holds_what_a_replica_needs_after_another_is_killed(
    remote: Remote, replicas: Callable[..., Replica], redis_space: RedisSpace
) -> None:
    first = remote.publish({"flows/echo.json": echo_flow(answer="one")})
    a = replicas("a")
    assert a.served(X_Flow_Session="kept")[1] == first
    second = remote.publish({"flows/echo.json": echo_flow(answer="two")})
    a.deliver_push("refs/heads/main", first, second)
    a.process.kill()  # mid-deploy, perhaps: nothing in the store depends on it finishing
    a.process.wait()
    b = replicas("b")
    wait_until(lambda: b.served()[1] == second, what="replica b to serve the head")
    assert b.served(X_Flow_Session="kept") == ("one", first, None)

    async def shared() -> tuple[set[str], list[str]]:
        store = RedisStore.from_url(f"{redis_space.url}?prefix={redis_space.prefix}")
        await store.open()
        try:
            return await store.pinned_versions(), [e["event"] for _, e in await store.events(10)]
        finally:
            await store.close()

    pinned, events = asyncio.run(shared())
    assert first in pinned and events.count("deployed") == 2

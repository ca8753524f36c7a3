"""GitOps delivery measured: webhook to serving, a 90/10 split over sticky users, a canary's abort, and a promotion
and a rollback under load. Every server is a uvicorn process (uvloop, httptools, one worker, default SQLite state)
following a local bare repository written with the git command line; webhooks are GitHub's real ``push`` payload
(tests/data/github-webhooks) with its ref, before and after rewritten, signed as GitHub signs them.

1. webhook to serving: a repository of 1,000 flows; each round commits a change to one flow (its answer), pushes,
   then POSTs the push delivery and polls that flow's ``/invoke`` until the response names the new commit. Measured
   from just before the delivery is sent to that response (one clock, time.monotonic()). Polling every 30 minutes.
2. sticky split: ``gitops-flow.yaml`` routes ``stable`` 90, ``main`` 10; 10,000 users (``X-Flow-User``) each ask
   twice over 16 connections; the observed shares and whether any user changed ref.
3. canary abort: ``stable`` 50, ``main`` 50 with ``analysis`` (window 30 s, min_requests 20, max_error_rate 5 %),
   where ``main``'s flow fails at run time (a JSON parser fed a non-JSON answer). A failed canary request is
   answered by the primary (docs/delivery.md), so no client sees a failure: counted are the responses that were not
   200 (none expected) and those that ``main`` answered (none: it always fails). Load: 8 connections, a new random
   user per request. Measured from the first request to the ``aborted`` event's time (``/history``), whose figures
   say how many of the canary's requests failed; the guard ticks every second (the default).
4. promotion and rollback under load: ``stable`` 90, ``main`` 10; the load generator (benchmarks/_loadgen.py, 16
   connections) runs throughout while ``stable`` is moved to ``main``'s commit (``git tag -f`` and a forced push,
   then the tag's push delivery), and then ``main``'s commit is reverted (``git revert``, push, delivery). Counted:
   failed requests (non-200 or connection errors), responses whose answer is not their version's, and the time from
   each delivery until a request pinned to the ref gets the new commit (polled every 5 ms).

    python benchmarks/delivery.py                        # about 2 minutes
    python benchmarks/delivery.py --quick
    python benchmarks/delivery.py --json benchmarks/results/delivery.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from _machine import REPO, describe, machine, median, percentile, save
from _serving import Remote, Server, clean_env, echo_flow, loadgen_command

from gitops_flow.githost import github_webhook as webhook

SECRET = "bench-webhook-secret"


def new_remote(folder: Path) -> Remote:
    folder.mkdir(parents=True)
    return Remote.create(folder)


PUSH = json.loads((REPO / "tests" / "data" / "github-webhooks" / "push.json").read_text())
ZERO = "0" * 40


def start(remote: Remote, tmp: Path, label: str) -> Server:
    data = tmp / f"data-{label}"
    env = {"BENCH_REPO": remote.url, "BENCH_DATA_DIR": str(data), "BENCH_WEBHOOK_SECRET": SECRET}
    return Server(label, "gitops_flow_app", env, ready_path="/readyz").start(tmp)


def deliver(client: httpx.Client, ref: str, before: str, after: str) -> None:
    body = json.dumps({**PUSH, "ref": ref, "before": before, "after": after, "deleted": after == ZERO}).encode()
    headers = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": f"bench-{random.getrandbits(64):016x}",
        "x-hub-signature-256": webhook.sign(SECRET.encode(), body),
    }
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 202, response.text


def routing(*targets: tuple[str, int], **extra: Any) -> str:
    return yaml.safe_dump({"routes": {"default": [{"ref": r, "weight": w} for r, w in targets]}, **extra})


def failing_flow() -> str:
    doc = json.loads(echo_flow(answer="not json"))
    doc["nodes"][2]["component"] = "JsonOutputParser"
    return json.dumps(doc)


# -- 1. webhook to serving ----------------------------------------------------------------------------------------


def webhook_to_serving(tmp: Path, flows: int, rounds: int) -> dict[str, Any]:
    remote = new_remote(tmp / "wts")
    remote.commit({f"flows/f{n:04}.json": echo_flow(f"f{n:04}", answer="v0") for n in range(flows)}, "flows")
    remote.push()
    server = start(remote, tmp, "webhook-to-serving")
    times: list[float] = []
    try:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            for turn in range(rounds):
                name = f"f{turn % flows:04}"
                before = remote.sha()
                after = remote.commit({f"flows/{name}.json": echo_flow(name, answer=f"v{turn + 1}")}, f"change {name}")
                remote.push()
                sent = time.monotonic()
                deliver(client, "refs/heads/main", before, after)
                while True:
                    response = client.post(f"/flows/{name}/invoke", json={"input": {"question": "hi"}})
                    if response.headers.get("x-flow-version") == after:
                        times.append(time.monotonic() - sent)
                        break
                print(f"  round {turn + 1:3}: {name} served {1000 * times[-1]:6.1f} ms after the delivery", flush=True)
    finally:
        server.stop()
    return {
        "flows": flows,
        "rounds": rounds,
        "p50_ms": 1000 * median(times),
        "p99_ms": 1000 * percentile(times, 0.99),
        "min_ms": 1000 * min(times),
        "max_ms": 1000 * max(times),
    }


# -- 2. sticky split ----------------------------------------------------------------------------------------------


def sticky_split(tmp: Path, users: int) -> dict[str, Any]:
    remote = new_remote(tmp / "split")
    stable = remote.commit({"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": routing(("stable", 90))})
    remote.tag("stable", stable)
    remote.commit({"gitops-flow.yaml": routing(("stable", 90), ("main", 10))}, "canary")
    remote.push()
    remote.push_tags()
    server = start(remote, tmp, "sticky-split")

    async def ask_all() -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        queue = [f"user-{n}" for n in range(users)] * 2
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:

            async def worker() -> None:
                while queue:
                    user = queue.pop()
                    response = await client.post(
                        "/flows/echo/invoke", json={"input": {"question": "hi"}}, headers={"X-Flow-User": user}
                    )
                    assert response.status_code == 200, response.text
                    seen.setdefault(user, []).append(response.json()["metadata"]["ref"])

            await asyncio.gather(*(worker() for _ in range(16)))
        return seen

    try:
        started = time.monotonic()
        seen = asyncio.run(ask_all())
        seconds = time.monotonic() - started
    finally:
        server.stop()
    first = Counter(refs[0] for refs in seen.values())
    return {
        "users": users,
        "requests": 2 * users,
        "seconds": seconds,
        "stable_share": first["stable"] / users,
        "main_share": first["main"] / users,
        "users_who_changed_ref": sum(1 for refs in seen.values() if len(set(refs)) > 1),
    }


# -- 3. canary abort ----------------------------------------------------------------------------------------------


def canary_abort(tmp: Path) -> dict[str, Any]:
    remote = new_remote(tmp / "canary")
    analysis = {"window": "30s", "min_requests": 20, "max_error_rate": 0.05}
    config = routing(("stable", 50), ("main", 50), analysis=analysis)
    stable = remote.commit({"flows/echo.json": echo_flow(answer='"one"'), "gitops-flow.yaml": config}, "good")
    remote.tag("stable", stable)
    broken = remote.commit({"flows/echo.json": failing_flow()}, "break the parser")
    remote.push()
    remote.push_tags()
    server = start(remote, tmp, "canary-abort")
    statuses: Counter[int] = Counter()
    answered_by: Counter[str] = Counter()  # the commit each 200 came from (x-flow-version)

    async def load(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:

            async def worker() -> None:
                while time.monotonic() < deadline:
                    user = f"u{random.getrandbits(32)}"
                    response = await client.post(
                        "/flows/echo/invoke", json={"input": {"question": "hi"}}, headers={"X-Flow-User": user}
                    )
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        answered_by[response.headers["x-flow-version"]] += 1

            await asyncio.gather(*(worker() for _ in range(8)))

    started = time.time()
    try:
        asyncio.run(load(6.0))
        events = httpx.get(server.base + "/history").json()["events"]
    finally:
        server.stop()
    aborted = next(e for e in events if e["event"] == "aborted")
    return {
        "requests": sum(statuses.values()),
        "failed_responses": sum(n for status, n in statuses.items() if status != 200),
        "answered_by_the_canary": answered_by[broken],
        "first_request_to_abort_s": aborted["time"] - started,
        "abort_figures": {k: aborted[k] for k in ("requests", "errors", "error_rate", "reason")},
    }


# -- 4. promotion and rollback under load -------------------------------------------------------------------------


def promotion_and_rollback(tmp: Path) -> dict[str, Any]:
    remote = new_remote(tmp / "promote")
    config = routing(("stable", 90), ("main", 10))
    v1 = remote.commit({"flows/echo.json": echo_flow(answer="one"), "gitops-flow.yaml": config})
    remote.tag("stable", v1)
    v2 = remote.commit({"flows/echo.json": echo_flow(answer="two")})
    remote.push()
    remote.push_tags()
    server = start(remote, tmp, "promotion")
    out, stop = tmp / "promotion-load.json", tmp / "promotion-stop"
    command = loadgen_command([server.base + "/flows/echo/invoke"], 16, 0, out, stop_file=stop, track_versions=True)
    load = subprocess.Popen(command, env=clean_env())
    answers = {v1: "one", v2: "two"}
    try:
        with httpx.Client(base_url=server.base, timeout=10) as client:

            def served_by(ref: str) -> str:
                response = client.post(
                    "/flows/echo/invoke", json={"input": {"question": "hi"}}, headers={"X-Flow-Version": ref}
                )
                sha: str = response.headers["x-flow-version"]
                return sha

            def delivered(ref: str, before: str, after: str) -> float:
                """Deliver the push of ``ref`` and wait until a pin to it serves ``after``; the seconds taken."""
                sent = time.monotonic()
                deliver(client, ref, before, after)
                while served_by(ref.rpartition("/")[2]) != after:
                    time.sleep(0.005)
                return time.monotonic() - sent

            time.sleep(2.0)
            remote.tag("stable", v2)  # promote
            remote.push_tags()
            promoted = delivered("refs/tags/stable", v1, v2)
            time.sleep(2.0)
            v3 = remote.revert(v2)  # roll back
            answers[v3] = "one"
            remote.push()
            rolled_back = delivered("refs/heads/main", v2, v3)
            time.sleep(2.0)
    finally:
        stop.touch()
        load.wait(timeout=30)
        server.stop()
    figures = json.loads(out.read_text())
    wrong = sum(n for sha, outputs in figures["outputs"].items() for o, n in outputs.items() if o != answers.get(sha))
    return {
        "requests": figures["ok"] + figures["failed"],
        "failed_requests": figures["failed"],
        "wrong_answers": wrong,
        "promotion_delivery_to_serving_ms": 1000 * promoted,
        "revert_delivery_to_serving_ms": 1000 * rolled_back,
        "versions_served": sorted(figures["outputs"]),
        "requests_per_version": {sha[:12]: sum(o.values()) for sha, o in figures["outputs"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 flows, 5 rounds, 1,000 users")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args()
    info = machine()
    print("machine:", describe(info), flush=True)
    flows, rounds, users = (100, 5, 1_000) if args.quick else (1_000, 50, 10_000)
    results: dict[str, Any] = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="gitops-flow-delivery-") as name:
        tmp = Path(name)
        print(f"1. webhook to serving, {flows} flows, {rounds} rounds", flush=True)
        results["webhook_to_serving"] = webhook_to_serving(tmp, flows, rounds)
        print(f"2. sticky 90/10 split over {users:,} users", flush=True)
        results["sticky_split"] = sticky_split(tmp, users)
        print("3. canary abort", flush=True)
        results["canary_abort"] = canary_abort(tmp)
        print("4. promotion and rollback under load", flush=True)
        results["promotion_and_rollback"] = promotion_and_rollback(tmp)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    save(args.json, "delivery", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

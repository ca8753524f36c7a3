"""One flow, one blast radius, measured (issue 12): a broken flow among many changed ones, and a broken canary among
healthy ones. Every server is a uvicorn process (uvloop, httptools, one worker, default SQLite state) following a
local bare repository written with the git command line; webhooks are GitHub's real ``push`` payload, signed.

1. per-flow deploys: a repository of 1,000 flows. Each round commits a change to 10 flows and pushes it, then POSTs
   the push delivery and polls each changed flow's ``/invoke`` until it answers from the new commit; measured from
   just before the delivery to each flow's first answer from it. Side by side, interleaved round by round on one
   server: rounds where all 10 changes are good, and rounds where one of the 10 is broken (it needs a secret the
   server lacks). Counted for the broken rounds: flows of the 9 that went live, and whether the broken one kept
   answering from its last good version.
2. a broken canary among healthy ones: ``stable`` 50, ``main`` 50 with ``analysis``; three flows, of which ``main``
   breaks only ``alpha`` (every canary request of it fails while running). Load: 8 connections, a new random user
   per request, spread over the three flows, for a few seconds. Counted per flow: requests and failed requests (non-200
   answers) users saw; side by side, a server with the primary fallback (the default) and one without it
   (GITOPS_FLOW_CANARY_FALLBACK=false), and the time from the first canary request to alpha's abort.

    python benchmarks/blast_radius.py                    # about 2 minutes
    python benchmarks/blast_radius.py --quick
    python benchmarks/blast_radius.py --json benchmarks/results/blast_radius.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from _machine import describe, machine, median, percentile, save
from _serving import Remote, Server, echo_flow
from delivery import SECRET, deliver

from tests.served import needs_a_secret

Q = {"input": {"question": "hi"}}


def start(remote: Remote, tmp: Path, label: str, **env: str) -> Server:
    settings = {"BENCH_REPO": remote.url, "BENCH_DATA_DIR": str(tmp / f"data-{label}"), "BENCH_WEBHOOK_SECRET": SECRET}
    return Server(label, "gitops_flow_app", {**settings, **env}, ready_path="/readyz").start(tmp)


# -- 1. per-flow deploys ----------------------------------------------------------------------------------------------


def per_flow_deploys(tmp: Path, flows: int, rounds: int) -> dict[str, Any]:
    folder = tmp / "deploys"
    folder.mkdir()
    remote = Remote.create(folder)
    remote.commit({f"flows/f{n:04}.json": echo_flow(f"f{n:04}", answer="v0") for n in range(flows)}, "flows")
    remote.push()
    server = start(remote, tmp, "per-flow-deploys")
    times: dict[str, list[float]] = {"10 good": [], "9 good, 1 broken": []}
    kept, live = 0, 0
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            for turn in range(rounds):
                broken = turn % 2 == 1
                names = [f"f{(turn * 10 + k) % flows:04}" for k in range(10)]
                files = {f"flows/{n}.json": echo_flow(n, answer=f"v{turn + 1}") for n in names}
                if broken:
                    files[f"flows/{names[0]}.json"] = needs_a_secret(names[0])
                before_answers = {names[0]: client.post(f"/flows/{names[0]}/invoke", json=Q).json()["output"]}
                before = remote.sha()
                after = remote.commit(files, f"round {turn}")
                remote.push()
                sent = time.monotonic()
                deliver(client, "refs/heads/main", before, after)
                waiting = set(names[1:] if broken else names)
                while waiting:
                    for name in sorted(waiting):
                        response = client.post(f"/flows/{name}/invoke", json=Q)
                        if response.headers.get("x-flow-version") == after:
                            times["9 good, 1 broken" if broken else "10 good"].append(time.monotonic() - sent)
                            waiting.discard(name)
                            live += broken
                if broken:
                    response = client.post(f"/flows/{names[0]}/invoke", json=Q)
                    kept += response.status_code == 200 and response.json()["output"] == before_answers[names[0]]
                label = "9 good, 1 broken" if broken else "10 good"
                slowest = 1000 * max(times[label][-len(names) + broken :])
                print(
                    f"  round {turn + 1:3} ({label}): the last changed flow served after {slowest:6.1f} ms", flush=True
                )
    finally:
        server.stop()
    broken_rounds = rounds // 2
    return {
        "flows": flows,
        "rounds": rounds,
        "webhook_to_serving_ms": {
            label: {"p50": 1000 * median(t), "p99": 1000 * percentile(t, 0.99), "n": len(t)}
            for label, t in times.items()
        },
        "broken_rounds": broken_rounds,
        "changed_flows_live_in_broken_rounds": live,
        "broken_flow_kept_its_last_version": kept,
    }


# -- 2. a broken canary among healthy ones ----------------------------------------------------------------------------


async def load(base: str, seen: dict[str, Counter[int]], seconds: float) -> None:
    """8 connections for ``seconds``, each request a new random user, turn by turn over the flows of ``seen``."""
    deadline = time.monotonic() + seconds
    flows = list(seen)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def worker(index: int) -> None:
            turn = index
            while time.monotonic() < deadline:
                flow = flows[turn % len(flows)]
                turn += 1
                headers = {"X-Flow-User": f"u{random.getrandbits(32)}"}
                response = await client.post(f"/flows/{flow}/invoke", json=Q, headers=headers)
                seen[flow][response.status_code] += 1

        await asyncio.gather(*(worker(i) for i in range(8)))


def broken_canary(tmp: Path, seconds: float) -> dict[str, Any]:
    folder = tmp / "canary"
    folder.mkdir()
    remote = Remote.create(folder)
    analysis = {"window": "30s", "min_requests": 20, "max_error_rate": 0.05}
    routes = {
        "routes": {"default": [{"ref": "stable", "weight": 50}, {"ref": "main", "weight": 50}]},
        "analysis": analysis,
    }
    flows = {f"flows/{n}.json": echo_flow(n, answer=f"{n} stable") for n in ("alpha", "beta", "gamma")}
    stable = remote.commit({**flows, "gitops-flow.yaml": yaml.safe_dump(routes)}, "three flows")
    remote.tag("stable", stable)
    failing = json.loads(echo_flow("alpha", answer="not json"))
    failing["nodes"][2]["component"] = "JsonOutputParser"
    remote.commit(
        {
            "flows/alpha.json": json.dumps(failing),
            "flows/beta.json": echo_flow("beta", answer="beta 2"),
            "flows/gamma.json": echo_flow("gamma", answer="gamma 2"),
        },
        "alpha breaks",
    )
    remote.push()
    remote.push_tags()
    results = {}
    for label, fallback in (("with the primary fallback", "1"), ("without it", "0")):
        server = start(remote, tmp, f"canary-{fallback}", BENCH_CANARY_FALLBACK=fallback)
        seen: dict[str, Counter[int]] = {n: Counter() for n in ("alpha", "beta", "gamma")}
        began = time.time()

        try:
            asyncio.run(load(server.base, seen, seconds))
            events = httpx.get(server.base + "/history").json()["events"]
        finally:
            server.stop()
        aborted = [e for e in events if e["event"] == "aborted"]
        results[label] = {
            flow: {"requests": sum(c.values()), "failed": sum(n for s, n in c.items() if s != 200)}
            for flow, c in seen.items()
        }
        results[label]["aborted"] = [(e["flow"], e["ref"]) for e in aborted]
        results[label]["first_request_to_abort_s"] = aborted[0]["time"] - began if aborted else None
        print(f"  {label}: {results[label]}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 flows, 4 rounds, 2 s of load")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    info = machine()
    print(describe(info), flush=True)
    flows, rounds, seconds = (100, 4, 2.0) if args.quick else (1000, 20, 8.0)
    with tempfile.TemporaryDirectory(prefix="gf-blast-") as folder:
        tmp = Path(folder)
        print(f"1. per-flow deploys: {flows} flows, {rounds} rounds of 10 changed flows", flush=True)
        deploys = per_flow_deploys(tmp, flows, rounds)
        print(json.dumps(deploys, indent=2))
        print(f"2. a broken canary among healthy ones: {seconds:.0f} s of load on each server", flush=True)
        canary = broken_canary(tmp, seconds)
        print(json.dumps(canary, indent=2))
    save(args.json, "blast_radius", {"machine": info, "deploys": deploys, "canary": canary})
    return 0


if __name__ == "__main__":
    sys.exit(main())

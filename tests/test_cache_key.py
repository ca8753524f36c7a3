"""A property of the response cache's key (issue 21): two requests that could be answered differently never share an
entry, and two that cannot do share one (so the cache still serves more than one caller).

A seeded generator makes random requests and random changes to them: to the input (nested JSON, keys reordered), the
tweaks, the client's config (``configurable``, ``tags``, ``metadata``, ``run_name``, a ``/c/{config_hash}/``'s
merged in), the routing keys, the conversation's turns, the flow's blob and the cache's namespace. What the run can
see is written down here apart from the cache, as a plain projection of the request: the cache's key must be equal
exactly when the projections are.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from gitops_flow.components.base import Component
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.flow.document import FlowSpec
from gitops_flow.flow.routing import CacheRule
from gitops_flow.guardrails.cache import Asked, MemoryCache, ResponseCache

SEED = 21
ROUNDS = 3000
ROUTING = ("session_id", "user_id", "flow_version")
PROMPT = {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Q: {question}"}}
FAKE = {"id": "llm", "component": "FakeChatModel", "params": {"responses": ["one"]}}
PARSER = {"id": "answer", "component": "StrOutputParser"}
HISTORY = {"id": "history", "component": "ChatHistory"}
OWN = {"id": "own", "component": "Reads"}  # an operator's component: it may read anything in its config


def flow(*nodes: dict[str, Any]) -> FlowSpec:
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return FlowSpec.model_validate(
        {"version": 1, "name": "faq", "nodes": list(nodes), "edges": edges, "tweakable": {"prompt": ["template"]}}
    )


# the flow's kind -> (its nodes, its rule, what of the routing keys its run reads, whether it reads turns)
FLOWS: dict[str, tuple[FlowSpec, CacheRule, frozenset[str], bool]] = {
    "built-in": (flow(PROMPT, FAKE, PARSER), CacheRule(), frozenset(), False),
    "conversation": (
        flow(HISTORY, PROMPT, FAKE, PARSER),
        CacheRule(allow=["history"]),
        frozenset({"session_id"}),
        True,
    ),
    "operator": (flow(PROMPT, FAKE, OWN), CacheRule(), frozenset(ROUTING), False),
}


def responses(namespace: str) -> ResponseCache:
    registry = ComponentRegistry.builtin().extended([Component(name="Reads", target="tests.x:y", kind="transform")])
    return ResponseCache(MemoryCache(1 << 20), registry, max_entry_bytes=1 << 20, max_entries=100, namespace=namespace)


def value(rng: random.Random, depth: int = 0) -> Any:
    """Random JSON: small alphabets, so that two draws are often equal and near misses are common."""
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(["hi", "Hi", "hi ", "", "héllo", "1"])
    if kind == 1:
        return rng.choice([0, 1, -1, 2**40])
    if kind == 2:
        return rng.choice([0.5, 1.0, 1e-9])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return {rng.choice("abcq"): value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [value(rng, depth + 1) for _ in range(rng.randrange(3))]


def request(rng: random.Random) -> dict[str, Any]:
    """A request as the server hands it to the cache, with what only the cache's caller knows (blob, namespace)."""
    configurable: dict[str, Any] = {k: rng.choice(["a", "b"]) for k in ROUTING if rng.random() < 0.5}
    configurable.update({rng.choice(["temperature", "lang"]): value(rng) for _ in range(rng.randrange(2))})
    config: dict[str, Any] = {"configurable": configurable}
    if rng.random() < 0.3:
        config["tags"] = [rng.choice(["x", "y"]) for _ in range(rng.randrange(1, 3))]
    if rng.random() < 0.3:
        config["metadata"] = {rng.choice(["trace", "who"]): value(rng)}
    if rng.random() < 0.2:
        config["run_name"] = rng.choice(["r1", "r2"])
    tweaks = {"prompt": {"template": rng.choice(["Q: {question}", "Call +1-555-0100: {question}"])}}
    return {
        "kind": rng.choice(sorted(FLOWS)),
        "blob": rng.choice(["blob1", "blob2"]),
        "namespace": rng.choice(["", "fake"]),
        "input": {"question": value(rng)},
        "config": config,
        "tweaks": tweaks if rng.random() < 0.4 else {},
        "history": [(rng.choice(["human", "ai"]), rng.choice(["hi", "one"])) for _ in range(rng.randrange(3))],
    }


def changed(rng: random.Random, original: dict[str, Any]) -> dict[str, Any]:
    """``original`` with one thing changed at random, or its objects' keys reordered (which changes nothing)."""
    new = copy.deepcopy(original)
    what = rng.randrange(9)
    if what == 0:
        new["input"] = reordered(new["input"])
        new["config"] = reordered(new["config"])
    elif what == 1:
        new["input"]["question"] = value(rng)
    elif what == 2:
        new["tweaks"] = request(rng)["tweaks"]
    elif what == 3:
        new["config"]["configurable"][rng.choice(ROUTING)] = rng.choice(["a", "b", "c"])
    elif what == 4:
        new["config"] = request(rng)["config"]
    elif what == 5:
        new["history"] = request(rng)["history"]
    elif what == 6:
        new["blob"] = rng.choice(["blob1", "blob2"])
    elif what == 7:
        new["namespace"] = rng.choice(["", "fake"])
    else:
        new = request(rng)
        new["kind"] = original["kind"]
    return new


def reordered(data: Any) -> Any:
    """The same JSON with every object's keys in reverse order."""
    if isinstance(data, dict):
        return {k: reordered(data[k]) for k in reversed(list(data))}
    if isinstance(data, list):
        return [reordered(item) for item in data]
    return data


def seen_by_the_run(req: dict[str, Any]) -> str:
    """Everything of the request that can change the answer, written apart from the cache: the flow as served, the
    input, the tweaks, the whole config less the routing keys the flow does not read, and the turns it reads."""
    _, _, reads, turns = FLOWS[req["kind"]]
    config = dict(req["config"])
    config["configurable"] = {k: v for k, v in config["configurable"].items() if k not in ROUTING or k in reads}
    seen = [req["kind"], req["blob"], req["namespace"], req["input"], req["tweaks"], config]
    return json.dumps([*seen, req["history"] if turns else None], sort_keys=True)


def key(caches: dict[str, ResponseCache], req: dict[str, Any]) -> str | None:
    spec, rule, _, turns = FLOWS[req["kind"]]
    asked = Asked(req["input"], req["config"], req["tweaks"], req["history"] if turns else None)
    blob = f"{req['kind']}-{req['blob']}"  # a blob is one file: one flow
    lookup = caches[req["namespace"]].lookup(rule, spec, blob, asked)
    return lookup.key if lookup is not None else None


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_requests_share_an_entry_exactly_when_their_runs_see_the_same(seed: int) -> None:
    rng = random.Random(seed)
    caches = {namespace: responses(namespace) for namespace in ("", "fake")}
    shared = apart = 0
    for _ in range(ROUNDS):
        one = request(rng)
        other = changed(rng, one)
        one_key, other_key = key(caches, one), key(caches, other)
        if one["kind"] == "conversation" and "session_id" not in one["config"]["configurable"]:
            assert one_key is None  # no session: the run is refused anyway, and nothing is cached
            continue
        if other["kind"] == "conversation" and "session_id" not in other["config"]["configurable"]:
            assert other_key is None
            continue
        assert one_key is not None and other_key is not None
        same = seen_by_the_run(one) == seen_by_the_run(other)
        assert (one_key == other_key) == same, (one, other)
        shared, apart = shared + same, apart + (not same)
    assert shared > ROUNDS / 10 and apart > ROUNDS / 3  # both sides of the property were tried, many times over

"""The response cache against a real `gitops-flow serve` (issue 21): what one caller sends never becomes another's
answer. Each attack of the review is replayed here over HTTP against flows pushed with a ``cache:`` rule in
`gitops-flow.yaml`; without the fix each of these tests fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.gitrepo import Remote
from tests.process import ADMIN, ServeProcess, serve_process
from tests.served import echo_flow
from tests.test_per_flow import CANARY, canary_users, failing_at_run_time, stable_users

PHONE = "Call +1-555-0100 for help with: {question}"
FLOWS: dict[str, dict[str, Any]] = {
    # the review's "faq": its prompt's template is tweakable (LangFlow's run API), and it answers with the prompt's
    # text, so what a tweak did shows in the answer
    "faq": {
        "version": 1,
        "name": "faq",
        "nodes": [
            {"id": "prompt", "component": "PromptTemplate", "params": {"template": "Our FAQ on: {question}"}},
            {"id": "answer", "component": "Text"},
        ],
        "edges": [{"source": "prompt", "target": "answer"}],
        "tweakable": {"prompt": ["template"]},
    },
    # a conversation whose owner allowed its answers to be cached
    "chat": {
        "version": 1,
        "name": "chat",
        "nodes": [
            {"id": "memory", "component": "ChatHistory"},
            {
                "id": "prompt",
                "component": "ChatPromptTemplate",
                "params": {"messages": [["placeholder", "{history}"], ["human", "{question}"]]},
            },
            {
                "id": "llm",
                "component": "FakeChatModel",
                "params": {"responses": ["first", "second", "third", "fourth"]},
            },
            {"id": "answer", "component": "StrOutputParser"},
        ],
        "edges": [
            {"source": "memory", "target": "prompt"},
            {"source": "prompt", "target": "llm"},
            {"source": "llm", "target": "answer"},
        ],
    },
}
ROUTING = {"cache": {"faq": {"ttl": "1h"}, "chat": {"ttl": "1h", "allow": ["history"]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("poisoning")
    remote = Remote.create(tmp)
    files = {f"flows/{name}.json": json.dumps(doc) for name, doc in FLOWS.items()}
    remote.commit({**files, "gitops-flow.yaml": yaml.safe_dump(ROUTING)}, "faq and chat, cached")
    remote.push()
    with serve_process(remote, tmp) as process:
        yield process


def run_api(server: ServeProcess, question: str, **body: Any) -> httpx.Response:
    return server.client.post("/api/v1/run/faq", json={"input_value": question, **body})


def run_text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    text: str = response.json()["outputs"][0]["outputs"][0]["results"]["message"]["text"]
    return text


def test_an_anonymous_tweak_never_becomes_the_answer_of_the_next_callers(server: ServeProcess) -> None:
    question = "How do I reset my password?"
    attack = run_api(server, question, tweaks={"prompt": {"template": PHONE}})
    assert run_text(attack) == f"Call +1-555-0100 for help with: {question}"  # the tweak is the caller's own
    assert attack.headers["x-flow-cache"] == "miss"

    invoked = server.invoke("faq", {"question": question})
    plain = run_api(server, question)

    assert invoked.status_code == 200 and invoked.json()["output"] == f"Our FAQ on: {question}"
    assert invoked.headers["x-flow-cache"] == "miss"  # the tweaked run's entry is not this one
    assert run_text(plain) == f"Our FAQ on: {question}"
    assert plain.headers["x-flow-cache"] == "hit"  # the untweaked answer is shared by both APIs
    again = run_api(server, question, tweaks={"prompt": {"template": PHONE}})
    assert (run_text(again), again.headers["x-flow-cache"]) == (run_text(attack), "hit")  # cached for its tweaks


def test_an_untweaked_answer_cached_first_is_not_what_a_tweaked_run_gets(server: ServeProcess) -> None:
    question = "Where is my order?"
    assert server.invoke("faq", {"question": question}).json()["output"] == f"Our FAQ on: {question}"

    tweaked = run_api(server, question, tweaks={"prompt": {"template": "Translated: {question}"}})

    assert (run_text(tweaked), tweaked.headers["x-flow-cache"]) == (f"Translated: {question}", "miss")


def test_what_else_a_client_config_gives_the_run_is_in_the_key(server: ServeProcess) -> None:
    question = {"question": "Do you ship abroad?"}
    assert server.invoke("faq", question).headers["x-flow-cache"] == "miss"
    assert server.invoke("faq", question).headers["x-flow-cache"] == "hit"

    for config in ({"tags": ["x"]}, {"metadata": {"who": "x"}}, {"run_name": "x"}, {"configurable": {"lang": "x"}}):
        assert server.invoke("faq", question, config=config).headers["x-flow-cache"] == "miss", config
    # the routing keys choose the version, whose file is in the key: the answer is still shared
    routed = {"configurable": {"session_id": "someone", "user_id": "someone"}}
    assert server.invoke("faq", question, config=routed).headers["x-flow-cache"] == "hit"


def test_a_cached_conversation_never_answers_another_session(server: ServeProcess) -> None:
    def ask(session: str) -> httpx.Response:
        return server.invoke(
            "chat", {"question": "What did I order?"}, config={"configurable": {"session_id": session}}
        )

    alice = ask("alice")
    bob = ask("bob")
    alice_again = ask("alice")  # her conversation has a turn more now: not the same run

    assert (alice.json()["output"], alice.headers["x-flow-cache"]) == ("first", "miss")
    assert (bob.json()["output"], bob.headers["x-flow-cache"]) == ("second", "miss")
    assert (alice_again.json()["output"], alice_again.headers["x-flow-cache"]) == ("third", "miss")
    langflow = server.client.post("/api/v1/run/chat", json={"input_value": "What did I order?", "session_id": "carol"})
    assert (run_text(langflow), langflow.headers["x-flow-cache"]) == ("fourth", "miss")


def test_the_server_warns_of_a_rule_that_caches_a_conversation(server: ServeProcess) -> None:
    versions = server.client.get("/versions", headers=ADMIN).json()["versions"]

    problems = versions[0]["problems"]
    assert [(p["code"], p["path"], p["severity"]) for p in problems] == [
        ("cache-history", "$.cache.chat.allow", "warning")
    ]


def test_a_failed_canarys_answer_from_its_primary_is_kept_under_the_primarys_file(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    rules = {**CANARY, "cache": {"alpha": {"ttl": "1h"}}}
    stable = remote.publish({"flows/alpha.json": echo_flow("alpha"), "gitops-flow.yaml": yaml.safe_dump(rules)})
    remote.tag("stable", stable)
    remote.push_tags()
    remote.publish({"flows/alpha.json": failing_at_run_time("alpha")}, "alpha breaks")
    with serve_process(remote, tmp_path) as server:
        [canary_user], [stable_user] = canary_users("alpha", 1), stable_users("alpha", 1)
        rescued = server.invoke("alpha", {"question": "hi"}, headers={"X-Flow-User": canary_user})
        again = server.invoke("alpha", {"question": "hi"}, headers={"X-Flow-User": stable_user})

    assert (rescued.status_code, rescued.headers["x-flow-version"], rescued.headers["x-flow-cache"]) == (
        200,
        stable,
        "miss",
    )
    assert (again.json()["output"], again.headers["x-flow-version"], again.headers["x-flow-cache"]) == (
        "one",
        stable,
        "hit",
    )

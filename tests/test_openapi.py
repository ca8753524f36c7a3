"""/openapi.json and /docs against a real `gitops-flow serve`: an OpenAPI 3.1 document that a real validator accepts,
made from the live flows' real schemas, and answers that match what it says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate

from tests.gitrepo import Remote
from tests.process import ServeProcess, serve_process
from tests.served import echo_flow
from tests.test_langserve_client import FLOWS
from tests.test_per_flow import CANARY

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("openapi")
    remote = Remote.create(tmp)
    files = {f"flows/{name}.json": json.dumps(doc) for name, doc in FLOWS.items()}
    files["flows/echo.json"] = echo_flow()
    files["flows/basic-prompting.json"] = (HERE / "data" / "langflow" / "basic-prompting.json").read_text()
    remote.commit(files)
    remote.push()
    with serve_process(remote, tmp, args=["--fake-models"]) as process:
        yield process


def resolved(document: dict[str, Any], schema: Any) -> Any:
    """``schema`` with every ``#/components/...`` reference written out."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            found: Any = document
            for part in ref[2:].split("/"):
                found = found[part]
            return resolved(document, found)
        return {k: resolved(document, v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolved(document, v) for v in schema]
    return schema


def local(schema: Any) -> Any:
    """A flow's own schema (``/input_schema``) with its ``$defs`` written out, to compare with the document's."""
    defs = schema.get("$defs", {}) if isinstance(schema, dict) else {}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in value.items() if k != "$defs"}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(schema)


def test_the_document_is_valid_openapi_3_1(server: ServeProcess) -> None:
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on anything OpenAPI 3.1 does not allow
    served = {tag["name"] for tag in document["tags"]} - {"server"}
    assert served == {*FLOWS, "echo", "basic-prompting"}
    for name in served:
        for endpoint in ("invoke", "batch", "stream", "stream_log", "stream_events", "input_schema"):
            assert f"/flows/{name}/{endpoint}" in document["paths"]
    assert "/api/v1/run/{flow}" in document["paths"]


@pytest.mark.parametrize("flow", ["echo", "chain", "chat", "basic-prompting", "passthrough"])
def test_each_flow_carries_the_schemas_it_serves(server: ServeProcess, flow: str) -> None:
    document = server.client.get("/openapi.json").json()
    body = document["paths"][f"/flows/{flow}/invoke"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert resolved(document, body["properties"]["input"]) == local(
        server.client.get(f"/flows/{flow}/input_schema").json()
    )
    answer = document["paths"][f"/flows/{flow}/invoke"]["post"]["responses"]["200"]["content"]["application/json"]
    output = resolved(document, answer["schema"]["properties"]["output"])
    assert output == local(server.client.get(f"/flows/{flow}/output_schema").json())


def test_what_is_served_matches_what_the_document_says(server: ServeProcess) -> None:
    document = server.client.get("/openapi.json").json()
    operation = document["paths"]["/flows/echo/invoke"]["post"]
    request = {"input": {"question": "hi"}, "config": {"configurable": {"session_id": "s"}}}
    body_schema = resolved(document, operation["requestBody"]["content"]["application/json"]["schema"])
    jsonschema.validate(request, body_schema)
    response = server.client.post("/flows/echo/invoke", json=request)
    answer = resolved(document, operation["responses"]["200"]["content"]["application/json"]["schema"])
    jsonschema.validate(response.json(), answer)
    refused = server.client.post("/flows/echo/invoke", json={"input": {"nothing": 1}})
    error = resolved(document, operation["responses"]["422"]["content"]["application/json"]["schema"])
    jsonschema.validate(refused.json(), error)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"input": {"nothing": 1}}, body_schema)  # the document refuses what the server refuses


def test_a_canary_with_another_input_makes_the_input_either(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    stable = remote.commit({"flows/echo.json": echo_flow(), "gitops-flow.yaml": yaml.safe_dump(CANARY)})
    remote.push()
    remote.tag("stable", stable)
    remote.push_tags()
    changed = json.loads(echo_flow())
    changed["nodes"][0]["params"]["template"] = "Q: {question} in {language}"
    remote.commit({"flows/echo.json": json.dumps(changed)}, "a canary that takes a language")
    remote.push()
    with serve_process(remote, tmp_path) as server:
        document = server.client.get("/openapi.json").json()
        validate(document)
        op = document["paths"]["/flows/echo/invoke"]["post"]
        schema = resolved(document, op["requestBody"]["content"]["application/json"]["schema"]["properties"]["input"])
        required = sorted(sorted(choice.get("required", [])) for choice in schema["anyOf"])
        assert required == [["language", "question"], ["question"]]


def test_the_docs_page_is_shipped_and_strict(server: ServeProcess) -> None:
    page = server.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: every file is the server's own
    for asset in ("docs.js", "pages.css"):
        assert f"docs/{asset}" in page.text
        shipped = server.client.get(f"/docs/{asset}")
        assert shipped.status_code == 200
        assert shipped.headers["content-type"].startswith(("text/javascript", "text/css"))
        assert "http://" not in shipped.text and "https://" not in shipped.text  # nothing from elsewhere
    assert server.client.get("/docs/../../etc/passwd").status_code == 404
    assert server.client.get("/docs/other.js").status_code == 404


def test_the_playground_is_shipped_per_flow(server: ServeProcess) -> None:
    moved = server.client.get("/flows/echo/playground", follow_redirects=False)
    assert (moved.status_code, moved.headers["location"]) == (308, "/flows/echo/playground/")
    page = server.client.get("/flows/echo/playground/")
    assert page.status_code == 200 and "playground.js" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    script = server.client.get("/flows/echo/playground/playground.js").text
    assert "../invoke" in script and "../stream" in script and "../input_schema" in script
    assert "innerHTML" not in script and "http://" not in script and "https://" not in script
    assert server.client.get("/flows/nope/playground/").status_code == 404
    assert server.client.get("/flows/echo/playground/secrets.txt").status_code == 404


def test_the_document_follows_a_deploy(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    with serve_process(remote, tmp_path) as server:
        first = server.client.get("/openapi.json").json()
        assert server.client.get("/openapi.json").json() == first  # the same table, the same document
        remote.commit({"flows/other.json": echo_flow("other")}, "a second flow")
        remote.push()
        server.reconcile()
        tags = {tag["name"] for tag in server.client.get("/openapi.json").json()["tags"]}
        assert tags == {"echo", "other", "server"}


def test_with_a_read_token_the_document_needs_it_as_the_flows_list_does(tmp_path: Path) -> None:
    remote = Remote.create(tmp_path)
    remote.commit({"flows/echo.json": echo_flow()})
    remote.push()
    with serve_process(remote, tmp_path, env={"GITOPS_FLOW_READ_TOKEN": "read-token-123"}) as server:
        refused = server.client.get("/openapi.json")
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "read-token-required")
        assert server.client.get("/flows").status_code == 401
        shown = server.client.get("/openapi.json", headers={"Authorization": "Bearer read-token-123"})
        assert shown.status_code == 200 and "/flows/echo/invoke" in shown.json()["paths"]
        assert server.client.get("/flows/echo/input_schema").status_code == 200  # the flows themselves stay open

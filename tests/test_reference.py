"""The reference: the routing file's JSON Schema (`schema --config`), docs/configuration.md, GITOPS_FLOW_SERVER for
the commands that ask a server, shell completion, and what a running server says in its log and answers."""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from gitops_flow.cli.completion import script
from gitops_flow.cli.main import _parser, main
from gitops_flow.cli.reference import page, routing_keys
from gitops_flow.config import Settings, env_name
from gitops_flow.flow.routing import RoutingConfig
from tests.gitrepo import Remote
from tests.process import ADMIN_TOKEN, ServeProcess, serve_process
from tests.served import echo_flow, wait_until

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = json.loads((resources.files("gitops_flow.flow") / "schema" / "gitops-flow.v1.json").read_text())
ROUTING = """\
routes:
  default:
    - ref: stable
      weight: 90
    - ref: main
      weight: 10
session_ttl: 30m
analysis:
  window: 90s
limits:
  echo:
    requests_per_second: 5
    tokens: {budget: 1000, window: 1h}
cache:
  echo: {ttl: 10m, allow: [temperature]}
"""


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), environ=environ or {}, out=out)
    return code, out.getvalue()


# -- schema --config and the page ------------------------------------------------------------------------------------


def test_schema_config_prints_the_published_schema_of_the_routing_file() -> None:
    code, text = run("schema", "--config")
    assert code == 0
    assert json.loads(text) == PUBLISHED == RoutingConfig.json_schema(), (
        "run `gitops-flow schema --config > gitops_flow/flow/schema/gitops-flow.v1.json`"
    )
    jsonschema.Draft202012Validator.check_schema(PUBLISHED)


def test_the_schema_accepts_what_the_model_accepts_durations_with_units_included() -> None:
    document = yaml.safe_load(ROUTING)
    RoutingConfig.model_validate(document)
    jsonschema.Draft202012Validator(PUBLISHED).validate(document)


@pytest.mark.parametrize(
    "document",
    [{"sesion_ttl": 5}, {"session_ttl": "5 minutes"}, {"routes": {"echo": [{"ref": "main", "wieght": 1}]}}],
    ids=["unknown-key", "bad-duration", "unknown-nested-key"],
)
def test_the_schema_refuses_what_the_model_refuses(document: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RoutingConfig.model_validate(document)
    assert list(jsonschema.Draft202012Validator(PUBLISHED).iter_errors(document))


def test_configuration_page_is_generated_from_the_models() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert text == page(), "run `python -m gitops_flow.cli.reference > docs/configuration.md`"
    assert "# yaml-language-server: $schema=" in text


def test_configuration_page_names_every_key_of_the_routing_file_and_every_setting() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    keys = [key for key, *_ in routing_keys(PUBLISHED)]
    assert {"routes.FLOW[].match.values", "limits.FLOW.refs.REF.tokens.window", "cache.FLOW.allow"} <= set(keys)
    assert [key for key in keys if f"| {key} |" not in text] == []
    variables = [env_name(name) for name in Settings.model_fields if env_name(name)]
    assert "GITOPS_FLOW_SERVER" in variables
    assert [name for name in variables if f"`{name}`" not in text] == []


# -- completion --------------------------------------------------------------------------------------------------------


def complete(words: list[str], tmp_path: Path) -> list[str]:
    """What bash completes for ``words`` (the last one being completed), with the script `completion bash` prints."""
    code, text = run("completion", "bash")
    assert code == 0
    (tmp_path / "completion.bash").write_text(text)
    shell = (
        f"source {tmp_path / 'completion.bash'}\n"
        "complete -p gitops-flow\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_gitops_flow\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "-c", shell], capture_output=True, text=True, cwd=tmp_path, check=True)
    lines = done.stdout.splitlines()
    assert lines[0] == "complete -o filenames -F _gitops_flow gitops-flow"
    return lines[1:]


def test_bash_completes_subcommands_flags_and_choices(tmp_path: Path) -> None:
    assert complete(["gitops-flow", "se"], tmp_path) == ["serve", "settings"]
    assert complete(["gitops-flow", "schema", "--"], tmp_path) == ["--help", "--config"]
    assert complete(["gitops-flow", "validate", "--format", ""], tmp_path) == ["text", "json", "github"]
    assert complete(["gitops-flow", "completion", ""], tmp_path) == ["bash", "zsh", "fish"]
    assert "--server" in complete(["gitops-flow", "status", "--s"], tmp_path)


def test_zsh_and_fish_scripts_cover_every_subcommand() -> None:
    names = [c for c in _parser()._subparsers._group_actions[0].choices]  # type: ignore[union-attr]
    zsh, fish = script("zsh", _parser()), script("fish", _parser())
    assert zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n") and "complete -o filenames -F" in zsh
    assert all(f" -a {name} " in fish for name in names)
    assert "-n '__fish_seen_subcommand_from abort' -l server" in fish


# -- init --------------------------------------------------------------------------------------------------------------


def test_init_says_which_files_exist_already_and_what_force_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("init", str(tmp_path), "--install", "gitops-flow==1.0")[0] == 0
    assert run("init", str(tmp_path), "--install", "gitops-flow==1.0")[0] == 2
    error = capsys.readouterr().err
    assert ".github/workflows/gitops-flow.yml exists already; pass --force to overwrite it" in error
    assert "already exist;" not in error


# -- a running server ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """Two workers serving a repository where `echo` is good and `broken` fails (one server for the module)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    remote = Remote.create(tmp_path)
    described = json.loads(echo_flow(name="described"))
    described["description"] = "Answers with a component that does not exist"
    described["nodes"][0]["component"] = "NoSuchComponent"
    files = {
        "flows/echo.json": echo_flow(),
        "flows/broken.json": '{"version": 1, "nodes": [',
        **{"flows/described.json": json.dumps(described)},
    }
    remote.commit(files, "first")
    remote.push()
    with serve_process(remote, tmp_path, workers=2) as server:
        # every worker ready: new connections land on either, until each worker has answered ready itself (ten
        # ready answers in a row could all come from the first worker while the second was still building)
        ready: set[int] = set()

        def both_ready() -> bool:
            answer = httpx.get(server.url + "/readyz")
            if answer.status_code == 200:
                ready.add(answer.json()["worker"]["slot"])
            return len(ready) == 2

        wait_until(both_ready, what="both workers ready")
        wait_until(lambda: "failed broken at" in server.log_text(), what="the failure's log line")
        yield server


def test_serve_says_it_starts_its_workers(served: ServeProcess) -> None:
    assert "gitops-flow: starting 2 workers on 127.0.0.1:" in served.log_text()


def test_the_log_names_the_problems_of_a_failed_flow(served: ServeProcess) -> None:
    line = next(line for line in served.log_text().splitlines() if "failed broken at" in line)
    assert "flows/broken.json:1 invalid-json:" in line
    assert "problems" not in line.split("failed broken at", 1)[1][:20]


def test_the_server_comes_from_gitops_flow_server_and_the_flag_wins(
    served: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {"GITOPS_FLOW_SERVER": served.url}
    code, text = run("versions", "--json", environ=environ)
    assert code == 0 and json.loads(text)["source"]["branch"] == "main"  # whichever worker answered
    assert run("versions", "--server", "http://127.0.0.1:9", environ=environ)[0] == 2
    assert "cannot reach the server at http://127.0.0.1:9" in capsys.readouterr().err
    assert run("status", environ={"GITOPS_FLOW_SERVER": "not a url"})[0] == 2
    assert "is not an http:// or https:// URL" in capsys.readouterr().err


def test_abort_of_a_flow_that_does_not_exist_says_so(served: ServeProcess, capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"GITOPS_FLOW_SERVER": served.url, "GITOPS_FLOW_ADMIN_TOKEN": ADMIN_TOKEN}
    assert run("abort", "nosuch", environ=environ)[0] == 2
    error = capsys.readouterr().err
    assert "no flow named 'nosuch' is served here (GET /flows lists them)" in error
    assert run("abort", "echo", environ=environ)[0] == 2
    error = capsys.readouterr().err
    assert "flow 'echo' has no canary: a canary is a ref after the first of the flow's route" in error
    assert error.rstrip().endswith("when the file has an analysis section")


def test_history_names_another_worker_of_the_server_a_worker(served: ServeProcess) -> None:
    """A fetch asked of a worker that is not the fetch leader is passed on to the leader, whose deploy event names
    the worker that passed it on, not a replica (another server)."""
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    triggers: list[str] = []
    for answer in range(12):  # each request lands on either worker: a follower gets one of them (or 1 in 4096 fails)
        sha = served.remote.commit({"flows/echo.json": echo_flow(answer=f"answer {answer}")}, f"answer {answer}")
        served.remote.push()
        httpx.post(served.url + "/admin/reconcile", headers=headers, timeout=30)  # a new connection: either worker

        wait_until(lambda: deployed(served, sha), what=f"the deploy of {sha[:12]}")  # noqa: B023
        triggers += deployed(served, sha)
        if any(t.startswith("worker ") for t in triggers):
            break
    assert [t for t in triggers if "replica" in t] == []
    assert re.fullmatch(r"worker [01]: operator", next(t for t in triggers if t.startswith("worker ")))


def deployed(served: ServeProcess, sha: str) -> list[str]:
    """The triggers of the `deployed` events of ``sha`` in the server's history."""
    events = served.client.get("/history").json()["events"]
    return [e["trigger"] for e in events if e["event"] == "deployed" and e["sha"] == sha]


def test_a_failed_flow_shows_the_description_its_document_gives(served: ServeProcess) -> None:
    for _ in range(10):  # new connections: the fetch leader (which judged it) and the worker that trusts its record
        flows = {f["name"]: f for f in httpx.get(served.url + "/flows").json()["flows"]}
        assert flows["described"]["state"] == "failed"
        assert flows["described"]["description"] == "Answers with a component that does not exist"
        assert flows["broken"]["description"] == ""  # not JSON: nothing to tell
    overview = httpx.get(served.url + "/ui/overview.json").json()  # the console says the same
    described = next(f for f in overview["flows"] if f["name"] == "described")
    assert described["description"] == "Answers with a component that does not exist"

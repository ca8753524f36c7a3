"""githost/deploys.py: what each deploy event means on GitHub, decided without talking to it."""

from __future__ import annotations

from typing import Any

from gitops_flow.flow.routing import RoutingConfig
from gitops_flow.githost.deploys import CommitStatus, DeploymentUpdate, Links, RefView, Translator

A, B = "a" * 40, "b" * 40
VIEW = RefView.of(
    "main",
    RoutingConfig.model_validate(
        {"routes": {"default": [{"ref": "stable", "weight": 9}, {"ref": "main", "weight": 1}]}}
    ),
)


def statuses(updates: list[Any]) -> list[tuple[str, str, str]]:
    return [(u.context, u.state, u.description) for u in updates if isinstance(u, CommitStatus)]


def problem(code: str) -> dict[str, Any]:
    return {"file": "flows/x.json", "line": 4, "code": code, "message": "m"}


def test_two_flows_failing_at_one_commit_are_both_named() -> None:
    translator = Translator()
    first = translator.updates({"event": "failed", "sha": A, "flow": "x", "problems": [problem("bad-param")]}, VIEW)
    second = translator.updates({"event": "failed", "sha": A, "flow": "y", "problems": [problem("cycle")]}, VIEW)
    assert statuses(first) == [("gitops-flow/main", "failure", "x failed: flows/x.json:4 bad-param; not served")]
    assert statuses(second) == [("gitops-flow/main", "failure", "2 flows failed here: x, y")]


def test_a_failure_carried_from_an_earlier_commit_does_not_fail_this_one() -> None:
    event = {"event": "deployed", "sha": B, "changed": ["y"], "failed_flows": ["x"]}
    updates = Translator().updates(event, VIEW)
    assert statuses(updates) == [
        ("gitops-flow/main", "success", "Live on main; x still failing from an earlier commit")
    ]
    deployment = next(u for u in updates if isinstance(u, DeploymentUpdate))
    assert (deployment.state, deployment.description) == ("success", "Live on main; x kept its last good build")


def test_a_promotion_is_a_production_deployment_and_a_deleted_tag_inactive() -> None:
    promoted = Translator().updates({"event": "tag-moved", "sha": B, "ref": "stable", "before": A, "after": B}, VIEW)
    status, deployment = promoted
    assert isinstance(status, CommitStatus) and isinstance(deployment, DeploymentUpdate)
    assert (status.sha, status.context, status.description) == (
        B,
        "gitops-flow/stable",
        "stable points here: promoted (was aaaaaaa)",
    )
    assert (deployment.environment, deployment.production, deployment.create) == ("stable", True, True)
    deleted = Translator().updates({"event": "tag-moved", "sha": A, "ref": "stable", "before": A, "after": None}, VIEW)
    assert deleted == [DeploymentUpdate(A, "stable", "inactive", "Tag stable was deleted", create=False)]


def test_a_flows_own_tag_is_routed_by_its_ref() -> None:
    assert VIEW.routed("support-bot/stable") and VIEW.primary("support-bot/stable")
    assert not VIEW.routed("v1.2") and not VIEW.routed("release/v1.2")
    assert Translator().updates({"event": "tag-moved", "sha": A, "ref": "v1.2", "after": A}, VIEW) == []


def test_links_follow_the_operators_template() -> None:
    links = Links("https://flows.example.com/", "{url}/ui/commits/{sha}?ref={ref}&flow={flow}")
    assert links.status("abc", "main", "x") == "https://flows.example.com/ui/commits/abc?ref=main&flow=x"
    assert links.environment() == "https://flows.example.com/ui"
    assert Links(None).status("abc", "main") is None  # no public URL: no link rather than a broken one


def test_events_that_mean_nothing_on_github_make_no_update() -> None:
    for kind in ("retired", "built", "rewritten"):
        assert Translator().updates({"event": kind, "sha": A}, VIEW) == []
    assert Translator().updates({"event": "deployed"}, VIEW) == []  # no commit: nothing to put a status on


def test_descriptions_fit_githubs_limit_when_sent() -> None:
    from gitops_flow.githost.github import shorten

    long = "x failed: " + "flows/a-very-long-name.json:1234 bad-param " * 10
    assert len(shorten(long)) == 140 and shorten(long).endswith("…")


def test_a_progressive_step_is_a_successful_status_and_the_last_names_its_command() -> None:
    from gitops_flow.githost.github import MAX_DESCRIPTION

    command = f"git tag -f support-bot/stable {B} && git push -f origin support-bot/stable"
    event = {
        "event": "stepped",
        "sha": B,
        "flow": "support-bot",
        "ref": "canary",
        "step": 3,
        "steps": 3,
        "share": 100.0,
    }
    ((_, state, text),) = statuses(Translator().updates({**event, "command": command}, VIEW))
    short = f"git tag -f support-bot/stable {B[:12]} && git push -f origin support-bot/stable"
    assert (state, text) == ("success", f"support-bot on canary: step 3/3, 100 %; durable: {short}")
    assert len(text) <= MAX_DESCRIPTION  # GitHub shows it whole
    first = {**event, "step": 1, "share": 10.0}
    assert statuses(Translator().updates(first, VIEW)) == [
        ("gitops-flow/canary", "success", "support-bot on canary: step 1/3, 10 % of the traffic")
    ]

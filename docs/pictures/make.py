"""Make the pictures of docs/delivery.md from what a real `gitops-flow serve` and `gitops-flow plan` send.

A scenario runs against the test stand-ins: a repository with two flows, a pull request that breaks one of them and
changes the other's contract, the merge, a promotion. The real server writes commit statuses and deployments to the
GitHub stand-in (tests/githubapi.py) and notifications to a local receiver; `gitops-flow plan` writes the job
summary and the pull-request comment. Each artefact, as it was received, is laid out in an HTML page styled after
the place people see it (GitHub's checks list and environments, a Markdown comment, a Slack message) and
photographed by headless Chromium (with Debian's fonts-noto-color-emoji for the plan's marks). They are faithful to
the content, not screenshots of github.com or Slack.

Run from the repository root (needs chromium, fonts-noto-color-emoji, npm for the stand-in's data, and
markdown-it-py):

    .venv/bin/pip install markdown-it-py
    PYTHONPATH=. .venv/bin/python docs/pictures/make.py
"""

from __future__ import annotations

import html
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt

from gitops_flow.cli.main import main
from tests.githubapi import TOKEN, github_standin
from tests.gitrepo import Remote
from tests.npmdata import webhook_examples
from tests.process import serve_process
from tests.served import echo_flow, wait_until
from tests.test_outbound import Script, receiver

HERE = Path(__file__).resolve().parent
PUBLIC = "https://flows.example.com"
CSS = """
body { font: 14px -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #1f2328; margin: 0; padding: 16px;
       background: #fff; width: 760px; }
.box { border: 1px solid #d0d7de; border-radius: 6px; overflow: hidden; }
.head { background: #f6f8fa; padding: 10px 16px; border-bottom: 1px solid #d0d7de; font-weight: 600; }
.row { display: flex; gap: 10px; padding: 9px 16px; border-top: 1px solid #d8dee4; align-items: baseline; }
.row:first-of-type { border-top: 0; } .ctx { font-weight: 600; white-space: nowrap; } .desc { color: #59636e; }
.ok { color: #1a7f37; } .bad { color: #d1242f; } .grey { color: #59636e; } .link { margin-left: auto; color: #0969da; }
.md { padding: 16px; } .md table { border-collapse: collapse; } .md td, .md th { border: 1px solid #d0d7de;
       padding: 6px 13px; } .md code { background: #eff1f3; padding: .2em .4em; border-radius: 6px; font-size: 85%; }
.slack { font: 15px Lato, 'Segoe UI', sans-serif; display: flex; gap: 8px; }
.bar { width: 4px; border-radius: 4px; } .att { padding: 2px 10px; } .title { font-weight: 700; color: #1264a3; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 24px; margin-top: 6px; } .fields b { display: block; }
.name { font-weight: 900; } .app { background: #e8e8e8; font-size: 10px; padding: 1px 3px; border-radius: 3px; }
"""


def page(body: str) -> str:
    return f"<!doctype html><meta charset=utf-8><style>{CSS}</style><body>{body}</body>"


def shoot(name: str, document: str, height: int) -> None:
    source = HERE / f"{name}.html"
    source.write_text(document)
    target = HERE / f"{name}.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={target}",
            f"--window-size=800,{height}",
            source.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    source.unlink()
    print(f"wrote {target.relative_to(Path.cwd())}")


def statuses_page(statuses: list[dict[str, Any]], sha: str) -> str:
    icon = {"success": ("✓", "ok"), "failure": ("✕", "bad"), "error": ("✕", "bad"), "pending": ("●", "grey")}
    rows = ""
    for status in statuses:
        mark, kind = icon[status["state"]]
        rows += (
            f"<div class=row><span class={kind}>{mark}</span><span class=ctx>{html.escape(status['context'])}</span>"
            f"<span class=desc>{html.escape(status['description'])}</span>"
            f"<a class=link>Details</a></div>"
        )
    return page(f"<div class=box><div class=head>Checks on {sha[:7]}</div>{rows}</div>")


def deployments_page(deployments: list[dict[str, Any]], states: dict[int, list[dict[str, Any]]]) -> str:
    rows = ""
    for deployment in reversed(deployments):
        latest = states[deployment["id"]][0]
        kind = {"success": "ok", "failure": "bad"}.get(latest["state"], "grey")
        rows += (
            f"<div class=row><span class=ctx>{html.escape(deployment['environment'])}</span>"
            f"<span class={kind}>{latest['state']}</span><span class=grey>{deployment['sha'][:7]}</span>"
            f"<span class=desc>{html.escape(latest['description'])}</span><a class=link>View deployment</a></div>"
        )
    return page(f"<div class=box><div class=head>Deployments</div>{rows}</div>")


def markdown_page(title: str, text: str) -> str:
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    rendered = rendered.replace("<details>", "<details open>")  # as a reader who opened them sees it
    return page(f"<div class=box><div class=head>{html.escape(title)}</div><div class=md>{rendered}</div></div>")


def slack_page(message: dict[str, Any]) -> str:
    attachment = message["attachments"][0]
    fields = "".join(f"<div><b>{f['title']}</b>{f['value']}</div>" for f in attachment["fields"])
    return page(
        "<div class=slack><div><div><span class=name>gitops-flow</span> <span class=app>APP</span></div>"
        f"<div class=slack style='margin-top:6px'><div class=bar style='background:{attachment['color']}'></div>"
        f"<div class=att><div class=title>{attachment['title']}</div><div>{attachment['text']}</div>"
        f"<div class=fields>{fields}</div></div></div></div></div>"
    )


def run() -> None:
    work = Path(tempfile.mkdtemp(prefix="gitops-flow-pictures-"))
    remote = Remote.create(work)
    routing = {"routes": {"default": [{"ref": "stable", "weight": 90}, {"ref": "main", "weight": 10}]}}
    triage = echo_flow("triage", "billing")
    first = remote.commit(
        {
            "flows/support-bot.json": echo_flow("support-bot", "Hello!"),
            "flows/triage.json": triage,
            "gitops-flow.yaml": yaml.safe_dump(routing),
        },
        "Support bot and triage",
    )
    remote.tag("stable", first)
    remote.push()
    remote.push_tags()
    # the pull request: support-bot answers in the caller's language; triage names a component that does not exist
    remote.git("checkout", "-q", "-b", "language")
    bot = json.loads(echo_flow("support-bot", "Bonjour !"))
    bot["nodes"][0]["params"]["template"] = "Q: {question} (answer in {language})"
    broken = json.loads(triage)
    broken["nodes"][1]["component"] = "FakeChatModle"
    remote.commit(
        {"flows/support-bot.json": json.dumps(bot, indent=2), "flows/triage.json": json.dumps(broken, indent=2)},
        "Answer in the caller's language",
    )
    chat = Script()
    with github_standin() as standin, receiver(chat) as chat_url:
        event = next(e for e in webhook_examples()["pull_request"] if e["action"] == "opened")
        (work / "event.json").write_text(json.dumps(event))
        actions = {
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_REPOSITORY": standin.repo,
            "GITHUB_API_URL": standin.url,
            "GITHUB_EVENT_PATH": str(work / "event.json"),
        }
        out = io.StringIO()
        assert (
            main(
                ["plan", str(remote.work), "--base", "main", "--format", "markdown", "--comment"],
                environ=actions,
                out=out,
            )
            == 0
        )
        summary = out.getvalue()
        [comment] = standin.comments[event["pull_request"]["number"]]
        remote.git("checkout", "-q", "main")
        remote.git("merge", "-q", "--squash", "language")  # GitHub's "Squash and merge"
        remote.git("commit", "-q", "-m", "Answer in the caller's language (#2)")
        merged = remote.sha()
        env = {
            "GITOPS_FLOW_GITHUB_API": standin.url,
            "GITOPS_FLOW_GITHUB_TOKEN": TOKEN,
            "GITOPS_FLOW_GITHUB_REPO": "acme/flows",
            "GITOPS_FLOW_PUBLIC_URL": PUBLIC,
            "GITOPS_FLOW_NOTIFY_URL": chat_url + "/services/T0/B0/x",
            "GITOPS_FLOW_NOTIFY_FORMAT": "slack",
            "GITOPS_FLOW_NOTIFY_EVENTS": "failed,deployed,tag-moved",
        }
        with serve_process(remote, work, env=env) as server:
            remote.push()
            server.reconcile()
            wait_until(
                lambda: any(s["sha"] == merged for s in standin.statuses) and len(chat.requests) >= 3, what="out"
            )
            remote.tag("stable", merged)
            remote.push_tags()
            server.reconcile()
            wait_until(
                lambda: any(s["context"] == "gitops-flow/stable" and s["sha"] == merged for s in standin.statuses),
                what="the promotion",
            )
            wait_until(lambda: server.client.get("/readyz").json()["github"]["pending"] == 0, what="drained")
        latest: dict[str, dict[str, Any]] = {}
        for status in standin.statuses:
            if status["sha"] == merged:
                latest[status["context"]] = status
        shoot("status", statuses_page(list(latest.values()), merged), 150)
        shoot("deployments", deployments_page(standin.deployments, standin.deployment_statuses), 190)
        shoot("summary", markdown_page("Job summary: flows", summary), 560)
        shoot("comment", markdown_page("gitops-flow commented", comment["body"]), 560)
        failed = next(json.loads(b) for _, h, b in chat.requests if h["x-gitops-flow-event"] == "failed")
        shoot("notification", slack_page(failed), 190)
        (HERE / "artefacts.json").write_text(
            json.dumps(
                {
                    "statuses": list(latest.values()),
                    "notification": failed,
                    "deployments": [
                        {k: d[k] for k in ("environment", "sha", "description", "production_environment")}
                        for d in standin.deployments
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
        if standin.violations:
            sys.exit(f"requests outside GitHub's description: {standin.violations}")


if __name__ == "__main__":
    run()

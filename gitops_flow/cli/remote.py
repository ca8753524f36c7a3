"""The command line's commands that ask a running server: versions, history, status, abort and resume. Tokens come
from the environment only (a token on a command line is visible to every local user)."""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO, cast

import orjson

from gitops_flow.config import Settings
from gitops_flow.exceptions import UsageError
from gitops_flow.stores.events import Stepped, step_text

EXIT_OK = 0
_PAGE = {"versions": 500, "history": 1000}  # the most a server answers on one page
_ENTRIES = {"versions": "versions", "history": "events"}  # where a page of each view lists its entries


def versions(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    data = _pages(settings.server, "versions", args.limit, _token(settings))
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode(), file=out)
        return EXIT_OK
    source = data["source"]
    print(
        f"{source['url']} ({source['branch']})" + (f": {source['last_error']}" if source["last_error"] else ""),
        file=out,
    )
    for version in data["versions"]:
        mark = "*" if version["live"] else " "
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(version["time"]))
        first = version["message"].splitlines()[0] if version["message"] else ""
        print(f"{mark} {version['sha'][:12]} {version['status']:<8} {when} {version['author']:<16} {first}", file=out)
        _print_problems(version["problems"], out)
        for name, problems in version.get("failed", {}).items():
            carried = version.get("carried", {}).get(name)
            print(f"    {name} failed, " + (f"serving {carried[:12]}" if carried else "not served"), file=out)
            _print_problems(problems, out, indent="      ")
    if data["next"] is not None:
        print(f"(more: --limit {args.limit * 2})", file=out)
    return EXIT_OK


def _print_problems(problems: Sequence[Mapping[str, Any]], out: TextIO, indent: str = "    ") -> None:
    for problem in problems:
        print(f"{indent}{problem['file']}:{problem['line'] or ''} {problem['code']}: {problem['message']}", file=out)


def history(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    data = _pages(settings.server, "history", args.limit, _token(settings))
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode(), file=out)
        return EXIT_OK
    for event in data["events"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["time"]))
        author = event.get("author") or ""
        sha = (event.get("sha") or "(hidden)")[:12]
        print(f"{when} {event['event']:<11} {sha:<12} {author:<16} {event_line(event)}", file=out)
        print(f"    by {event.get('trigger') or 'unknown'}", file=out)
        _print_problems(event.get("problems", []), out)
    if data["next"] is not None:
        print(f"(more: --limit {args.limit * 2})", file=out)
    return EXIT_OK


def event_line(event: Mapping[str, Any]) -> str:
    """One line on what a deploy event was about: the commit's message and flows, or the ref and figures."""
    kind = event["event"]
    if kind == "tag-moved":
        before, after = event.get("before"), event.get("after")
        return f"tag {event['ref']}: {before[:12] if before else '(new)'} -> {after[:12] if after else '(deleted)'}"
    if kind in ("aborted", "resumed"):
        figures = f" ({event['requests']} requests)" if "requests" in event else ""
        why = f": {event['reason']}" if event.get("reason") else ""
        return f"{event.get('flow', '?')} on {event['ref']}{why}{figures}"
    if kind == "stepped":
        return f"{event.get('flow', '?')} on {event['ref']}: {step_text(cast(Stepped, event))}"
    if kind == "failed" and event.get("flow"):
        serving = event.get("serving")
        return f"{event['flow']} failed, " + (f"serving {serving[:12]}" if serving else "not served")
    text = event.get("message") or event.get("detail") or ""
    if event.get("restores"):
        text += f" (serves {event['restores'][:12]} again)"
    if event.get("changed"):
        text += f" [{', '.join(event['changed'])}]"
    if event.get("failed_flows"):
        text += f" (failed: {', '.join(event['failed_flows'])})"
    return text


def _token(settings: Settings) -> str | None:
    """The token the views are read with: the read token, else the admin token (both from the environment only)."""
    token = settings.read_token or settings.admin_token
    return token.get_secret_value() if token is not None else None


def _pages(server: str, view: str, limit: int, token: str | None) -> dict[str, Any]:
    """Up to ``limit`` entries of a paginated view (``versions`` or ``history``), following each page's ``next``:
    the first page's answer with the entries of every page joined, and the ``next`` of the last page read."""
    query: dict[str, Any] = {"limit": min(limit, _PAGE[view])}
    data: dict[str, Any] = {}
    entries: list[Any] = []
    while True:
        page = _get(server, f"/{view}?" + urllib.parse.urlencode(query), token)
        data = data or page
        entries += page[_ENTRIES[view]][: limit - len(entries)]
        following = page.get("next")
        if following is None or len(entries) >= limit:
            break
        query = {"before": following["before"], "limit": min(limit - len(entries), _PAGE[view])}
    return {**data, _ENTRIES[view]: entries, "next": following}


def status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """The console's overview in a terminal, read with the token from the environment, as the other views are."""
    from gitops_flow.console import terminal

    data = _get(settings.server, "/ui/overview.json", _token(settings))
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode(), file=out)
        return EXIT_OK
    print(terminal.render(data, now=time.time(), server=settings.server), file=out)
    return EXIT_OK


def experiment(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """A flow's experiment report (GET /flows/FLOW/experiment), read with the token from the environment."""
    data = _get(settings.server, f"/flows/{urllib.parse.quote(args.flow, safe='')}/experiment", _token(settings))
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode(), file=out)
        return EXIT_OK
    print(f"{data['flow']}: experiment {data['experiment']} (last {data['window_seconds']:.0f} s of traffic)", file=out)
    for arm in data["arms"]:
        p50, p99 = (f"{arm[k]:.0f} ms" if arm[k] is not None else "-" for k in ("p50_ms", "p99_ms"))
        print(
            f"  {arm['role']:<7} {arm['ref']} {str(arm['version'])[:12]} {arm['share'] * 100:.0f}%:"
            f" {arm['requests']} requests, {arm['errors']} errors, p50 {p50}, p99 {p99}",
            file=out,
        )
        if "tokens" in arm:
            print(f"    {cost_text(arm)}", file=out)
        for key, shown in arm["feedback"].items():
            mean = f"{shown['mean']:.3f}" if shown["mean"] is not None else "-"
            interval = shown["interval"]
            within = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
            print(f"    {key}: {shown['count']} scores, mean {mean}{within}", file=out)
    for verdict in data["verdicts"]:
        print(verdict_line(verdict, data["min_sample"]), file=out)
    for arm in data.get("shadows", []):
        print(shadow_line(arm), file=out)
    return EXIT_OK


def cost_text(arm: Mapping[str, Any]) -> str:
    """``1200 tokens in, 300 out, $0.0004 (no price for: local-llama)``."""
    tokens, cost = arm["tokens"], arm["cost"]
    usd = f"${cost['usd']:.4f}" if cost["usd"] is not None else "cost unknown"
    unpriced = f" (no price for: {', '.join(cost['unpriced'])})" if cost["unpriced"] else ""
    return f"{tokens['input']} tokens in, {tokens['output']} out, {usd}{unpriced}"


def shadow_line(arm: Mapping[str, Any]) -> str:
    """``shadow  twin 3f9c2e1a7b2d 30% of stable: 58 runs, 0 failed, 2 dropped (rate 2)`` and its score's line."""
    dropped = {reason: n for reason, n in arm.get("dropped", {}).items() if n}
    why = f" ({', '.join(f'{r} {n}' for r, n in dropped.items())})" if dropped else ""
    line = (
        f"  shadow  {arm['ref']} {str(arm['version'] or '-')[:12]} {arm['share'] * 100:.0f}% of {arm['of']}:"
        f" {arm.get('runs', 0)} runs, {arm.get('failed', 0)} failed, {sum(dropped.values())} dropped{why}"
    )
    score = arm["score"]
    mean = f"{score['mean']:.3f}" if score["mean"] is not None else "-"
    interval = score["interval"]
    within = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    line += f"\n    {arm['scorer']}: {score['count']} scores, mean {mean}{within}"
    if arm.get("unscored"):
        line += f"\n    unscored: {arm['unscored']}"
    return line


def verdict_line(verdict: Mapping[str, Any], min_sample: int) -> str:
    """``liked: canary beats stable with probability 0.999 (lift +98.0%); winner canary``."""
    key, canary, primary = verdict["key"], verdict["canary"], verdict["primary"]
    if verdict["chance_to_beat"] is None:
        return f"  {key}: {canary} against {primary}: not enough scores yet {verdict['counts']}"
    lift = verdict["expected_lift"]
    shown = f" (lift {lift * 100:+.1f}%)" if lift is not None else ""
    line = f"  {key}: {canary} beats {primary} with probability {verdict['chance_to_beat']:.3f}{shown}; "
    if verdict["winner"] is not None:
        return line + f"winner {verdict['winner']} ({verdict['probability']:.3f})"
    if not verdict["min_sample_reached"]:
        return line + f"no winner yet: {min(verdict['counts'])} of {min_sample} scores in the smaller arm"
    return line + f"no confident winner (leader {verdict['leader']} at {verdict['probability']:.3f})"


def abort(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    return _operate(args, settings, out, "abort")


def resume(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    return _operate(args, settings, out, "resume")


def _operate(args: argparse.Namespace, settings: Settings, out: TextIO, action: str) -> int:
    """Abort or resume a flow's canary on a running server, with the admin token from the environment (a token on a
    command line is visible to every local user)."""
    if settings.admin_token is None:
        raise UsageError(f"{action} needs the server's admin token in GITOPS_FLOW_ADMIN_TOKEN")
    body = {"flow": args.flow, **({"ref": args.ref} if args.ref else {})}
    data = _request(settings.server, f"/admin/{action}", body, settings.admin_token.get_secret_value())
    verb = {"abort": "aborted", "resume": "resumed"}[action]
    for done in data["done"]:
        what = verb if done["changed"] else f"already {verb}" if action == "abort" else "was not aborted"
        print(f"{done['flow']} on {done['ref']} ({done['sha'][:12]}): {what}", file=out)
    return EXIT_OK


def _get(server: str, path: str, token: str | None = None) -> Any:
    """GET a JSON view of a running server; an unreachable server is a clear error, not a traceback."""
    return _request(server, path, token=token)


def _request(server: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """GET (or, with a body, POST) a JSON endpoint of a running server; errors are clear, never a traceback."""
    url = server.rstrip("/") + path
    headers = {"authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["content-type"] = orjson.dumps(body), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read())["error"]["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message = ""
        hint = " (set GITOPS_FLOW_READ_TOKEN)" if exc.code == 401 and body is None else ""
        raise UsageError(f"{url} answered {exc.code}" + (f": {message}{hint}" if message else "")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach the server at {server}: {reason}") from None
    except orjson.JSONDecodeError:
        raise UsageError(f"{url} did not answer JSON; is it a gitops-flow server?") from None

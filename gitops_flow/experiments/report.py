"""The experiment report of a flow: per arm (each ref and version serving it now) its traffic and feedback, and per
feedback key a verdict on whether the canary beats the primary (posterior.py does the statistics).

The report is keyed by its arms' versions: a new version on any ref starts a new experiment, whose scores are only
those given on runs of the versions serving now. Scores of pinned requests are left out (the client chose the
version, not the experiment), and a user counts once per arm and key (their latest score; scores.py keeps one per
slot). Traffic figures are this process's recent window (recent.py); scores are the store's, shared by every
worker and replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_flow.delivery.routing_table import Route, Shadowed, Target
from gitops_flow.observability.recent import Figures
from gitops_flow.stores.base import Record


@dataclass(frozen=True, slots=True)
class Judging:
    """When a verdict names a winner: each arm has ``min_sample`` scores of the key, and the leader's chance to be
    better is at least ``confidence``."""

    min_sample: int = 100
    confidence: float = 0.95


def arms(route: Route) -> list[Target]:
    """The refs that serve the flow now with a share of its traffic: the primary first."""
    live = [target for _, target in route.live]
    primary = route.primary or (live[0] if live else None)
    return sorted(live, key=lambda target: target is not primary)


def experiment_id(serving: Sequence[Target]) -> str:
    """A name for the experiment that the arms' refs and versions make: a new version is a new experiment."""
    text = ",".join(f"{t.ref}@{t.serving}" for t in serving)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


Tokens = Mapping[tuple[str, str | None], Mapping[str, Sequence[int]]]  # (sha, ref) -> model -> [input, output]
Prices = Mapping[str, tuple[float, float]]  # model -> USD per million input tokens, per million output tokens


def report(
    flow: str,
    route: Route,
    figures: Sequence[Figures],
    scores: Sequence[Record],
    judging: Judging,
    tokens: Tokens | None = None,
    prices: Prices | None = None,
    shadows: Sequence[tuple[Shadowed, Mapping[str, Any]]] = (),
) -> dict[str, Any]:
    """The report as /flows/<name>/experiment answers it; ``tokens`` per arm and model, priced by ``prices``;
    ``shadows`` the route's shadows with this process's counts of each (experiments/shadow.ShadowFigures.shown)."""
    from gitops_flow.experiments import (
        posterior,  # numpy and scipy: loaded by the first report, not by every server's start
    )

    serving = arms(route)
    below, shares = 0.0, {}
    for bound, target in route.live:
        shares[id(target)] = bound - below
        below = bound
    by_arm: dict[tuple[str, str | None], dict[str, list[float]]] = {}
    for score in scores:
        if score.get("counted") is False:
            continue
        keyed = by_arm.setdefault((str(score["version"]), score.get("ref")), {})
        keyed.setdefault(str(score["key"]), []).append(float(score["score"]))
    keys = sorted({key for target in serving for key in by_arm.get(_arm(target), {})})
    kinds = {key: posterior.binary([s for t in serving for s in by_arm.get(_arm(t), {}).get(key, [])]) for key in keys}
    shown = []
    for index, target in enumerate(serving):
        seen = [f for f in figures if f.sha == target.serving and f.ref == target.ref]
        requests, errors = sum(f.requests for f in seen), sum(f.errors for f in seen)
        biggest = max(seen, key=lambda f: f.requests, default=None)
        feedback = {}
        for key in keys:
            summary = posterior.summarize(by_arm.get(_arm(target), {}).get(key, []), is_binary=kinds[key])
            interval = [summary.low, summary.high] if summary.low is not None else None
            feedback[key] = {"count": summary.count, "mean": summary.mean, "interval": interval}
        shown.append(
            {
                "ref": target.ref,
                "version": target.serving,
                "role": "primary" if index == 0 else "canary",
                "share": round(shares.get(id(target), 0.0), 6),
                "requests": requests,
                "errors": errors,
                "error_rate": errors / requests if requests else 0.0,
                "p50_ms": biggest.p50_ms if biggest else None,
                "p99_ms": biggest.p99_ms if biggest else None,
                **_spending((tokens or {}).get(_arm(target), {}), prices or {}),
                "feedback": feedback,
            }
        )
    verdicts = []
    if serving:
        baseline = serving[0]
        for challenger in serving[1:]:
            for key in keys:
                verdicts.append(_verdict(key, kinds[key], baseline, challenger, by_arm, judging))
    return {
        "flow": flow,
        "experiment": experiment_id(serving),
        "arms": shown,
        "verdicts": verdicts,
        "min_sample": judging.min_sample,
        "confidence": judging.confidence,
        "window_seconds": max((f.seconds for f in figures), default=0.0),
        "shadows": [_shadow(shadowed, counts, scores) for shadowed, counts in shadows],
    }


def _shadow(shadowed: Shadowed, counts: Mapping[str, Any], scores: Sequence[Record]) -> dict[str, Any]:
    """A shadow arm: the candidate beside the ref it shadows, its runs (this process's) and its scores (the
    store's, on the candidate's build and the source's build serving now)."""
    from gitops_flow.experiments import posterior
    from gitops_flow.experiments.shadow import score_key

    candidate, source, rule = shadowed.candidate, shadowed.source, shadowed.rule
    key = score_key(rule.scorer)
    values = [
        float(s["score"])
        for s in scores
        if s.get("shadow")
        and s.get("key") == key
        and s.get("version") == candidate.serving
        and s.get("ref") == candidate.ref
        and s.get("source_version") == source.serving
    ]
    summary = posterior.summarize(values, is_binary=posterior.binary(values))
    return {
        "ref": candidate.ref,
        "version": candidate.serving,
        "state": candidate.state,
        "role": "shadow",
        "of": source.ref,
        "of_version": source.serving,
        "share": rule.share / 100.0,
        "scorer": rule.scorer,
        "budget": rule.budget.model_dump(),
        **counts,
        "score": {
            "key": key,
            "count": summary.count,
            "mean": summary.mean,
            "interval": [summary.low, summary.high] if summary.low is not None else None,
        },
    }


def _spending(by_model: Mapping[str, Sequence[int]], prices: Prices) -> dict[str, Any]:
    """An arm's tokens and what they cost: ``usd`` sums the models with a price; a model without one is named in
    ``unpriced`` (its cost is not guessed), and ``usd`` is None when no model that spent tokens has a price."""
    given = sum(t[0] for t in by_model.values())
    taken = sum(t[1] for t in by_model.values())
    usd, priced, unpriced = 0.0, False, []
    for model, (input_tokens, output_tokens) in sorted(by_model.items()):
        if not input_tokens and not output_tokens:
            continue
        price = prices.get(model)
        if price is None:
            unpriced.append(model or "(unnamed)")
            continue
        priced = True
        usd += input_tokens * price[0] / 1e6 + output_tokens * price[1] / 1e6
    return {
        "tokens": {"input": given, "output": taken},
        "cost": {"usd": round(usd, 6) if priced else None, "unpriced": unpriced},
    }


def _arm(target: Target) -> tuple[str, str | None]:
    return str(target.serving), target.ref


def _verdict(
    key: str,
    is_binary: bool,
    baseline: Target,
    challenger: Target,
    by_arm: dict[tuple[str, str | None], dict[str, list[float]]],
    judging: Judging,
) -> dict[str, Any]:
    from gitops_flow.experiments import posterior

    a = by_arm.get(_arm(baseline), {}).get(key, [])
    b = by_arm.get(_arm(challenger), {}).get(key, [])
    enough = min(len(a), len(b)) >= judging.min_sample
    compared = posterior.compare(a, b, is_binary=is_binary)
    verdict: dict[str, Any] = {
        "key": key,
        "model": "beta-binomial" if is_binary else "normal",
        "primary": baseline.ref,
        "canary": challenger.ref,
        "counts": [len(a), len(b)],
        "min_sample_reached": enough,
        "chance_to_beat": None,
        "expected_lift": None,
        "difference": None,
        "leader": None,
        "winner": None,
        "probability": None,
    }
    if compared is None:
        return verdict
    chance = compared.chance_to_beat
    leader, probability = (challenger.ref, chance) if chance >= 0.5 else (baseline.ref, 1 - chance)
    verdict.update(
        chance_to_beat=round(chance, 4),
        expected_lift=round(compared.expected_lift, 4) if compared.expected_lift is not None else None,
        difference=[round(compared.low, 6), round(compared.high, 6)],
        leader=leader,
        probability=round(probability, 4),
        winner=leader if enough and probability >= judging.confidence else None,
    )
    return verdict

"""The canary guard's feedback check (the routing file's ``analysis.feedback``): whether the canary does worse than its
primary on a feedback key, by the experiment report's statistics (posterior.py), on the scores of the versions
serving now (a new version starts anew), each user counted once per arm, pinned requests' scores left out."""

from __future__ import annotations

from collections.abc import Sequence

import anyio.to_thread

from gitops_flow.delivery.routing_table import Target
from gitops_flow.flow.routing import FeedbackGate
from gitops_flow.stores.base import FeedbackStore, Record


class FeedbackJudge:
    """Judges a canary against its primary on the scores the store keeps (the guard calls it once a tick)."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store

    async def __call__(self, flow: str, canary: Target, primary: Target, gate: FeedbackGate) -> str | None:
        """Why the canary is aborted on ``gate.key`` (each arm has ``gate.min_sample`` scores and the primary beats
        it with at least ``gate.min_probability``), or None while it is not worse or too little is known."""
        scores = await self.store.scores(flow)
        verdict: str | None = await anyio.to_thread.run_sync(worse, scores, canary, primary, gate)
        return verdict


def worse(scores: Sequence[Record], canary: Target, primary: Target, gate: FeedbackGate) -> str | None:
    """The reason the canary does worse than the primary on ``gate.key``, or None (see FeedbackJudge)."""
    from gitops_flow.experiments import posterior  # numpy and scipy: loaded once a feedback gate is configured

    ours, theirs = _arm(scores, canary, gate.key), _arm(scores, primary, gate.key)
    if min(len(ours), len(theirs)) < gate.min_sample:
        return None
    binary = posterior.binary([*ours, *theirs])
    compared = posterior.compare(ours, theirs, is_binary=binary)  # the primary as the challenger: P(primary better)
    if compared is None or compared.chance_to_beat < gate.min_probability:
        return None
    mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    return (
        f"feedback {gate.key!r}: the primary is better with probability {compared.chance_to_beat:.1%}"
        f" (at least {gate.min_probability:.0%} aborts): mean {mean_ours:.3g} on the canary over {len(ours)} scores,"
        f" {mean_theirs:.3g} on the primary over {len(theirs)}"
    )


def _arm(scores: Sequence[Record], target: Target, key: str) -> list[float]:
    return [
        float(score["score"])
        for score in scores
        if score.get("key") == key
        and score.get("version") == target.serving
        and score.get("ref") == target.ref
        and score.get("counted") is not False
    ]

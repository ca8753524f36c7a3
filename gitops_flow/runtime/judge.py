"""The judge of an evaluation: a real chat model (the operator's, GITOPS_FLOW_EVAL_JUDGE_MODEL) scores an answer
from 0 to 1 against a rubric committed in the repository. Built as a small flow of its own (prompt -> ChatModel ->
text), so the model is held to the same allowlist and secret policy as any flow's."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gitops_flow.components import credentials
from gitops_flow.components.registry import ComponentRegistry
from gitops_flow.exceptions import BuildError
from gitops_flow.flow.document import FlowSpec
from gitops_flow.runtime.compiler import BuiltFlow, build_flow, runnable_config
from gitops_flow.runtime.executor import run_lean
from gitops_flow.security.policy import SecretPolicy
from gitops_flow.security.providers import PROVIDER_KEYS

PROMPT = (
    "You grade an assistant's answer against a rubric.\n\nRubric:\n{rubric}\n\nQuestion:\n{question}\n\n"
    "Answer:\n{answer}\n\nReply with one number from 0 to 1 and nothing else: how well the answer meets the rubric."
)
MAX_TEXT = 8000  # characters of a question, an answer or a rubric the judge is shown
CALL_TIMEOUT_S = 60.0
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class JudgeUnavailable(Exception):
    """No judge can run: no model is configured, its key is not set, or it does not build; the message says which."""


@dataclass(slots=True)
class Judge:
    """Scores answers with ``built`` (the judge flow), at most ``calls_left`` times (Settings.eval_judge_calls)."""

    built: BuiltFlow
    calls_left: int
    errors: list[str] = field(default_factory=list)

    @classmethod
    def configured(
        cls,
        model: str,
        environ: Mapping[str, str],
        registry: ComponentRegistry,
        *,
        base_url: str | None,
        calls: int,
        policy: SecretPolicy,
    ) -> Judge:
        """The judge of ``model`` (``provider:name``), its key read from the provider's variable in ``environ`` and
        sent only where ``policy`` lets it go (a ``base_url`` must be allowed, as in a flow). Raises
        JudgeUnavailable, saying why, when there is none to be had."""
        if not model:
            raise JudgeUnavailable(
                "a judge needs a model (GITOPS_FLOW_EVAL_JUDGE_MODEL); eval answers with fakes, and a fake cannot judge"
            )
        provider = model.split(":", 1)[0]
        key = next((name for name in PROVIDER_KEYS.get(provider, ()) if environ.get(name)), None)
        if key is None:
            names = " or ".join(PROVIDER_KEYS.get(provider, ())) or "a key variable"
            raise JudgeUnavailable(f"the judge model {model} needs its key ({names}) in the environment")
        params: dict[str, Any] = {"model": model, "api_key": {"$env": key}, "temperature": 0, "max_tokens": 16}
        if base_url:
            params["base_url"] = base_url
        spec = FlowSpec.model_validate(
            {
                "version": 1,
                "name": "eval-judge",
                "nodes": [
                    {"id": "prompt", "component": "PromptTemplate", "params": {"template": PROMPT}},
                    {"id": "judge", "component": "ChatModel", "params": params},
                    {"id": "score", "component": "StrOutputParser"},
                ],
                "edges": [{"source": "prompt", "target": "judge"}, {"source": "judge", "target": "score"}],
            }
        )
        refused = credentials.check(registry, registry.get("ChatModel"), params, ("judge",), policy)
        if any(p.severity == "error" for p in refused):
            raise JudgeUnavailable(f"the judge model {model} is refused: {refused[0].message}")
        try:
            built = build_flow(spec, registry, secrets={key: environ[key]})
        except BuildError as exc:
            raise JudgeUnavailable(f"the judge model {model} does not build: {exc}") from None
        return cls(built, calls)

    def score(self, rubric: str, question: Any, answer: Any) -> float | None:
        """The judge's score of ``answer``, or None when it could not give one (its budget spent, an error, a reply
        without a number; ``errors`` keeps the first few reasons). Blocking."""
        if self.calls_left <= 0:
            self._note("the judge's budget of calls (GITOPS_FLOW_EVAL_JUDGE_CALLS) is spent")
            return None
        self.calls_left -= 1
        value = asked(rubric, question, answer)
        config = runnable_config({}, "eval-judge", uuid.uuid4(), {})
        try:
            reply = asyncio.run(asyncio.wait_for(run_lean(self.built, True).ainvoke(value, config), CALL_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - a provider's failure is a case the judge did not score
            self._note(f"the judge failed: {type(exc).__name__}")
            return None
        found = reading(reply)
        if found is None:
            self._note(f"the judge's reply has no score: {str(reply)[:80]!r}")
        return found

    def _note(self, reason: str) -> None:
        if reason not in self.errors and len(self.errors) < 5:
            self.errors.append(reason)


def asked(rubric: str, question: Any, answer: Any, reference: Any = None) -> dict[str, str]:
    """What the judge flow is given: the rubric (with a ``reference`` answer to compare with, when there is one: a
    shadow's primary answer), the question and the answer, each cut to MAX_TEXT characters."""
    if reference is not None:
        rubric = f"{_cut(rubric)}\n\nA reference answer, from the version serving now:\n{_cut(reference)}"
    return {"rubric": _cut(rubric) if reference is None else rubric, "question": _cut(question), "answer": _cut(answer)}


def reading(reply: Any) -> float | None:
    """The score in a judge's reply (its first number, within 0 and 1), or None when it holds none."""
    found = _NUMBER.search(str(reply))
    return min(max(float(found.group()), 0.0), 1.0) if found is not None else None


def _cut(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text[:MAX_TEXT]

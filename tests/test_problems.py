"""Problems: how many one file may report, and how long each may be."""

from __future__ import annotations

from gitops_flow.problems import MAX_TEXT, Problem, capped


def many(count: int, code: str = "bad", severity: str = "error") -> list[Problem]:
    return [Problem(code=code, message=f"number {n}", file="flows/a.json", severity=severity) for n in range(count)]  # type: ignore[arg-type]


def test_a_short_list_is_kept_as_it_is() -> None:
    problems = many(5)
    assert capped(problems, 5) == problems
    assert capped([], 5) == []


def test_past_the_limit_one_problem_counts_the_rest() -> None:
    kept = capped(many(1234), 50)
    assert kept[:50] == many(50)
    assert kept[50] == Problem(
        code="too-many-problems",
        message="1,184 more problems are not listed; fix the ones above and validate again",
        file="flows/a.json",
    )
    assert len(kept) == 51


def test_the_count_is_as_severe_as_the_worst_problem_it_stands_for() -> None:
    assert capped(many(60, severity="warning"), 50)[-1].severity == "warning"  # a file of warnings still passes
    assert capped(many(60, severity="notice"), 50)[-1].severity == "notice"
    mixed = many(50, severity="notice") + many(3, severity="warning") + many(2, severity="error")
    assert capped(mixed, 50)[-1].severity == "error"


def test_capping_again_adds_to_the_count_it_already_had() -> None:
    """The server caps a flow's validation, then again once its tests' failures are added."""
    first = capped(many(70), 50)
    again = capped([*first, *many(30, code="test-failed")], 50)
    assert again[:50] == many(50)
    assert again[50].code == "too-many-problems"
    assert again[50].message.startswith("50 more problems")  # the 20 left out first, and the 30 failures
    assert capped(again, 50) == again


def test_long_messages_and_paths_are_cut() -> None:
    long = Problem(code="unknown-key", message="unknown key " + "k" * 10_000, path="$." + "k" * 10_000)
    (cut,) = capped([long], 50)
    assert len(cut.message) == len(cut.path) == MAX_TEXT
    assert cut.message.startswith("unknown key kkk") and cut.message.endswith("…")

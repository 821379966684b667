"""The guided tour's steps and checks, without Streamlit."""

from __future__ import annotations

import pytest

from latency_lab.core.toggles import ARTICLE_ORDER, Toggles
from latency_lab.dashboard import tour_steps


def test_steps_follow_the_article_one_switch_at_a_time() -> None:
    assert [step.toggle for step in tour_steps.STEPS[1:]] == list(ARTICLE_ORDER)
    assert (
        tour_steps.STEPS[0].config == Toggles().label()
        and tour_steps.STEPS[0].previous_config is None
    )
    assert tour_steps.STEPS[-1].config == Toggles.all_on().label()
    for before, step in zip(tour_steps.STEPS, tour_steps.STEPS[1:], strict=False):
        assert step.previous_config == before.config
        assert step.code, f"step {step.number} shows no code"


def test_a_check_reads_before_and_after() -> None:
    statements = tour_steps.STEPS[1].checks[0]

    passed = tour_steps.evaluate(statements, {"statements": 301.0}, {"statements": 1.0})
    failed = tour_steps.evaluate(statements, {"statements": 301.0}, {"statements": 120.0})
    waiting = tour_steps.evaluate(statements, {"statements": 301.0}, None)

    assert (passed.text, passed.mark) == ("statements per list request: 301 \u2192 1", "\u2713")
    assert failed.passed is False and failed.mark == "\u2717"
    assert waiting.passed is None and "not measured yet" in waiting.text


def test_a_comparison_waits_for_the_step_before() -> None:
    p50 = tour_steps.STEPS[5].checks[1]

    result = tour_steps.evaluate(p50, None, {"p50_ms": 1.6})

    assert result.passed is None
    assert result.text == "p50 latency: 1.6 ms (measure the step before to compare)"


def _unresolved(target: str) -> str | None:
    """Why the tour cannot show ``module:qualname``, or None when it can."""
    from latency_lab.dashboard.data import source_of

    shown = source_of(target)
    name = target.partition(":")[2].rsplit(".", 1)[-1]
    if shown.startswith(f"# The source of {target} is not available"):
        return shown
    if f"def {name}(" not in shown and f"class {name}" not in shown:
        return f"the source shown for {target} does not define {name}"
    return None


@pytest.mark.parametrize(
    "step", tour_steps.STEPS, ids=[f"step{step.number}" for step in tour_steps.STEPS]
)
def test_every_code_reference_of_the_step_resolves(step: tour_steps.TourStep) -> None:
    """What the page shows under "The code this switch selects" is real code, for every step:
    the same function the page calls (``latency_lab.dashboard.data.source_of``), every target."""
    assert step.code, f"step {step.number} names no code"
    problems = [problem for target in step.code if (problem := _unresolved(target))]
    assert not problems, f"step {step.number} ({step.title}) shows no code for: {problems}"

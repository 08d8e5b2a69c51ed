"""Unit tests of the example plugin's exact_match metric (needs only the harness core)."""

from __future__ import annotations

import pytest

from harness.api import Example, NullProgress, ScoreInput
from harness_plugin_example.exact_match import ExactMatch, exact_match, harness_register_metrics, normalize


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("  paris. ", "Paris", 1.0),
        ("The answer: 42!", "the answer 42", 1.0),
        ("New   York", "new york", 1.0),
        ("«Bonjour»", "bonjour", 1.0),
        ("Paris, France", "Paris", 0.0),
        ("", "", 0.0),  # an empty prediction scores 0, never raises
        ("...", "", 0.0),
    ],
)
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert exact_match(prediction, reference) == expected


def test_normalize() -> None:
    assert normalize("  Hello,\tWORLD!! ") == "hello world"


def test_metric_scores_in_order() -> None:
    ex = Example.make("q", "", "yes")
    inputs = [ScoreInput("a", "Yes.", "yes", ex), ScoreInput("b", "no", "yes", ex), ScoreInput("c", "", "yes", ex)]
    metric = ExactMatch({})
    scores = metric.score(inputs, NullProgress())
    assert [s.value for s in scores] == [1.0, 0.0, 0.0]
    assert metric.aggregate(scores) == pytest.approx(1 / 3)


def test_registers_one_metric_class() -> None:
    registered = []
    harness_register_metrics(register=registered.append)
    assert registered == [ExactMatch]
    assert ExactMatch.kind == "metric" and ExactMatch.name == "exact_match"

"""``exact_match``: normalised exact match between prediction and reference.

Both texts are normalised the same way: lowercased, every punctuation character
(Unicode category P*) removed, runs of whitespace collapsed to one space, ends
stripped. A prediction scores 1.0 when its normalised form equals the reference's,
else 0.0; an empty prediction always scores 0.0. The cell's number is the mean, the
fraction of exact answers.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

from harness import hookimpl
from harness.api import ExampleScore, Metric, Progress, ScoreInput


def normalize(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace."""
    no_punct = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(no_punct.split())


def exact_match(prediction: str, reference: str) -> float:
    pred = normalize(prediction)
    if not pred:
        return 0.0
    return 1.0 if pred == normalize(reference) else 0.0


class ExactMatch(Metric):
    name = "exact_match"
    version = "1"  # bump when normalize() changes: cached scores are then recomputed
    label = "Exact match"
    description = "1.0 when prediction and reference match after lowercasing and removing punctuation/whitespace"
    higher_is_better = True
    options = {}  # no settings; declare harness.api.Option values here to accept some

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        advance = progress.task("exact match", len(inputs))
        out = [ExampleScore(exact_match(i.prediction, i.reference)) for i in inputs]
        advance(len(inputs))
        return out


@hookimpl
def harness_register_metrics(register: Callable[[type], None]) -> None:
    register(ExactMatch)

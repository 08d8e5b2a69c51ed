"""ROUGE-L F-measure (rouge_score), averaged over examples."""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Sequence
from typing import Any

from harness import hookimpl
from harness.api import ExampleScore, Metric, Option, Progress, ScoreInput
from harness.errors import MissingDependency


class RougeLMetric(Metric):
    """ROUGE-L F-measure of each prediction against its reference; the cell value is the mean.

    Uses ``rouge_score``'s ``RougeScorer(["rougeL"], use_stemmer=...)`` with its default
    tokenizer, which lowercases and drops every character outside ``[a-z0-9]``: text in
    other scripts (Chinese, Cyrillic, accented letters …) loses those characters, and a
    prediction with none left scores 0.
    """

    name = "rouge_l"
    label = "ROUGE-L"
    version = "1"
    description = "rouge_score ROUGE-L F-measure (Porter stemmer on by default)"
    options = {
        "use_stemmer": Option(bool, default=True, help="apply the Porter stemmer before matching"),
    }

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__(settings)
        self._scorer: Any = None

    def identity(self) -> dict[str, Any]:
        try:
            rouge_version = md.version("rouge-score")
        except md.PackageNotFoundError as exc:
            raise MissingDependency("rouge-score", "default", purpose="the ROUGE-L metric") from exc
        return {
            "name": self.name,
            "version": self.version,
            "rouge_score": rouge_version,
            "use_stemmer": self.settings["use_stemmer"],
        }

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        scorer = self._rouge()
        advance = progress.task("ROUGE-L", total=len(inputs))
        out = []
        for inp in inputs:
            result = scorer.score(target=inp.reference, prediction=inp.prediction)["rougeL"]
            out.append(ExampleScore(value=float(result.fmeasure)))
            advance()
        return out

    def _rouge(self) -> Any:
        if self._scorer is None:
            try:
                from rouge_score import rouge_scorer
            except ImportError as exc:
                raise MissingDependency("rouge-score", "default", purpose="the ROUGE-L metric") from exc
            self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=self.settings["use_stemmer"])
        return self._scorer


@hookimpl
def harness_register_metrics(register):
    register(RougeLMetric)

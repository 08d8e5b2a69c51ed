"""BLEU (sacrebleu) on the 0–1 scale: sentence BLEU per example, corpus BLEU per cell."""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Sequence
from typing import Any

from harness import hookimpl
from harness.api import ExampleScore, Metric, Option, Progress, ScoreInput
from harness.errors import MissingDependency, UserError

#: sacrebleu 2.6's tokenizers (``BLEU.TOKENIZERS``), listed here so registry.toml is checked before anything runs
TOKENIZERS = ("none", "zh", "13a", "intl", "char", "ja-mecab", "ko-mecab", "spm", "flores101", "flores200", "spBLEU-1K")
MAX_NGRAM_ORDER = 4


class BleuMetric(Metric):
    """sacrebleu BLEU against one reference, divided by 100.

    ``score`` returns the sentence BLEU of each example (effective order, exp smoothing:
    what ``sacrebleu.sentence_bleu`` gives) and, as ``stats``, its sufficient statistics
    ``(hyp_len, ref_len, correct_1..4, total_1..4)``. ``aggregate`` sums those and
    computes corpus BLEU from them, which equals ``sacrebleu.corpus_bleu(preds, [refs])``
    on the same examples. The sacrebleu signature is part of ``identity``.
    """

    name = "bleu"
    label = "BLEU"
    version = "1"
    description = "sacrebleu corpus BLEU (0–1), 13a tokenizer by default"
    options = {
        "tokenize": Option(str, default="13a", choices=TOKENIZERS, help="sacrebleu tokenizer"),
        "lowercase": Option(bool, default=False, help="lowercase hypotheses and references before scoring"),
    }

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__(settings)
        self._bleu: Any = None

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sacrebleu": _sacrebleu_version(),
            "signature": str(self._metric().get_signature()),
        }

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        bleu = self._metric()
        advance = progress.task("BLEU", total=len(inputs))
        out = []
        for inp in inputs:
            # corpus_score of one segment exposes its sufficient statistics through public fields
            seg = bleu.corpus_score([inp.prediction], [[inp.reference]])
            stats = (seg.sys_len, seg.ref_len, *seg.counts, *seg.totals)
            out.append(ExampleScore(value=self._from_stats(stats, effective_order=True), stats=stats))
            advance()
        return out

    def aggregate(self, scores: Sequence[ExampleScore]) -> float:
        if not scores:
            return float("nan")
        if any(s.stats is None for s in scores):
            raise ValueError("corpus BLEU needs the sufficient statistics of every example")
        summed = [sum(column) for column in zip(*(s.stats for s in scores))]
        return self._from_stats(summed, effective_order=False)

    def corpus_values(self, sums: Any) -> Any:
        """Corpus BLEU (0-1) per row of summed ``(hyp_len, ref_len, correct_1..4, total_1..4)``, in numpy.

        sacrebleu's ``BLEU.compute_bleu`` with ``smooth_method='exp'`` and
        ``effective_order=False`` (what :meth:`aggregate` computes), vectorised: the brevity
        penalty, the n-gram precisions up to the first order without n-grams, NIST ("exp")
        smoothing of zero matches, and 0 when nothing matches at all. Needs no sacrebleu,
        so reports compute BLEU intervals on machines without it.
        """
        import numpy as np

        sums = np.atleast_2d(np.asarray(sums, dtype=float))
        order = (sums.shape[1] - 2) // 2
        hyp, ref = sums[:, 0], sums[:, 1]
        correct, total = sums[:, 2 : 2 + order], sums[:, 2 + order : 2 + 2 * order]
        with np.errstate(all="ignore"):
            bp = np.where(hyp < ref, np.where(hyp > 0, np.exp(1.0 - ref / np.where(hyp > 0, hyp, 1.0)), 0.0), 1.0)
            valid = np.cumprod(total > 0, axis=1).astype(bool)  # orders before the first with no n-grams
            zero = (correct == 0) & valid
            smooth = 2.0 ** np.cumsum(zero, axis=1)
            safe_total = np.where(total > 0, total, 1.0)
            prec = np.where(correct > 0, 100.0 * correct / safe_total, 100.0 / (smooth * safe_total))
            prec = np.where(valid, prec, 0.0)
            logp = np.where(prec > 0, np.log(np.where(prec > 0, prec, 1.0)), -9999999999.0)
            score = bp * np.exp(logp.sum(axis=1) / order)
        score = np.where(correct.sum(axis=1) > 0, score, 0.0)
        return score / 100.0

    def _from_stats(self, stats: Sequence[float], *, effective_order: bool) -> float:
        """BLEU (0–1) from ``(hyp_len, ref_len, correct_1..4, total_1..4)``."""
        bleu = self._metric()
        n = MAX_NGRAM_ORDER
        result = bleu.compute_bleu(
            correct=list(stats[2 : 2 + n]),
            total=list(stats[2 + n : 2 + 2 * n]),
            sys_len=int(stats[0]),
            ref_len=int(stats[1]),
            smooth_method=bleu.smooth_method,
            smooth_value=bleu.smooth_value,
            effective_order=effective_order,
            max_ngram_order=n,
        )
        return result.score / 100.0

    def _metric(self) -> Any:
        """The sacrebleu BLEU object for these settings, built once."""
        if self._bleu is None:
            try:
                from sacrebleu.metrics import BLEU
            except ImportError as exc:
                raise MissingDependency("sacrebleu", "default", purpose="the BLEU metric") from exc
            tokenize = self.settings["tokenize"]
            try:
                # a cached (empty) reference set fixes nrefs:1, so the signature exists before any scoring
                self._bleu = BLEU(
                    tokenize=tokenize,
                    lowercase=self.settings["lowercase"],
                    max_ngram_order=MAX_NGRAM_ORDER,
                    references=[[""]],
                )
            except ImportError as exc:
                raise UserError(f"the '{tokenize}' tokenizer needs an extra package: {exc}", key="metrics.bleu.tokenize") from exc
        return self._bleu


def _sacrebleu_version() -> str:
    try:
        return md.version("sacrebleu")
    except md.PackageNotFoundError as exc:
        raise MissingDependency("sacrebleu", "default", purpose="the BLEU metric") from exc


@hookimpl
def harness_register_metrics(register):
    register(BleuMetric)

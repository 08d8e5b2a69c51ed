"""Tests for harness.report.data: intervals, paired tests, Holm, agreement, baseline, on recorded-results-shaped rows."""

from __future__ import annotations

import json
import time

import krippendorff
import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from harness.report import data as rd
from harness.report import stats
from harness.api import Example, ExampleScore, Metric, NullProgress, ScoreInput
from harness.errors import UserError

sacrebleu = pytest.importorskip("sacrebleu")
from harness_metrics.bleu import BleuMetric  # noqa: E402

WORDS = "the a cat dog sat ran on under mat rug red blue big small quick slow".split()


def _texts(rng: np.random.Generator, n: int, quality: float) -> list[tuple[str, str]]:
    """(prediction, reference) pairs; ``quality`` is the share of reference words kept."""
    out = []
    for _ in range(n):
        ref = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(4, 12)))]
        hyp = [w for w in ref if rng.random() < quality] + [str(w) for w in rng.choice(WORDS, size=int(rng.integers(0, 3)))]
        out.append((" ".join(hyp), " ".join(ref)))
    return out


def make_results(models=("m1", "m2"), configs=("c0", "c1", "c2"), n=20, *, quality=None, seed=0, human="likert", bleu=None):
    """Runner.results()-shaped rows: bleu (real sufficient statistics), rouge_l and a human row per cell."""
    bleu = bleu or BleuMetric()
    rng = np.random.default_rng(seed)
    quality = quality or {}
    ids = [f"ex{i:02d}" for i in range(n)]
    rows = []
    for model in models:
        for config in configs:
            q = quality.get((model, config), 0.7)
            pairs = _texts(rng, n, q)
            inputs = [ScoreInput(f"{model}/{config}/{i}", p, r, Example(ids[i], "", "", r)) for i, (p, r) in enumerate(pairs)]
            scores = bleu.score(inputs, NullProgress())
            rows.append({"model": model, "config": config, "metric": "bleu", "value": bleu.aggregate(scores), "n": n, "complete": True,
                         "error": None, "metric_key": "k", "examples": list(zip(ids, scores))})
            rouge = [ExampleScore(float(np.clip(q + rng.normal(0, 0.15), 0, 1))) for _ in ids]
            rows.append({"model": model, "config": config, "metric": "rouge_l", "value": float(np.mean([s.value for s in rouge])), "n": n,
                         "complete": True, "error": None, "metric_key": "k", "examples": list(zip(ids, rouge))})
            if human == "binary":
                h = [ExampleScore(float(rng.random() < q)) for _ in ids]
            else:
                h = [ExampleScore((int(np.clip(round(1 + 4 * q + rng.normal(0, 0.8)), 1, 5)) - 1) / 4) for _ in ids]
            rows.append({"model": model, "config": config, "metric": "human", "value": float(np.mean([s.value for s in h])), "n": n,
                         "complete": True, "error": None, "metric_key": None, "examples": list(zip(ids, h))})
    return rows


CONFIGS = [("c0", {"t": 0.0, "b": 1}), ("c1", {"t": 0.5, "b": 1}), ("c2", {"t": 1.0, "b": 1})]


def agg(metric):
    """How a metric plugin's values aggregate, as the report derives it from the recorded aggregation kind."""
    if metric is None or type(metric).aggregation() == "mean":
        return rd.MEAN
    if type(metric).aggregation() == "corpus":
        return rd.Aggregation("corpus", corpus=metric.corpus_values)
    return rd.Aggregation("custom", aggregate=metric.aggregate)


def build(rows, **kw):
    metrics = {k: agg(v) for k, v in (kw.pop("metrics", None) or {"bleu": BleuMetric(), "rouge_l": None}).items()}
    kw.setdefault("with_correlations", False)  # most tests look at intervals and tests only
    return rd.build(rows, metrics=metrics, configs=kw.pop("configs", CONFIGS), **kw)


def _bleu_of_rows(metric, matrix):
    """sacrebleu's corpus BLEU (through the metric's own aggregate) of the examples indexed per resample."""
    return lambda i: metric.aggregate([ExampleScore(0.0, tuple(matrix[i].sum(axis=0)))])


def _scipy_bootstrap(data, statistic, *, seed, paired=False, vectorized=False, n_resamples=1000):
    """scipy.stats.bootstrap's percentile interval and distribution, drawn from default_rng(seed) as the report does."""
    from scipy.stats import bootstrap

    res = bootstrap(data, statistic, n_resamples=n_resamples, paired=paired, vectorized=vectorized, method="percentile",
                    rng=np.random.default_rng(seed))
    return tuple(res.confidence_interval), res.bootstrap_distribution


# --------------------------------------------------------------------------- intervals


def test_mean_interval_is_the_stats_bootstrap_and_repeatable():
    rows = make_results()
    data = build(rows, seed=3)
    again = build(rows, seed=3)
    other = build(rows, seed=4)
    for cell in data.cells:
        if cell.metric != "rouge_l":
            continue
        values = [s.value for _, s in next(r for r in rows if (r["model"], r["config"], r["metric"]) == (cell.model, cell.config, "rouge_l"))["examples"]]
        expected, _ = _scipy_bootstrap((np.array(values),), np.mean, vectorized=True, seed=rd.cell_seed(3, "ci", cell.model, cell.config, "rouge_l"))
        assert (cell.ci_low, cell.ci_high) == pytest.approx(expected, abs=1e-12)
        assert cell.interval == "bootstrap"
        assert cell.ci_low <= cell.value <= cell.ci_high
    assert [(c.ci_low, c.ci_high) for c in data.cells] == [(c.ci_low, c.ci_high) for c in again.cells]
    assert [(c.ci_low, c.ci_high) for c in data.cells] != [(c.ci_low, c.ci_high) for c in other.cells]


def test_bleu_interval_recomputes_corpus_bleu_per_resample():
    metric = BleuMetric()
    rows = make_results(bleu=metric)
    data = build(rows, metrics={"bleu": metric, "rouge_l": None}, seed=1, n_resamples=300)
    for r in rows:
        if r["metric"] != "bleu":
            continue
        cell = data.cell(r["model"], r["config"], "bleu")
        matrix = np.array([s.stats for _, s in r["examples"]])
        # scipy draws the resamples, sacrebleu computes each one's corpus BLEU
        seed = rd.cell_seed(1, "ci", r["model"], r["config"], "bleu")
        expected, _ = _scipy_bootstrap((np.arange(len(matrix)),), _bleu_of_rows(metric, matrix), seed=seed, n_resamples=300)
        assert (cell.ci_low, cell.ci_high) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert cell.interval == "bootstrap-corpus"
        assert cell.ci_low <= cell.value <= cell.ci_high
        # corpus BLEU, not the mean of sentence BLEU
        assert cell.value == pytest.approx(r["value"])
        assert cell.value != pytest.approx(np.mean([s.value for _, s in r["examples"]]))


def test_vectorised_bleu_equals_sacrebleu_corpus_bleu():
    rng = np.random.default_rng(11)
    metric = BleuMetric()
    pairs = _texts(rng, 60, 0.5) + [("", "a b c"), ("a", "a"), ("x y", "a b c d e f")]
    inputs = [ScoreInput(str(i), p, r, Example(str(i), "", "", r)) for i, (p, r) in enumerate(pairs)]
    scores = metric.score(inputs, NullProgress())
    matrix = np.array([s.stats for s in scores])
    statistic = metric.corpus_values
    for trial in range(40):
        idx = rng.integers(0, len(pairs), size=int(rng.integers(1, 30)))
        got = statistic(matrix[idx].sum(axis=0, keepdims=True))[0]
        want = sacrebleu.corpus_bleu([pairs[i][0] for i in idx], [[pairs[i][1] for i in idx]]).score / 100
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (trial, idx)


def test_a_custom_aggregate_is_resampled_through_the_metric():
    class Median(Metric):
        name = "median"

        def aggregate(self, scores):
            return float(np.median([s.value for s in scores]))

    assert Median.aggregation() == "custom" and BleuMetric.aggregation() == "corpus"
    rows = make_results(models=("m1",), configs=("c0",))
    data = build(rows, metrics={"bleu": Median(), "rouge_l": None}, seed=2)
    cell = data.cell("m1", "c0", "bleu")
    values = [s.value for _, s in rows[0]["examples"]]
    expected = stats.bootstrap_ci(values, np.median, n_resamples=1000, seed=rd.cell_seed(2, "ci", "m1", "c0", "bleu"))
    assert (cell.ci_low, cell.ci_high) == pytest.approx(expected)


def test_a_metric_that_cannot_be_resampled_here_keeps_its_value_without_an_interval():
    rows = make_results(models=("m1",), configs=("c0", "c1"))
    data = rd.build(rows, metrics={"bleu": rd.Aggregation("unknown", note="no interval: plugin missing"), "rouge_l": rd.MEAN}, configs=CONFIGS[:2], with_correlations=False)
    cell = data.cell("m1", "c1", "bleu")
    assert cell.value is not None and cell.ci_low is None
    comp = next(c for c in data.comparisons if c.metric == "bleu")
    assert comp.p_value is None and comp.note == "no interval: plugin missing"


def test_binary_human_rate_gets_a_wilson_interval():
    from scipy.stats import binomtest

    rows = make_results(human="binary")
    data = build(rows)
    for r in rows:
        if r["metric"] != "human":
            continue
        cell = data.cell(r["model"], r["config"], "human")
        k = int(sum(s.value for _, s in r["examples"]))
        ci = binomtest(k, r["n"]).proportion_ci(confidence_level=0.95, method="wilson")
        assert cell.interval == "wilson"
        assert (cell.ci_low, cell.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_likert_human_gets_a_bootstrap_interval():
    rows = make_results(human="likert")
    data = build(rows, ratings=[rd.HumanRating("m1", "c0", "g", "a", 3.0, "likert")])
    cell = data.cell("m1", "c0", "human")
    assert cell.interval == "bootstrap" and cell.ci_low <= cell.value <= cell.ci_high


def test_missing_values_get_no_interval():
    rows = make_results(models=("m1",))
    rows[0] = {**rows[0], "value": None, "n": 3, "examples": rows[0]["examples"][:3], "error": "score failed"}
    data = build(rows)
    cell = data.cell("m1", "c0", "bleu")
    assert cell.ci_low is None and cell.ci_high is None and cell.error == "score failed"
    assert all(c.note == "the baseline has no value" for c in data.comparisons if c.metric == "bleu")


# --------------------------------------------------------------------------- paired tests


def test_paired_tests_match_stats_and_holm():
    metric = BleuMetric()
    rows = make_results(bleu=metric, configs=("c0", "c1", "c2"))
    data = build(rows, metrics={"bleu": metric, "rouge_l": None}, seed=2, n_resamples=300)
    by = {(r["model"], r["config"], r["metric"]): r for r in rows}
    for model in ("m1", "m2"):
        for name in ("bleu", "rouge_l", "human"):
            family = [c for c in data.comparisons if c.model == model and c.metric == name]
            assert [c.config for c in family] == ["c1", "c2"] and all(c.baseline == "c0" for c in family)
            for comp in family:
                seed = rd.cell_seed(2, "paired", model, comp.config, name)
                a, b = by[(model, comp.config, name)]["examples"], by[(model, "c0", name)]["examples"]
                # scipy's paired bootstrap on the same resamples; the values from sacrebleu (BLEU) or the mean
                if name == "bleu":
                    bleu_a = _bleu_of_rows(metric, np.array([s.stats for _, s in a]))
                    bleu_b = _bleu_of_rows(metric, np.array([s.stats for _, s in b]))
                    everything = np.arange(len(a))
                    diff = bleu_a(everything) - bleu_b(everything)
                    ci, dist = _scipy_bootstrap((everything,), lambda i: bleu_a(i) - bleu_b(i), seed=seed, n_resamples=300)
                else:
                    va, vb = np.array([s.value for _, s in a]), np.array([s.value for _, s in b])
                    diff = va.mean() - vb.mean()
                    ci, dist = _scipy_bootstrap((va, vb), lambda p, q, axis: p.mean(axis) - q.mean(axis), paired=True, vectorized=True,
                                                seed=seed, n_resamples=300)
                assert comp.diff == pytest.approx(diff, rel=1e-12, abs=1e-15)
                assert (comp.ci_low, comp.ci_high) == pytest.approx(ci, rel=1e-12, abs=1e-15)
                # two-sided: the share of centred resamples at least |diff| from 0, +1 in both counts
                extreme = np.sum(np.abs(dist - diff) >= abs(diff) - 1e-12 * max(1.0, abs(diff)))
                assert comp.p_value == pytest.approx(min(1.0, (extreme + 1) / (dist.size + 1)))
                assert comp.n == 20
            adjusted = stats.holm([c.p_value for c in family])  # checked against statsmodels in test_stats
            assert [c.p_holm for c in family] == pytest.approx(list(adjusted))
            assert [c.significant for c in family] == [bool(p < 0.05) for p in adjusted]
            cells = [data.cell(model, c.config, name) for c in family]
            assert [c.p_holm for c in cells] == [c.p_holm for c in family]
            assert data.cell(model, "c0", name).baseline and data.cell(model, "c0", name).p_holm is None


def test_holm_family_leaves_out_comparisons_without_a_p_value():
    """A config with no value has no p-value: the others' Holm family is the configs that have one."""
    rows = make_results(models=("m1",), configs=("c0", "c1", "c2", "c3"))
    for r in rows:
        if r["config"] == "c2" and r["metric"] == "rouge_l":
            r.update(value=None, error="score failed")
    configs = [*CONFIGS, ("c3", {"t": 1.5, "b": 1})]
    family = [c for c in build(rows, configs=configs).comparisons if c.metric == "rouge_l"]
    assert [c.config for c in family] == ["c1", "c2", "c3"]
    assert family[1].p_value is None and family[1].p_holm is None and family[1].note == "no value"
    both = [family[0].p_value, family[2].p_value]
    assert [family[0].p_holm, family[2].p_holm] == pytest.approx(list(multipletests(both, method="holm")[1]))


def test_real_differences_are_significant_and_no_difference_is_not():
    quality = {("m1", "c0"): 0.8, ("m1", "c1"): 0.8, ("m1", "c2"): 0.2}
    rows = make_results(models=("m1",), quality=quality, n=30, human="binary")
    data = build(rows)
    for name in ("bleu", "rouge_l", "human"):
        assert data.cell("m1", "c2", name).significant is True, name
        assert data.cell("m1", "c2", name).diff < 0
    assert data.cell("m1", "c1", "rouge_l").significant is False


def test_paired_test_uses_only_shared_examples():
    rows = make_results(models=("m1",))
    for r in rows:
        if r["metric"] == "human" and r["config"] == "c1":
            r["examples"] = r["examples"][5:]  # rated on a different subset
            r["n"] = len(r["examples"])
    data = build(rows)
    comp = next(c for c in data.comparisons if c.metric == "human" and c.config == "c1")
    assert comp.n == 15


def test_intervals_do_not_depend_on_the_other_cells():
    rows = make_results()
    full = build(rows)
    only_m2 = build([r for r in rows if r["model"] == "m2"])
    for c in only_m2.cells:
        f = full.cell(c.model, c.config, c.metric)
        assert (f.ci_low, f.ci_high, f.p_value) == (c.ci_low, c.ci_high, c.p_value)


# --------------------------------------------------------------------------- baseline


def test_baseline_is_the_defaults_config_when_present():
    configs = [("a", {"t": 0.5, "k": 10}), ("d", {"t": 0.8, "k": 50}), ("b", {"t": 1.0, "k": 50})]
    base = rd.choose_baseline(configs, {"t": 0.8, "k": 50})
    assert base["config"] == "d" and base["how"] == "defaults"


def test_baseline_falls_back_to_the_first_config_and_says_so():
    configs = [("a", {"t": 0.5, "k": 50}), ("b", {"t": 1.0, "k": 50})]
    base = rd.choose_baseline(configs, {"t": 0.8, "k": 50})
    assert base["config"] == "a" and base["how"] == "first"
    assert "t=0.8" in base["reason"] and "not among the configs" in base["reason"]


def test_requested_baseline_and_unknown_name():
    configs = [("top_k_10", {}), ("top_k_20", {})]
    assert rd.choose_baseline(configs, None, "top_k_20")["config"] == "top_k_20"
    with pytest.raises(UserError) as info:
        rd.choose_baseline(configs, None, "top_k_21")
    assert "did you mean" in str(info.value) and "--baseline" in str(info.value)
    with pytest.raises(UserError) as info:
        rd.choose_baseline(configs, None, "top_k_30", all_configs=["top_k_10", "top_k_20", "top_k_30"])
    assert "not among the selected configs" in str(info.value)


def test_bad_resamples_is_a_user_error():
    with pytest.raises(UserError):
        build(make_results(models=("m1",)), n_resamples=0)


# --------------------------------------------------------------------------- agreement


def _ratings(scale: str, n_items=30, annotators=("a", "b", "c"), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_items):
        truth = int(rng.integers(0, 2)) if scale == "binary" else int(rng.integers(1, 6))
        for a in annotators:
            v = truth if rng.random() < 0.8 else (1 - truth if scale == "binary" else int(rng.integers(1, 6)))
            out.append(rd.HumanRating("m1" if i % 2 else "m2", "c0", f"g{i}", a, float(v), scale))
    return out


@pytest.mark.parametrize("scale, level", [("binary", "nominal"), ("likert", "ordinal")])
def test_krippendorff_alpha_per_scale(scale, level):
    ratings = _ratings(scale)
    found = rd.agreement(ratings, ["m1", "m2"])
    assert [a["scope"] for a in found] == ["all", "m1", "m2"]
    overall = found[0]
    units = {}
    for r in ratings:
        units.setdefault(r.item, {})[r.annotator] = r.rating
    assert overall["level"] == level
    # the krippendorff package on the (annotators x items) matrix
    annotators = sorted({r.annotator for r in ratings})
    matrix = [[units[item].get(a, np.nan) for item in units] for a in annotators]
    assert overall["alpha"] == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level), abs=1e-12)
    assert overall["n_items"] == 30 and overall["n_annotators"] == 3 and overall["n_ratings"] == 90
    assert 0.0 < overall["alpha"] <= 1.0


def test_no_agreement_with_one_annotator_per_item():
    assert rd.agreement(_ratings("binary", annotators=("a",))) == []


# --------------------------------------------------------------------------- sweep, correlations, context


def test_sweep_series_vary_one_parameter_around_the_defaults():
    configs = [("k10", {"k": 10, "b": 1, "t": 0.8}), ("k75", {"k": 75, "b": 1, "t": 0.8}), ("b2", {"k": 50, "b": 2, "t": 0.8}),
               ("t0", {"k": 50, "b": 1, "t": 0.0}), ("t1", {"k": 50, "b": 1, "t": 1.0})]
    info = rd.sweep_info(configs, {"k": 50, "b": 1, "t": 0.8})
    assert info["params"] == {"k": [10, 50, 75], "b": [1, 2], "t": [0.0, 0.8, 1.0]}
    assert info["series"]["k"] == [[10, "k10"], [75, "k75"]]
    assert info["series"]["t"] == [[0.0, "t0"], [1.0, "t1"]]
    assert info["series"]["b"] == [[2, "b2"]]


def test_correlations_in_the_report_match_scipy():
    from scipy import stats as sps

    rows = make_results(configs=tuple(f"c{i}" for i in range(5)), quality={("m1", f"c{i}"): 0.2 + 0.15 * i for i in range(5)})
    configs = [(f"c{i}", {"t": i}) for i in range(5)]
    data = build(rows, configs=configs, with_correlations=True)
    sys_all = {r.metric: r for r in data.correlations if r.level == "system" and r.scope == "all"}
    table = rd.system_rows(rows, ["bleu", "rouge_l"])
    for metric in ("bleu", "rouge_l"):
        x = [t[metric] for t in table]
        h = [t["human"] for t in table]
        assert sys_all[metric].n == 10
        assert sys_all[metric].pearson == pytest.approx(sps.pearsonr(x, h)[0])
        assert sys_all[metric].spearman == pytest.approx(sps.spearmanr(x, h)[0])
        assert sys_all[metric].kendall == pytest.approx(sps.kendalltau(x, h)[0])
    ex = [r for r in data.correlations if r.level == "example" and r.scope == "all"]
    assert {r.metric for r in ex} == {"bleu", "rouge_l"} and all(r.n == 200 for r in ex)
    assert data.findings and all(isinstance(f, str) for f in data.findings)


def test_findings_in_the_report_follow_the_numbers():
    rows = make_results(configs=tuple(f"c{i}" for i in range(6)), quality={(m, f"c{i}"): 0.15 * i + 0.1 for m in ("m1", "m2") for i in range(6)}, seed=4)
    configs = [(f"c{i}", {"t": i}) for i in range(6)]
    before = build(rows, configs=configs, with_correlations=True).findings
    flipped = []
    for r in rows:  # make ROUGE-L run against quality
        if r["metric"] == "rouge_l":
            ex = [(e, ExampleScore(1.0 - s.value)) for e, s in r["examples"]]
            r = {**r, "examples": ex, "value": float(np.mean([s.value for _, s in ex]))}
        flipped.append(r)
    after = build(flipped, configs=configs, with_correlations=True).findings
    assert before != after
    assert not any("rouge_l moves against human judgment" in f for f in before)
    assert any("rouge_l moves against human judgment" in f for f in after)


def test_context_is_strict_json():
    rows = make_results()
    rows[0] = {**rows[0], "value": None, "examples": [], "n": 0}
    ctx = build(rows, ratings=_ratings("likert"), with_correlations=True).context()
    text = json.dumps(ctx, allow_nan=False)
    assert "cells" in ctx and ctx["baseline"]["config"] == "c0"
    assert json.loads(text)["statistics"]["resamples"] == 1000


def test_default_experiment_size_is_fast():
    """2 models x 12 configs x 20 examples, 1000 resamples: intervals, 88 paired tests, correlations."""
    configs = tuple(f"c{i:02d}" for i in range(12))
    rows = make_results(configs=configs)
    t0 = time.perf_counter()
    data = build(rows, configs=[(c, {"i": i}) for i, c in enumerate(configs)], with_correlations=True)
    seconds = time.perf_counter() - t0
    assert len(data.comparisons) == 2 * 11 * 3
    assert seconds < 8.0, seconds  # about 0.3 s for intervals and tests, 1 s more for example-level correlations

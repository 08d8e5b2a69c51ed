"""Pairwise statistics (harness.report.pairwise): win rates with intervals, Bradley-Terry through choix."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.report.pairwise import BTScore, PairOutcome, bradley_terry, wilson_interval, win_rates


def outcomes_from(results, model="m", config="sampled", baseline="greedy", annotator="ann", flip_every=0):
    """PairOutcomes for ``results`` (1 config wins, 0.5 tie, 0 baseline wins), one example each.

    ``flip_every`` puts the baseline on side a for every n-th example, to test orientation.
    """
    out = []
    for i, share in enumerate(results):
        if flip_every and i % flip_every == 0:
            out.append(PairOutcome(model, baseline, config, f"e{i}", annotator, 1.0 - share))
        else:
            out.append(PairOutcome(model, config, baseline, f"e{i}", annotator, share))
    return out


# --------------------------------------------------------------------------- records


def test_pair_outcome_checks_its_fields():
    with pytest.raises(ValueError, match="two configs"):
        PairOutcome("m", "a", "a", "e", "ann", 1.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        PairOutcome("m", "a", "b", "e", "ann", 1.5)
    o = PairOutcome("m", "a", "b", "e", "ann", 0.0)
    assert (o.share_for("a"), o.share_for("b")) == (0.0, 1.0)
    with pytest.raises(ValueError, match="not in this pair"):
        o.share_for("c")


def test_duplicate_judgments_are_refused():
    twice = [PairOutcome("m", "a", "b", "e1", "ann", 1.0), PairOutcome("m", "b", "a", "e1", "ann", 1.0)]
    with pytest.raises(ValueError, match="judged 'b' vs 'a' on example 'e1' of model 'm' twice"):
        win_rates(twice, "a")
    with pytest.raises(ValueError, match="twice"):
        bradley_terry(twice)


# --------------------------------------------------------------------------- win rates


def test_no_ties_one_annotator_is_the_binomial_wilson_interval():
    [rate] = win_rates(outcomes_from([1] * 7 + [0] * 3, flip_every=3), "greedy")
    assert (rate.model, rate.config, rate.baseline) == ("m", "sampled", "greedy")
    assert rate.rate == pytest.approx(0.7)
    assert (rate.wins, rate.ties, rate.losses, rate.n_examples, rate.n_ratings) == (7, 0, 3, 10, 10)
    scipy_ci = binomtest(7, 10).proportion_ci(confidence_level=0.95, method="wilson")
    assert (rate.ci_low, rate.ci_high) == pytest.approx((scipy_ci.low, scipy_ci.high), abs=1e-12)
    assert (rate.ci_low, rate.ci_high) == pytest.approx((0.39678, 0.89221), abs=1e-5)  # by hand: (p + z²/2n ± z√(p(1-p)/n + z²/4n²)) / (1 + z²/n)


def test_ties_count_half():
    [rate] = win_rates(outcomes_from([1] * 4 + [0.5] * 2 + [0] * 4), "greedy")
    assert rate.rate == pytest.approx(0.5) and (rate.wins, rate.ties, rate.losses) == (4, 2, 4)
    # Wilson at 0.5, n = 10: 0.5 ± 1.96·√(0.025 + 0.0960)/1.3841
    assert (rate.ci_low, rate.ci_high) == pytest.approx((0.23659, 0.76341), abs=1e-5)


def test_all_wins_keep_a_real_interval():
    [rate] = win_rates(outcomes_from([1] * 10), "greedy")
    assert rate.rate == 1.0 and rate.ci_high == pytest.approx(1.0)
    assert rate.ci_low == pytest.approx(0.72246, abs=1e-5)  # a bootstrap would say [1, 1]


def test_annotators_of_one_example_are_averaged_first():
    # example e0: both annotators prefer the config; e1: they split; e2: both prefer the baseline
    rows = [
        PairOutcome("m", "sampled", "greedy", "e0", "ann", 1.0),
        PairOutcome("m", "greedy", "sampled", "e0", "bob", 0.0),
        PairOutcome("m", "sampled", "greedy", "e1", "ann", 1.0),
        PairOutcome("m", "sampled", "greedy", "e1", "bob", 0.0),
        PairOutcome("m", "sampled", "greedy", "e2", "ann", 0.0),
        PairOutcome("m", "sampled", "greedy", "e2", "bob", 0.5),
    ]
    [rate] = win_rates(rows, "greedy")
    assert rate.rate == pytest.approx((1.0 + 0.5 + 0.25) / 3)
    assert (rate.n_examples, rate.n_ratings, rate.wins, rate.ties, rate.losses) == (3, 6, 3, 1, 2)
    assert (rate.ci_low, rate.ci_high) == pytest.approx(wilson_interval(rate.rate, 3))


def test_per_model_and_config_and_other_pairs_ignored():
    rows = (
        outcomes_from([1, 1, 0], model="base", config="beam")
        + outcomes_from([0, 0, 0.5], model="tuned", config="beam")
        + outcomes_from([1, 0.5], model="tuned", config="top_p")
        + [PairOutcome("tuned", "beam", "top_p", "e9", "ann", 1.0)]  # no baseline in it
    )
    rates = win_rates(rows, "greedy")
    assert [(r.model, r.config, round(r.rate, 4), r.n_examples) for r in rates] == [
        ("base", "beam", 0.6667, 3),
        ("tuned", "beam", 0.1667, 3),
        ("tuned", "top_p", 0.75, 2),
    ]


def test_confidence_level_is_used():
    [r90] = win_rates(outcomes_from([1] * 6 + [0] * 4), "greedy", confidence=0.9)
    [r95] = win_rates(outcomes_from([1] * 6 + [0] * 4), "greedy")
    assert r90.ci_high - r90.ci_low < r95.ci_high - r95.ci_low and r90.confidence == 0.9


def _simulate_coverage(true_tie: float, n_examples: int, annotators: int, sims: int, seed: int, a: float, b: float) -> tuple[float, float]:
    """Coverage of the example-level Wilson interval and of a naive one over all ratings.

    Each example has its own chance that the config is better, drawn from Beta(a, b) (mean 0.6;
    small a and b: examples on which annotators mostly agree); a judgment is a tie with
    probability ``true_tie``.
    """
    rng = np.random.default_rng(seed)
    hits_items = hits_naive = 0
    p_tie = true_tie
    true_mean = p_tie * 0.5 + (1 - p_tie) * a / (a + b)
    for _ in range(sims):
        p_win = rng.beta(a, b, size=n_examples)
        draws = rng.random((n_examples, annotators))
        ties = rng.random((n_examples, annotators)) < p_tie
        shares = np.where(ties, 0.5, (draws < p_win[:, None]).astype(float))
        rows = [
            PairOutcome("m", "c", "base", f"e{i}", f"a{j}", float(shares[i, j]))
            for i in range(n_examples)
            for j in range(annotators)
        ]
        [rate] = win_rates(rows, "base")
        hits_items += rate.ci_low <= true_mean <= rate.ci_high
        naive = wilson_interval(float(shares.mean()), shares.size)
        hits_naive += naive[0] <= true_mean <= naive[1]
    return hits_items / sims, hits_naive / sims


def test_interval_covers_with_ties_and_several_annotators():
    """Seeded simulation: 95% intervals over 30 examples x 3 annotators who mostly agree, 30% ties."""
    items, naive = _simulate_coverage(true_tie=0.3, n_examples=30, annotators=3, sims=600, seed=11, a=0.3, b=0.2)
    assert items >= 0.95  # conservative, as the module docstring argues
    assert naive < 0.92  # treating 90 correlated ratings as 90 independent ones claims too much
    # one annotator, no ties: the binomial case, where it is the plain Wilson interval and near 95%
    items, naive = _simulate_coverage(true_tie=0.0, n_examples=30, annotators=1, sims=600, seed=12, a=2.4, b=1.6)
    assert 0.93 <= items <= 0.975 and items == naive


# --------------------------------------------------------------------------- Bradley-Terry


def _win_matrix(rows, configs):
    idx = {c: i for i, c in enumerate(configs)}
    w = np.zeros((len(configs), len(configs)))
    for o in rows:
        w[idx[o.config_a], idx[o.config_b]] += o.value
        w[idx[o.config_b], idx[o.config_a]] += 1 - o.value
    return w


def test_two_configs_by_hand():
    # a beats b three times, b beats a once: s_a - s_b = log 3 (the MLE); centred: ± log(3) / 2
    rows = [PairOutcome("m", "a", "b", f"e{i}", "ann", v) for i, v in enumerate([1, 1, 1, 0])]
    scores = bradley_terry(rows, alpha=0)
    assert [(s.config, s.rank, s.n_comparisons) for s in scores] == [("a", 1, 4), ("b", 2, 4)]
    assert scores[0].strength == pytest.approx(math.log(3) / 2, abs=1e-6)
    assert scores[1].strength == pytest.approx(-math.log(3) / 2, abs=1e-6)


def test_a_cycle_is_a_tie_by_hand():
    rows = [
        PairOutcome("m", "a", "b", "e1", "ann", 1.0),
        PairOutcome("m", "b", "c", "e1", "ann", 1.0),
        PairOutcome("m", "c", "a", "e1", "ann", 1.0),
    ]
    scores = bradley_terry(rows, alpha=0)
    assert [s.rank for s in scores] == [1, 1, 1]
    assert all(abs(s.strength) < 1e-6 for s in scores)


def test_ties_count_half_a_win_each():
    # one tie between a and b, plus a beats b once: like 1.5 wins to 0.5 -> log 3 apart
    rows = [PairOutcome("m", "a", "b", "e1", "ann", 0.5), PairOutcome("m", "a", "b", "e2", "ann", 1.0)]
    scores = {s.config: s.strength for s in bradley_terry(rows, alpha=0)}
    assert scores["a"] - scores["b"] == pytest.approx(math.log(3), abs=1e-6)


def _random_rows(seed, configs=("greedy", "beam", "top_p", "temp_0.7"), examples=40, truth=None):
    rng = random.Random(seed)
    truth = truth or {c: rng.gauss(0, 1) for c in configs}
    rows = []
    for e in range(examples):
        a, b = rng.sample(configs, 2)
        p = 1 / (1 + math.exp(truth[b] - truth[a]))
        u = rng.random()
        value = 0.5 if u < 0.15 else (1.0 if u < 0.15 + 0.85 * p else 0.0)
        rows.append(PairOutcome("m", a, b, f"e{e}", "ann", value))
    return rows, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_choix_and_the_likelihood_equations(seed):
    import choix

    rows, _ = _random_rows(seed)
    configs = sorted({c for o in rows for c in (o.config_a, o.config_b)})
    scores = {s.config: s.strength for s in bradley_terry(rows, alpha=0)}
    s = np.array([scores[c] for c in configs])
    # choix directly, two ways: the dense matrix, and a list of comparisons where every judgment
    # is two entries (a win twice, a tie once each way): the same likelihood up to a factor 2
    dense = choix.ilsr_pairwise_dense(_win_matrix(rows, configs), alpha=0)
    listed = []
    idx = {c: i for i, c in enumerate(configs)}
    for o in rows:
        a, b = idx[o.config_a], idx[o.config_b]
        listed += [(a, b), (a, b)] if o.value == 1 else [(b, a), (b, a)] if o.value == 0 else [(a, b), (b, a)]
    sparse = choix.ilsr_pairwise(len(configs), listed, alpha=0)
    assert s == pytest.approx(dense - dense.mean(), abs=1e-6)
    assert s == pytest.approx(sparse - sparse.mean(), abs=1e-5)
    # the maximum-likelihood equations: for every config, wins = expected wins
    w = _win_matrix(rows, configs)
    n = w + w.T
    p = 1 / (1 + np.exp(s[None, :] - s[:, None]))
    assert (w.sum(axis=1)) == pytest.approx((n * p).sum(axis=1), abs=1e-5)


def test_recovers_the_true_order_with_enough_data():
    truth = {"greedy": 0.0, "beam": 0.8, "top_p": -0.5, "temp_0.7": 0.3}
    rows, _ = _random_rows(7, configs=tuple(truth), examples=3000, truth=truth)
    ranked = [s.config for s in bradley_terry(rows)]
    assert ranked == sorted(truth, key=lambda c: -truth[c])


def test_per_model_ranking_and_records():
    rows = [PairOutcome("base", "beam", "greedy", f"e{i}", "ann", v) for i, v in enumerate([1, 1, 0.5])]
    rows += [PairOutcome("tuned", "top_p", "greedy", f"e{i}", "ann", v) for i, v in enumerate([0, 0, 1])]
    rows += [PairOutcome("tuned", "beam", "greedy", f"e{i}", "ann", v) for i, v in enumerate([1, 1, 1])]
    scores = bradley_terry(rows)
    assert all(isinstance(s, BTScore) for s in scores)
    assert [(s.model, s.config, s.rank) for s in scores] == [
        ("base", "beam", 1),
        ("base", "greedy", 2),
        ("tuned", "beam", 1),
        ("tuned", "greedy", 2),
        ("tuned", "top_p", 3),
    ]
    assert sum(s.strength for s in scores if s.model == "tuned") == pytest.approx(0, abs=1e-9)
    assert all(math.isfinite(s.strength) for s in scores)  # 'beam' of 'tuned' won everything: alpha keeps it finite


def test_refuses_what_cannot_be_ranked():
    apart = [PairOutcome("m", "a", "b", "e1", "ann", 1.0), PairOutcome("m", "c", "d", "e1", "ann", 1.0)]
    with pytest.raises(ValueError, match=r"do not connect its configs: \['a', 'b'\] were never compared.*\['c', 'd'\]"):
        bradley_terry(apart)
    assert bradley_terry([]) == []
    with pytest.raises(ValueError, match="use alpha > 0"):
        bradley_terry([PairOutcome("m", "a", "b", "e1", "ann", 1.0), PairOutcome("m", "a", "c", "e1", "ann", 1.0)], alpha=0)

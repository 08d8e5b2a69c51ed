"""Issue 19, part 2: `harness plan`'s formulas, checked by simulation against the report's own paired test and PPI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.report import plan
from harness.report import stats as st


def test_the_sample_size_formula_of_miller_2024() -> None:
    # (1.959964 + 0.841621)^2 * 0.2^2 / 0.05^2 = 125.6 -> 126
    assert plan.examples_needed(0.2, 0.05) == 126
    assert plan.examples_needed(0.2, 0.05, alpha=0.01, power_=0.9) == math.ceil((2.575829 + 1.281552) ** 2 * 16)
    # the detectable difference is its inverse
    assert plan.detectable(0.2, 126) == pytest.approx(0.05, rel=0.01)
    assert plan.detectable(0.2, 126) <= 0.05
    assert plan.power(0.2, 0.05, 126) == pytest.approx(0.80, abs=0.005)
    # ratings for a half-width: a binary rating at p = 0.5 needs 385 for ± 0.05 (the textbook number)
    assert plan.ratings_needed(0.5, 0.05) == 385


@pytest.mark.parametrize("r, w", [(0.3, 0.1), (0.6, 0.05), (0.9, 0.05), (0.0, 0.2)])
def test_correlation_ratings_are_the_fewest_whose_fisher_interval_is_narrow_enough(r, w) -> None:
    n = plan.ratings_for_correlation(r, w)
    z = 1.959964

    def width(k: int) -> float:
        return math.tanh(math.atanh(r) + z / math.sqrt(k - 3)) - math.tanh(math.atanh(r) - z / math.sqrt(k - 3))

    assert width(n) <= 2 * w < width(n - 1)


@pytest.mark.slow  # the report's own test, 1000 resamples, on 500 simulated test sets per case: about 5-10 s each here
@pytest.mark.parametrize("sd, delta, power_", [(0.2, 0.05, 0.8), (0.3, 0.075, 0.5)])
def test_predicted_power_matches_the_rejection_rate_of_the_reports_paired_test(sd, delta, power_) -> None:
    """Simulated test sets of the planned size: the report's paired bootstrap test rejects as often as planned (within 5 points).

    (At a few dozen examples the percentile bootstrap is a little liberal — about 2-4 points more rejections at n = 35 —
    so the plan's normal approximation is slightly conservative there.)"""
    n = plan.examples_needed(sd, delta, power_=power_)
    predicted = plan.power(sd, delta, n)
    rng = np.random.default_rng(2024)
    sims = 500
    rejected = 0
    for i in range(sims):
        base = rng.uniform(0.2, 0.8, n)  # per-example scores of the baseline
        other = base + rng.normal(delta, sd, n)
        res = st.paired_bootstrap_test(other, base, n_resamples=1000, seed=i)
        rejected += res["p_value"] < 0.05
    assert abs(rejected / sims - predicted) <= 0.05, (rejected / sims, predicted, n)


def test_ratings_with_ppi_follow_ppi_py_power_analysis() -> None:
    ppi_py = pytest.importorskip("ppi_py")
    n0 = plan.ratings_needed(0.3, 0.05)
    assert plan.ratings_with_ppi(n0, rho=0.0)["n"] == n0  # nothing to gain
    for cap in (None, 2000):
        found = plan.ratings_with_ppi(n0, cap, rho=0.8, prediction_cost=0.01)
        direct = ppi_py.ppi_power(0.8, cost_X=0.0, cost_Y=1.0, cost_Yhat=0.01, effective_n=n0, n_max=cap)
        assert found["n"] == direct["n"] and found["n_predicted"] == direct["n"] + direct["N"]
        assert n0 * (1 - 0.8**2) <= found["n"] < 0.5 * n0  # never below the ρ² saving, well under the ratings-only count
    # costly predictions buy fewer of them
    assert plan.ratings_with_ppi(n0, rho=0.8, prediction_cost=0.2)["n_predicted"] < plan.ratings_with_ppi(n0, rho=0.8)["n_predicted"]
    # from a pilot's arrays: ppi_py measures the correlation itself
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal(200), rng.standard_normal(200)
    y, yhat = 0.5 + 0.3 * z1, 0.8 * z1 + 0.6 * z2
    pilot = plan.ratings_with_ppi(n0, y=y, yhat=yhat)
    assert pilot["rho"] == pytest.approx(float(np.corrcoef(y, yhat)[0, 1]), abs=1e-9)
    assert pilot["n"] == ppi_py.ppi_mean_power(y, yhat, cost_Y=1.0, cost_Yhat=0.01, effective_n=n0)["n"]
    with pytest.raises(ValueError):
        plan.ratings_with_ppi(n0, n0 - 1, rho=0.5)


def test_planned_ppi_ratings_reach_the_half_width_by_simulation() -> None:
    """Rate the planned number, predict the other planned examples: the PPI interval's half-width is about the target."""
    pytest.importorskip("ppi_py")
    from harness.report import ppi

    sd, w, rho = 0.3, 0.05, 0.8
    n0 = plan.ratings_needed(sd, w)
    found = plan.ratings_with_ppi(n0, rho=rho)
    n, total = found["n"], found["n_predicted"]
    rng = np.random.default_rng(5)
    z1, z2 = rng.standard_normal((total, 200)), rng.standard_normal((total, 200))
    y = 0.5 + sd * z1
    yhat = rho * z1 + math.sqrt(1 - rho**2) * z2
    _, low, high = ppi.mean_ci(y[:n], yhat[:n], yhat[n:])
    assert float(np.mean(high - low)) / 2 == pytest.approx(w, rel=0.1)


def test_assumptions_alone_give_a_plan() -> None:
    pytest.importorskip("ppi_py")
    p = plan.assumed(plan.Targets(delta=0.05), sd=0.2, rho=0.6, test_size=100)
    assert p.paired[0].n_needed == 126 and p.paired[0].detectable == pytest.approx(plan.detectable(0.2, 100))
    ratings = p.ratings[0]
    assert ratings.n_needed == 385 and ratings.n_ppi < 385 and ratings.n_predicted > 385
    assert p.registry == {"test_size": ratings.n_predicted, "n_per_cell": ratings.n_ppi}
    assert p.correlations[0].n_needed == plan.ratings_for_correlation(0.6, 0.1)
    text = plan.render(p, "json")
    assert f'"registry_toml": "[dataset]\\ntest_size = {ratings.n_predicted}\\n\\n[human]\\nn_per_cell = {ratings.n_ppi}"' in text
    without = plan.assumed(plan.Targets(), sd=0.2, rho=None)
    assert without.ratings[0].n_ppi is None and without.registry == {"test_size": 385, "n_per_cell": 385}
    with pytest.raises(Exception, match="--sd and/or --rho"):
        plan.assumed(plan.Targets(), sd=None, rho=None)
    with pytest.raises(Exception, match="--power"):
        plan.assumed(plan.Targets(power=1.5), sd=0.2, rho=None)

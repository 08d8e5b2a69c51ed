"""Issue 19, part 1: prediction-powered human estimates (harness.report.ppi) against ppi_py itself, by simulation, and
the cross-fitted choice of the predictor.

The simulations are seeded and vectorised: thousands of cells go through one ppi_py call as columns (each column its
own power-tuned λ, which the first test shows equals a call per column).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

ppi_py = pytest.importorskip("ppi_py")

from harness.report import ppi  # noqa: E402


def _data(seed: int, n: int = 40, big_n: int = 300, rho: float = 0.7):
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal(n + big_n), rng.standard_normal(n + big_n)
    y = 0.6 + 0.2 * z1
    yhat = 0.3 + 0.1 * (rho * z1 + math.sqrt(1 - rho**2) * z2)  # biased and on another scale
    return y[:n], yhat[:n], yhat[n:]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_ci_is_ppi_py_on_the_same_arrays(seed) -> None:
    y, yhat, unl = _data(seed)
    value, low, high = ppi.mean_ci(y, yhat, unl, confidence=0.95)
    lo, hi = ppi_py.ppi_mean_ci(y, yhat, unl, alpha=0.05, lam=None)
    assert low[0] == pytest.approx(float(lo[0]), abs=1e-12) and high[0] == pytest.approx(float(hi[0]), abs=1e-12)
    assert value[0] == pytest.approx(float(np.ravel(ppi_py.ppi_mean_pointestimate(y, yhat, unl, lam=None))[0]), abs=1e-12)
    # ppi_py's default alpha is 0.1: the report's 95% interval is wider than its 90% one
    lo90, hi90 = ppi_py.ppi_mean_ci(y, yhat, unl)
    assert high[0] - low[0] > float(hi90[0] - lo90[0])
    # the ratings-only interval is ppi_py's classical one
    _, c_low, c_high = ppi.classical_ci(y)
    assert (c_low[0], c_high[0]) == pytest.approx(tuple(float(v) for v in ppi_py.classical_mean_ci(y, alpha=0.05)), abs=1e-12)
    # the recorded λ is ppi_py's (clipped) power-tuned λ
    grads = (y - value[0])[:, None]
    lam = ppi_py.ppi._calc_lam_glm(grads, (yhat - value[0])[:, None], (unl - value[0])[:, None], np.eye(1), clip=True)
    assert ppi._lam(y, yhat, unl) == pytest.approx(float(lam), abs=1e-12)
    # the p-value of a difference is ppi_py's ppi_mean_pval with that λ (the test that matches the interval)
    se = (high[0] - low[0]) / 2 / ppi._z(0.95)
    assert ppi._p_two_sided(value[0] - 0.55, se) == pytest.approx(float(ppi_py.ppi_mean_pval(y, yhat, unl, null=0.55, lam=float(lam))[0]), rel=1e-9)


def test_columns_are_independent_cells() -> None:
    """(n, k) arrays: each column is what a 1-D call on it gives (its own λ)."""
    cols = [_data(s, rho=r) for s, r in zip(range(5), (0.0, 0.3, 0.6, 0.9, 0.95))]
    y, yhat, unl = (np.stack([c[i] for c in cols], axis=1) for i in range(3))
    value, low, high = ppi.mean_ci(y, yhat, unl)
    for j, (a, b, c) in enumerate(cols):
        v1, l1, h1 = ppi.mean_ci(a, b, c)
        assert (value[j], low[j], high[j]) == pytest.approx((v1[0], l1[0], h1[0]), abs=1e-12)


def _simulate(rho: float, cells: int, n: int, big_n: int, seed: int, batch: int):
    """Coverage of the true mean and mean widths (PPI, ratings only) over ``cells`` simulated cells."""
    rng = np.random.default_rng(seed)
    mu = 0.6
    covered, w_ppi, w_classical = [], [], []
    for start in range(0, cells, batch):
        k = min(batch, cells - start)
        z1, z2 = rng.standard_normal((n + big_n, k)), rng.standard_normal((n + big_n, k))
        y = mu + 0.25 * z1
        yhat = 0.4 + 0.2 * (rho * z1 + math.sqrt(1 - rho**2) * z2)  # a biased predictor: PPI corrects the bias
        _, low, high = ppi.mean_ci(y[:n], yhat[:n], yhat[n:])
        _, c_low, c_high = ppi.classical_ci(y[:n])
        covered.append((low <= mu) & (mu <= high))
        w_ppi.append(high - low)
        w_classical.append(c_high - c_low)
    return float(np.concatenate(covered).mean()), float(np.concatenate(w_ppi).mean() / np.concatenate(w_classical).mean())


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_95_percent_intervals_cover_the_truth(rho) -> None:
    coverage, _ = _simulate(rho, cells=5000, n=300, big_n=600, seed=19, batch=50)
    assert 0.94 <= coverage <= 0.96, coverage


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_width_relative_to_ratings_only_is_sqrt_one_minus_rho_squared_at_large_n(rho) -> None:
    coverage, ratio = _simulate(rho, cells=300, n=100, big_n=20000, seed=7, batch=25)
    assert ratio == pytest.approx(math.sqrt(1 - rho**2), rel=0.10), ratio
    assert coverage > 0.9


def test_importing_ppi_py_leaves_the_warning_filters_alone() -> None:
    """ppi_py.ppi runs warnings.simplefilter("ignore") at import; load_ppi_py keeps the process's filters."""
    code = ("import warnings; from harness.report.ppi import load_ppi_py; before = list(warnings.filters); load_ppi_py(); "
            "import sys; sys.exit(0 if list(warnings.filters) == before else 1)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# --------------------------------------------------------------------------- estimates from cells


def _cells(seed: int = 0, n_examples: int = 30, n_rated: int = 12, configs=("a", "b", "c"), shared: dict | None = None):
    """Cells of one model whose ratings follow metric 'good' (metric 'noise' is unrelated); ``shared``: config -> config whose gens it reuses."""
    rng = np.random.default_rng(seed)
    out = []
    gens_of: dict[str, dict[str, str]] = {}
    for i, config in enumerate(configs):
        gens = {f"e{j}": f"{config}-g{j}" for j in range(n_examples)}
        if shared and config in shared:
            gens = dict(gens_of[shared[config]])
        gens_of[config] = gens
        quality = rng.uniform(0, 1, n_examples) + 0.1 * i
        good = {f"e{j}": float(0.8 + 0.1 * quality[j] + 0.01 * rng.standard_normal()) for j in range(n_examples)}
        noise = {f"e{j}": float(rng.uniform()) for j in range(n_examples)}
        human = {f"e{j}": float(np.clip(quality[j] + 0.15 * rng.standard_normal(), 0, 1)) for j in range(n_rated)}
        if shared and config in shared:  # the same generations: the same ratings and scores
            twin = next(c for c in out if c.config == shared[config])
            human, good, noise = dict(twin.human), dict(twin.scores["good"]), dict(twin.scores["noise"])
        out.append(ppi.CellData("m", config, gens, human, {"good": good, "noise": noise}))
    return out


def test_cross_fitting_chooses_the_predictor_without_the_cell() -> None:
    cells = _cells()
    report = ppi.estimate(cells, ["good", "noise"], baseline="a")
    for c in report.cells:
        assert c.predictor == "good" and c.value is not None and c.ci_low < c.value < c.ci_high
        assert c.n_rated == 12 and c.n_total == 30 and c.calibration.n == 24  # the other two cells' rated generations
        assert c.n_effective > c.n_rated  # the predictor tracks the humans: worth more than its ratings
    # the cell's own ratings never choose or calibrate its predictor: scrambling them changes only the estimate
    scrambled = [ppi.CellData(c.model, c.config, c.gens, {e: 1.0 - y for e, y in c.human.items()}, c.scores) if c.config == "a" else c for c in cells]
    again = ppi.estimate(scrambled, ["good", "noise"], baseline="a")
    assert again.cell("m", "a").calibration == report.cell("m", "a").calibration
    assert again.cell("m", "a").value != report.cell("m", "a").value
    assert again.cell("m", "b").calibration != report.cell("m", "b").calibration  # b's calibration used a's ratings


def test_a_generation_shared_with_another_config_counts_as_the_cells_own() -> None:
    cells = _cells(shared={"b": "a"})  # b reuses a's generations (and so its ratings count for both)
    report = ppi.estimate(cells, ["good", "noise"], baseline="a")
    # a's predictor is fitted on c's ratings only (b's generations are a's own), c's on a's (= b's) once
    assert report.cell("m", "a").calibration.n == 12 and report.cell("m", "c").calibration.n == 12
    assert report.cell("m", "b").calibration == report.cell("m", "a").calibration


def test_paired_differences_and_holm() -> None:
    report = ppi.estimate(_cells(), ["good", "noise"], baseline="a")
    assert {d.config for d in report.diffs} == {"b", "c"}
    for d in report.diffs:
        assert d.ci_low < d.diff < d.ci_high and d.n_rated == 12 and d.n_total == 30
        assert d.p_holm >= d.p_value and d.significant == (d.p_holm < 0.05)
    ctx = report.context()
    assert ctx["cells"]["m"]["b"]["ppi_diff"] == report.diff("m", "b").diff and "ppi_diff" not in ctx["cells"]["m"]["a"]


def test_a_named_predictor_is_used_even_when_it_is_poor() -> None:
    report = ppi.estimate(_cells(), ["good", "noise"], baseline="a", predictor="noise")
    assert {c.predictor for c in report.cells} == {"noise"} and report.choice == "named"
    for c in report.cells:  # a useless predictor: λ near 0, the interval about the ratings-only one
        assert c.ci_high - c.ci_low == pytest.approx(c.classical_high - c.classical_low, rel=0.25)


@pytest.mark.parametrize(
    "change, note",
    [
        ({"n_rated": 30}, "every test example is rated"),
        ({"n_rated": 2}, "PPI needs at least 3"),
    ],
)
def test_cells_without_an_estimate_say_why(change, note) -> None:
    report = ppi.estimate(_cells(**change), ["good", "noise"], baseline="a")
    assert all(c.value is None and note in c.note for c in report.cells)


def test_no_positive_correlation_outside_the_cell_means_no_automatic_predictor() -> None:
    cells = [ppi.CellData(c.model, c.config, c.gens, c.human, {"bad": {e: -v for e, v in c.scores["good"].items()}}) for c in _cells()]
    report = ppi.estimate(cells, ["bad"], baseline="a")
    assert all(c.value is None and c.predictor is None and "--predictor" in c.note for c in report.cells)
    assert all(d.diff is None and "--predictor" in d.note for d in report.diffs)
    constant = [ppi.CellData(c.model, c.config, c.gens, {e: 0.5 for e in c.human}, c.scores) for c in _cells()]
    report = ppi.estimate(constant, ["good"], baseline="a", predictor="good")
    assert all(c.value is None and "same human score" in c.note for c in report.cells)


def test_without_ppi_py_the_cells_say_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ppi_py", None)  # import ppi_py raises ImportError
    report = ppi.estimate(_cells(), ["good"], baseline="a")
    assert not report.available and all(c.value is None and ppi.INSTALL in c.note for c in report.cells)
    assert report.context()["install"] == ppi.INSTALL
    # no ratings: nothing to estimate, and ppi_py is not even asked for
    assert ppi.estimate([ppi.CellData("m", "a", {"e": "g"}, {}, {})], ["good"], baseline="a").available


def test_a_predictor_constant_in_the_cell_is_passed_over_and_missing_scores_are_left_out() -> None:
    """A pairwise metric scores the baseline against itself (a constant): the baseline's cell takes the next best metric.
    A judge's missing verdicts: those rated examples leave the estimate, and the note says how many."""
    cells = _cells()
    out = []
    for c in cells:
        # outside the baseline, pref tracks the humans better than good does
        pref = {e: (0.5 if c.config == "a" else c.human.get(e, v)) for e, v in c.scores["good"].items()}
        good = dict(c.scores["good"])
        if c.config == "b":
            del good["e0"], good["e1"]  # unparseable verdicts: no score
        out.append(ppi.CellData(c.model, c.config, c.gens, c.human, {"good": good, "pref": pref}))
    report = ppi.estimate(out, ["pref", "good"], baseline="a")
    outside_a = ppi._choose(ppi._items(out, ["pref", "good"]), ["pref", "good"], set(out[0].gens.values()))
    assert outside_a.metric == "pref"  # what a would take if constancy in the cell were not checked
    assert report.cell("m", "a").predictor == "good" and report.cell("m", "a").value is not None
    named = ppi.estimate(out, ["pref", "good"], baseline="a", predictor="good")
    b = named.cell("m", "b")
    assert b.n_rated == 10 and b.n_total == 28 and b.note == "2 rated examples without a good score left out"

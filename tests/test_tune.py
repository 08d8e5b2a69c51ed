"""Issue 22: `harness tune` and `[sweep] prune = true` — the registry, the search driver against Optuna's own
WilcoxonPruner, the simulated objective, the store and the report, the held-out confirmation.

Processes that are killed or run side by side are in tests/test_tune_faults.py; the dashboard in a real
browser in tests/test_tune_dashboard_browser.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import fakes
from stores import query
from harness.errors import UserError
from harness.registry import load_experiment

optuna = pytest.importorskip("optuna", reason="the 'tune' extra is not installed")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

ONE_MODEL = [fakes.DEFAULT_MODELS[0]]
DATASET = {"source": "fake-data", "n": 60, "test_size": 20, "train_size": 0, "seed": 42}


def tune_registry(path: Path, tune: str, *, sweep_extra: str = "", **kwargs) -> Path:
    """A fake experiment (one model, 20 test examples) with a ``[tune]`` section (TOML text)."""
    text = fakes.registry_toml(dataset=dict(DATASET), models=ONE_MODEL, **kwargs)
    if sweep_extra:
        text = text.replace("[sweep]\n", f"[sweep]\n{sweep_extra}\n", 1)
    path.write_text(text + "\n" + tune, encoding="utf-8")
    return path


# chunks of 7 of the 14 search examples: one pruning decision per trial (the fakes' scores tie a lot, and scipy's
# Wilcoxon test with ties on n <= 13 examples is a permutation test over 2^n sign flips)
TUNE = """
[tune]
metric = "fake-len"
trials = 6
chunk = 7
[tune.space]
temperature = [0.1, 1.5]
top_k = [5, 60]
"""


# --------------------------------------------------------------------------- the registry


def test_tune_section_is_validated_into_a_search_space(tmp_path, fake_plugins) -> None:
    path = tune_registry(tmp_path / "r.toml", """
[tune]
metric = "fake-overlap"
sampler = "grid"
holdout = 0.25
[tune.space]
temperature = [0.0, 1.0]
top_k = {low = 10, high = 50, step = 20}
top_p = {low = 0.5, high = 1.0, step = 0.25}
num_beams = {choices = [1, 3]}
min_p = {low = 0.01, high = 0.3, log = true}
""")
    exp = load_experiment(path, fake_plugins)
    t = exp.tune
    assert (t.metric, t.sampler, t.pruner, t.holdout, t.trials, t.seed) == ("fake-overlap", "grid", "wilcoxon", 0.25, 20, 0)
    space = {p.name: p for p in t.space}
    assert space["temperature"].kind == "float" and space["temperature"].step == 0.01 and len(space["temperature"].grid()) == 101
    assert space["top_k"].kind == "int" and space["top_k"].grid() == [10, 30, 50]
    assert space["top_p"].grid() == [0.5, 0.75, 1.0]
    assert space["num_beams"].kind == "categorical" and space["num_beams"].grid() == [1, 3]
    assert space["min_p"].log and space["min_p"].grid() is None
    assert space["top_k"].contains(30) and not space["top_k"].contains(20) and not space["top_k"].contains(60)
    # no [tune]: its defaults, the first metric, nothing to search
    plain = load_experiment(tune_registry(tmp_path / "p.toml", ""), fake_plugins)
    assert plain.tune.metric == "fake-len" and plain.tune.space == () and plain.prune is False


@pytest.mark.parametrize(
    ("tune", "key", "words"),
    [
        ('[tune]\nmetric = "bleu"', "tune.metric", "unknown metric 'bleu'"),
        ('[tune]\nsampler = "tpe2"', "tune.sampler", "allowed: 'tpe', 'gp', 'cmaes', 'random', 'grid'"),
        ("[tune]\ntrails = 3", "tune.trails", "did you mean 'trials'"),
        ("[tune.space]\ntemprature = [0.0, 1.0]", "tune.space.temprature", "did you mean 'temperature'"),
        ("[tune.space]\ntemperature = [1.0, 0.5]", "tune.space.temperature", "low must be below high"),
        ("[tune.space]\ntemperature = [0.0, 1.0, 2.0]", "tune.space.temperature", "must be [low, high]"),
        ("[tune.space]\ntop_k = [1.5, 9]", "tune.space.top_k.low", "must be an integer"),
        ("[tune.space]\ntop_p = [0.5, 1.5]", "tune.space.top_p.high", "must be <= 1"),
        ("[tune.space]\ntop_p = {low = 0.5, high = 1.0, choices = [0.5]}", "tune.space.top_p.low", "choices and a range exclude each other"),
        ("[tune.space]\nmin_p = {low = 0.01, high = 0.2, log = true, step = 0.01}", "tune.space.min_p.step", "no step"),
        ("[tune.space]\nbeam_sampling = [0, 1]", "tune.space.beam_sampling", "choices"),
        ("[tune.space]\ntemperature = {low = 0.1}", "tune.space.temperature", "needs both low and high"),
    ],
)
def test_bad_tune_sections_are_one_clear_error(tmp_path, fake_plugins, cli, tune, key, words) -> None:
    path = tune_registry(tmp_path / "r.toml", tune)
    with pytest.raises(UserError) as exc:
        load_experiment(path, fake_plugins)
    assert exc.value.key == key and words in exc.value.message, exc.value.render()
    result = cli("check", path)
    assert result.exit_code == 2 and key in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_tune_without_a_space_and_prune_without_tune_metric(tmp_path, cli) -> None:
    result = cli("tune", "-r", tune_registry(tmp_path / "r.toml", ""))
    assert result.exit_code == 2 and "tune.space: is empty" in result.stderr
    result = cli("run", "--all", "-r", tune_registry(tmp_path / "s.toml", "[tune]\nmetric = 'nope'", sweep_extra="prune = true"))
    assert result.exit_code == 2 and "tune.metric" in result.stderr


def test_a_space_the_engine_cannot_decode_is_refused_before_anything_runs(tmp_path, cli, monkeypatch) -> None:
    monkeypatch.setattr(fakes.FakeEngine, "unsupported", lambda self, d: "no min_p here" if d.min_p > 0 else None, raising=False)
    path = tune_registry(tmp_path / "r.toml", "[tune]\nmetric = 'fake-len'\n[tune.space]\nmin_p = [0.0, 0.3]")
    result = cli("tune", "-r", path)
    assert result.exit_code == 2 and "tune.space.min_p" in result.stderr and "no min_p here" in result.stderr
    assert not (tmp_path / "out" / "tune.db").exists()


# --------------------------------------------------------------------------- the driver


def test_the_held_out_split_is_seeded_disjoint_and_order_free() -> None:
    from harness.pipeline.tune import holdout_split

    ids = [f"e{i}" for i in range(20)]
    search, held = holdout_split(ids, 0.3, 7)
    assert len(held) == 6 and len(search) == 14 and not set(search) & set(held) and set(search) | set(held) == set(ids)
    assert held == [e for e in ids if e in held]  # split order
    assert holdout_split(list(reversed(ids)), 0.3, 7)[0] == search  # the order trials see does not depend on the split's
    assert holdout_split(ids, 0.3, 8)[1] != held
    with pytest.raises(UserError, match="at least 2 search and 2 held-out"):
        holdout_split(ids[:3], 0.3, 7)


def test_a_trial_config_is_the_sweep_config_with_the_same_parameters(tmp_path, fake_plugins) -> None:
    from harness.pipeline import keys
    from harness.pipeline.tune import trial_config

    exp = load_experiment(tune_registry(tmp_path / "r.toml", TUNE), fake_plugins)
    decoder = fake_plugins.create("decoder", exp.decoder, {})
    sweep = exp.config("top_k_50_num_beams_1_temp_0.5")
    trial = trial_config(exp, decoder, {"temperature": 0.5})
    assert (trial.name, trial.params, trial.decoding) == (sweep.name, sweep.params, sweep.decoding)
    seed = keys.example_seed(exp.sweep_seed, "x")
    assert keys.gen_key("m", {}, "x", trial.decoding, {}, seed) == keys.gen_key("m", {}, "x", sweep.decoding, {}, seed)
    assert trial_config(exp, decoder, {"temperature": 0.73, "top_k": 12}).name == "top_k_12_num_beams_1_temp_0.73"


class Scripted:
    """An evaluator with a known score per (config, example): ``means[config]`` + a shared difficulty + small noise."""

    def __init__(self, means: dict[str, float], n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.difficulty = rng.normal(0, 0.2, n)
        self.noise = {c: rng.normal(0, 0.05, n) for c in means}
        self.means = means
        self.calls: list[tuple[str, int]] = []

    def evaluate(self, config, example_ids):
        self.calls.append((config.name, len(example_ids)))
        return [self.means[config.name] + self.difficulty[int(e[1:])] + self.noise[config.name][int(e[1:])] for e in example_ids]


def _sweep_search(tmp_path, fake_plugins, means, *, pruner="wilcoxon", min_examples=4, chunk=4):
    from harness.pipeline import tune as tp

    tune = f"[tune]\nmetric = 'fake-len'\npruner = '{pruner}'\nchunk = {chunk}\nmin_examples = {min_examples}\nholdout = 0.2"
    exp = load_experiment(tune_registry(tmp_path / "r.toml", tune), fake_plugins)
    ids = [f"e{i}" for i in range(20)]
    plan = tp.make_plan(exp, "fake-base", "sweep", ids, True, [exp.config(c) for c in means])
    evaluator = Scripted(means, 20)
    search = tp.Search(exp, plan, evaluator, fake_plugins.create("decoder", "standard", {}), storage=optuna.storages.InMemoryStorage(),
                       lock_path=tmp_path / ".lock")
    return search, search.run(), evaluator, plan


def test_pruning_decisions_are_optunas_wilcoxon_pruner_on_the_reported_examples(tmp_path, fake_plugins) -> None:
    """Replay every trial into a fresh study and ask Optuna's WilcoxonPruner at each chunk: it prunes exactly where the search did."""
    means = {c: m for c, m in zip(fakes.STUDY_CONFIGS[:6], [0.5, 0.52, 0.3, 0.49, 0.1, 0.55])}
    search, record, _, plan = _sweep_search(tmp_path, fake_plugins, means)
    assert {t.state for t in record.trials} == {"complete", "pruned"}
    frozen = search.study.get_trials(deepcopy=True)
    for t in frozen:
        replay = optuna.create_study(direction="maximize")
        for earlier in frozen[: t.number]:
            replay.add_trial(earlier)
        pruner = optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=4)
        steps = sorted(t.intermediate_values)
        boundaries = [s + 1 for s in steps if (s + 1) % 4 == 0 and s + 1 < len(plan.search)]
        decisions = []
        for end in boundaries:
            partial = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, intermediate_values={s: t.intermediate_values[s] for s in steps if s < end},
                                                 distributions={}, params={})
            decisions.append(pruner.prune(replay, partial))
        if t.state == optuna.trial.TrialState.PRUNED:
            assert decisions and decisions[-1] and not any(decisions[:-1]), (t.number, decisions)
        else:
            assert not any(decisions) and len(steps) == len(plan.search), (t.number, decisions)
    # the clearly worse configs were stopped early; the best was kept
    by_config = {t.config: t for t in record.trials}
    assert by_config[fakes.STUDY_CONFIGS[4]].state == "pruned" and by_config[fakes.STUDY_CONFIGS[4]].n == 4
    assert by_config[fakes.STUDY_CONFIGS[5]].state == "complete"
    assert search.finalists()[0] == fakes.STUDY_CONFIGS[5]


def test_without_the_pruner_every_trial_sees_every_search_example(tmp_path, fake_plugins) -> None:
    means = {c: m for c, m in zip(fakes.STUDY_CONFIGS[:4], [0.5, 0.1, 0.2, 0.6])}
    _, record, evaluator, plan = _sweep_search(tmp_path, fake_plugins, means, pruner="none")
    assert [t.state for t in record.trials] == ["complete"] * 4 and all(t.n == len(plan.search) for t in record.trials)
    # chunk by chunk: 4, 8, 12, 16 search examples of the 16
    assert [n for c, n in evaluator.calls if c == fakes.STUDY_CONFIGS[0]] == [4, 8, 12, 16]


def test_simulated_objective_pruning_saves_work_and_keeps_the_best(tmp_path) -> None:
    """bench/tune_simulated.py, one seed: the pruned grid and TPE pick what the full grid picks, with far fewer generations."""
    pytest.importorskip("torch")  # the simulated experiment names the real peft-lora adapter (validated, never loaded)
    import tune_simulated as sim

    rows = {m: sim.search(m, 0, tmp_path) for m in sim.METHODS}
    full, grid, tpe = rows["full grid"], rows["grid + pruner"], rows["TPE + pruner"]
    assert full["best"] and grid["chosen"] == full["chosen"] and tpe["within"]
    assert grid["generations"] < 0.6 * full["generations"] and tpe["generations"] < 0.3 * full["generations"]
    assert grid["pruned"] > 20


# --------------------------------------------------------------------------- through the store and the CLI


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One `harness tune` (5 trials, fake plugins) whose folder the read-only tests share: (registry, its output, the CLI's output)."""
    from click.testing import CliRunner

    import harness.cli
    import harness.cli.common
    import harness_datasets.synthetic
    import harness_decoders.standard
    import harness_executors.local
    import harness_reporters.builtin
    import harness_reporters.html

    from harness.plugins import build_plugins

    plugins = build_plugins(entry_points=False, extra=[fakes, harness_decoders.standard, harness_reporters.builtin, harness_reporters.html,
                                                       harness_executors.local, harness_datasets.synthetic])
    folder = tmp_path_factory.mktemp("tuned")
    path = tune_registry(folder / "r.toml", TUNE.replace("trials = 6", "trials = 5"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness.cli.common, "build_plugins", lambda **kwargs: plugins)
        fakes.reset()
        result = CliRunner().invoke(harness.cli.main, ["tune", "-r", str(path)])
    assert result.exit_code == 0, result.output + result.stderr
    # one model load and one metric for the whole search: sessions and metrics are pooled across its many small jobs
    assert fakes.FakeEngine.open_calls == 1 and fakes.FakeAdapter.load_calls == 1
    return path, result


def _study(folder: Path):
    storage = f"sqlite:///{folder / 'out' / 'tune.db'}"
    return optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)


def test_tune_records_each_trial_as_a_config_of_its_own(tuned, cli) -> None:
    path, first = tuned
    assert "held-out examples (set aside before the search)" in first.output and "[sweep.defaults]" in first.output
    assert "trial 0 top_k_10_num_beams_1_temp_0.8" in first.stderr  # the baseline (first sweep config) lies in the space: it goes first
    import json

    runs = query(path, "SELECT run_id, status, metadata FROM runs")
    assert len(runs) == 1 and runs[0][1] == "ok" and "fake-base" in json.loads(runs[0][2])["tuning"]
    trials = _study(path.parent).get_trials()
    assert len(trials) == 5
    # every trial is a cell of its own over the examples it was scored on (finalists and baseline: the whole split)
    cells = dict(query(path, "SELECT config, COUNT(*) FROM cell_examples GROUP BY config"))
    names = {t.user_attrs["config"] for t in trials}
    assert names <= set(cells) and all(cells[n] in (7, 14, 20) for n in names)
    report = cli("report", "--format", "csv", "-r", path)
    assert report.exit_code == 0 and all(n in report.output for n in names)


def test_tune_resumes_without_model_work_extends_and_shares_the_sweeps_generations(tuned, cli, tmp_path) -> None:
    import shutil

    shutil.copytree(tuned[0].parent, tmp_path / "copy")
    path = tmp_path / "copy" / "r.toml"
    first = tuned[1]
    # resume: nothing left to do, the same confirmation, no model work
    second = cli("tune", "-r", path)
    assert second.exit_code == 0 and fakes.FakeEngine.generated == 0 and fakes.FakeEngine.open_calls == 0
    assert second.output.split("trials:")[1] == first.output.split("trials:")[1]
    # a larger budget continues the same study
    third = cli("tune", "--trials", "6", "-r", path)
    assert third.exit_code == 0 and "trial 5 " in third.stderr and "trial 6 " not in third.stderr
    # a trial config shares the sweep config's gen keys: a sweep run of the baseline generates nothing new
    generated = fakes.FakeEngine.generated
    again = cli("run", "--config", "top_k_10_num_beams_1_temp_0.8", "-r", path)
    assert again.exit_code == 0 and fakes.FakeEngine.generated == generated
    # after that run the report still shows the trials (read from the latest search's records)
    report = cli("report", "--format", "csv", "-r", path)
    assert all(t.user_attrs["config"] in report.output for t in _study(path.parent).get_trials())


def test_the_held_out_confirmation_is_the_reports_paired_test_on_held_out_examples_only(tuned, fake_plugins) -> None:
    from harness.pipeline.tune import holdout_split
    from harness.report import stats as st
    from harness.report import tuning as rt
    from harness.report.results import Results
    from harness.store import Store

    store = Store(tuned[0].parent / "out", readonly=True)
    results = Results.load(store)
    record = rt.searches(results)["fake-base"]
    test = [e for e, _ in store.db.execute("SELECT id, position FROM examples WHERE split='test' ORDER BY position")]
    assert (list(record.search), list(record.heldout)) == holdout_split(test, 0.3, 0)
    c = rt.confirm(results, fake_plugins, record, seed=0)
    assert c.baseline.config == record.baseline and [f.config for f in c.finalists] == list(record.finalists)
    held = set(record.heldout)

    def held_scores(config):
        v = next(v for v in results.values if v.config == config and v.metric == "fake-len")
        assert {e for e, _ in v.examples} == set(test)  # finalists and baseline: the whole test split
        return {e: s.value for e, s in v.examples if e in held}

    base = held_scores(record.baseline)
    ps = []
    for f in c.finalists:
        mine = held_scores(f.config)
        assert f.n == len(held) and f.value == pytest.approx(np.mean([mine[e] for e in held]))
        assert f.diff == pytest.approx(np.mean([mine[e] - base[e] for e in held]))
        ps.append(f.p_value)
    assert [f.p_holm for f in c.finalists] == pytest.approx(list(st.holm(np.array(ps))), nan_ok=True)
    assert c.ship in [record.baseline, *record.finalists]
    if c.ship == record.baseline:
        assert all(not f.significant or f.diff <= 0 for f in c.finalists)
    assert rt.confirmation_text(c) in tuned[1].output


def test_a_pruned_sweep_stops_clearly_worse_configs_and_confirms_the_finalists(tmp_path, cli) -> None:
    path = tune_registry(tmp_path / "r.toml", "[tune]\nmetric = 'fake-len'\nchunk = 5\nfinalists = 2", sweep_extra="prune = true")
    result = cli("run", "--all", "-r", path)
    assert result.exit_code == 0, result.output + result.stderr
    assert "pruned sweep study" in result.stderr and "pruned after" in result.stderr
    assert "Ship:" in result.output and "[sweep.defaults]" in result.output
    counts = dict(query(path, "SELECT config, COUNT(*) FROM cell_examples GROUP BY config"))
    assert sorted(counts) == sorted(fakes.STUDY_CONFIGS)  # every sweep config is a cell
    assert sum(counts.values()) < 12 * 20  # fewer generations than the plain sweep
    full = [c for c, n in counts.items() if n == 20]
    assert len(full) == 3  # the baseline and 2 finalists on the whole test split
    # the other metric is scored for the configs that have every example
    scored = {c for (c,) in query(path, "SELECT config FROM cell_metrics WHERE metric='fake-overlap'")}
    assert scored == set(full)


def test_ctrl_c_mid_trial_fails_it_and_queues_it_again(tmp_path, cli, monkeypatch) -> None:
    path = tune_registry(tmp_path / "r.toml", TUNE)
    monkeypatch.setattr(fakes.FakeEngine, "interrupt_after_batches", 5)
    result = cli("tune", "-r", path)
    assert result.exit_code == 130
    storage = f"sqlite:///{tmp_path / 'out' / 'tune.db'}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    TS = optuna.trial.TrialState
    failed = [t for t in study.get_trials() if t.state == TS.FAIL]
    waiting = [t for t in study.get_trials() if t.state == TS.WAITING]
    assert len(failed) == 1 and len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == failed[0].params
    assert query(path, "SELECT status FROM runs") == [("interrupted",)]
    monkeypatch.setattr(fakes.FakeEngine, "interrupt_after_batches", None)
    fakes.reset()
    again = cli("tune", "-r", path)
    assert again.exit_code == 0, again.stderr
    study = optuna.load_study(study_name=study.study_name, storage=storage)
    counted = [t for t in study.get_trials() if t.state in (TS.COMPLETE, TS.PRUNED)]
    assert len(counted) == 6 and failed[0].params in [t.params for t in counted]


def test_the_html_report_plots_the_metric_against_each_searched_parameter(tuned, cli, tmp_path) -> None:
    from harness.report import tuning as rt
    from harness.report.results import Results
    from harness.store import Store

    path = tuned[0]
    context = rt.context(Results.load(Store(path.parent / "out", readonly=True)))
    figures = rt.figures(context, [{"name": "fake-len", "label": "FakeLen"}])
    assert [f.id for f in figures] == ["tune-fake-base"] and figures[0].png.startswith(b"\x89PNG")
    assert "dots completed trials, crosses pruned ones" in figures[0].caption
    md = cli("report", "--format", "markdown", "-o", tmp_path / "r.md", "-r", path)
    assert md.exit_code == 0 and (tmp_path / "r_files" / "tune-fake-base.png").exists()
    assert "tune-fake-base.png" in (tmp_path / "r.md").read_text()


def test_without_optuna_tune_says_what_to_install(tmp_path, cli, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    result = cli("tune", "-r", tune_registry(tmp_path / "r.toml", TUNE))
    assert result.exit_code == 2 and "pip install 'llm-decoding-harness[tune]'" in result.stderr
    assert not (tmp_path / "out").exists()

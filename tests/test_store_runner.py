"""The store and the runner with fake plugins: caching, invalidation, failures, resume, reports."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

import fakes
from harness.registry import load_experiment
from harness.report.results import Results
from harness.pipeline.runner import Runner, Selection
from harness.store import STORE_NAME, Store
from harness_executors.local import LocalExecutor

N_TEST = 8
N_CONFIGS = len(fakes.STUDY_CONFIGS)
N_GEN = 2 * N_CONFIGS * N_TEST  # 2 models
STAGES = ("split", "train", "generate", "score")


def run(registry: Path, plugins, stages=STAGES, selection: Selection | None = None):
    """Run ``stages`` with the Runner and the local executor; returns (stats, recorded results without per-example scores)."""
    exp = load_experiment(registry, plugins)
    store = Store(exp.output_dir)
    try:
        store.start_run("test", {"experiment_snapshot": exp.snapshot(plugins)})
        runner = Runner(exp, plugins, store, selection=selection, executor=LocalExecutor())
        runner.run(stages)
        return runner.stats, results(store, selection)
    finally:
        store.close()


def results(store: Store, selection: Selection | None = None) -> dict[tuple[str, str, str], tuple]:
    sel = selection or Selection()
    loaded = Results.load(store, models=sel.models, configs=sel.configs, metrics=sel.metrics)
    return {(v.model, v.config, v.metric): (v.value, v.n, v.error) for v in loaded.values}


def db(registry: Path, name: str = "out") -> sqlite3.Connection:
    return sqlite3.connect(registry.parent / name / STORE_NAME)


def count(registry: Path, table: str, name: str = "out") -> int:
    con = db(registry, name)
    try:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def rewrite(registry: Path, **kwargs) -> Path:
    return fakes.write_registry(registry, **kwargs)


def metric_rows(res, metric: str):
    return {k: v for k, v in res.items() if k[2] == metric}


def counters() -> dict[str, object]:
    return {
        "open": fakes.FakeEngine.open_calls,
        "generate": fakes.FakeEngine.generate_calls,
        "generated": fakes.FakeEngine.generated,
        "train": fakes.FakeAdapter.train_calls,
        "load": fakes.FakeAdapter.load_calls,
        "scored": dict(fakes._CountingMetric.scored),
    }


# --------------------------------------------------------------------------- a full run


def test_full_run_fills_the_store(fake_plugins, fake_registry) -> None:
    stats, res = run(fake_registry, fake_plugins)
    assert (stats.trained, stats.reused_adapters) == (1, 0)
    assert (stats.generated, stats.cached_generations) == (N_GEN, 0)
    assert (stats.scored, stats.cached_scores) == (2 * N_GEN, 0)
    assert stats.failed_cells == []
    assert fakes.FakeAdapter.train_calls == 1
    assert fakes.FakeEngine.open_calls == 2  # once per model
    assert fakes.FakeEngine.generated == N_GEN

    assert count(fake_registry, "splits") == 1
    assert count(fake_registry, "examples") == 40  # 8 test + 32 train
    assert count(fake_registry, "adapters") == 1
    assert count(fake_registry, "generations") == N_GEN
    assert count(fake_registry, "scores") == 2 * N_GEN
    assert count(fake_registry, "metric_ids") == 2
    assert count(fake_registry, "failures") == 0

    adapters = list((fake_registry.parent / "out" / "adapters").iterdir())
    assert [p.name.startswith("fake-tuned-") for p in adapters] == [True]  # no leftover .train- folders
    assert (adapters[0] / "adapter_model.safetensors").read_bytes().startswith(b"fake")

    scored = {k: v for k, v in res.items() if k[2] != "human"}
    assert len(scored) == 2 * N_CONFIGS * 2
    for (model, config, metric), (value, n, error) in scored.items():
        assert value is not None and 0.0 <= value <= 1.0 and n == N_TEST and error is None
    # human: no ratings yet
    assert all(v == (None, 0, None) for k, v in res.items() if k[2] == "human")


def test_store_uses_wal(fake_plugins, fake_registry) -> None:
    run(fake_registry, fake_plugins, stages=("split",))
    con = db(fake_registry)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_second_run_does_no_model_work_and_gives_identical_results(fake_plugins, fake_registry) -> None:
    _, first = run(fake_registry, fake_plugins)
    before = counters()
    stats, second = run(fake_registry, fake_plugins)
    assert counters() == before  # no engine open, no training, no generation, no scoring
    assert (stats.trained, stats.reused_adapters, stats.generated, stats.scored) == (0, 1, 0, 0)
    assert (stats.cached_generations, stats.cached_scores) == (N_GEN, 2 * N_GEN)
    assert second == first
    assert count(fake_registry, "generations") == N_GEN and count(fake_registry, "scores") == 2 * N_GEN


def test_second_cli_run_does_no_model_work(cli, fake_registry) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    first = cli("report", "--format", "json", "-r", fake_registry)
    before = counters()
    result = cli("run", "--all", "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert f"generated 0 (cached {N_GEN})" in result.stderr and "trained 0 (reused 1)" in result.stderr
    assert counters() == before
    assert cli("report", "--format", "json", "-r", fake_registry).stdout == first.stdout


# --------------------------------------------------------------------------- what a change recomputes


def test_changing_the_sweep_seed_recomputes_only_sampled_configs(fake_plugins, fake_registry) -> None:
    _, first = run(fake_registry, fake_plugins)
    rewrite(fake_registry, sweep={"decoder": "standard", "mode": "one-at-a-time", "max_new_tokens": 16, "seed": 1,
                                  "defaults": fakes.STUDY_DEFAULTS, "vary": fakes.STUDY_VARY})
    fakes.reset()
    stats, second = run(fake_registry, fake_plugins)
    n_sampled = len(fakes.SAMPLED_CONFIGS)
    assert n_sampled == 7
    assert stats.generated == 2 * n_sampled * N_TEST
    assert stats.cached_generations == 2 * (N_CONFIGS - n_sampled) * N_TEST
    assert fakes.FakeAdapter.train_calls == 0  # the sweep seed does not touch training
    for key, value in first.items():
        if key[1] not in fakes.SAMPLED_CONFIGS:
            assert second[key] == value, key
    assert count(fake_registry, "generations") == N_GEN + 2 * n_sampled * N_TEST  # old rows stay, new keys added


def test_changing_a_metric_setting_recomputes_only_that_metric(fake_plugins, fake_registry) -> None:
    _, first = run(fake_registry, fake_plugins)
    rewrite(fake_registry, metric_settings={"fake-len": {"cap": 0.3}})
    fakes.reset()
    stats, second = run(fake_registry, fake_plugins)
    assert fakes._CountingMetric.scored == {"fake-len": N_GEN}
    assert (stats.generated, stats.scored) == (0, N_GEN)
    assert fakes.FakeEngine.open_calls == 0
    assert metric_rows(second, "fake-overlap") == metric_rows(first, "fake-overlap")
    assert all(v[0] <= 0.3 for v in metric_rows(second, "fake-len").values())
    assert metric_rows(second, "fake-len") != metric_rows(first, "fake-len")


def test_bumping_a_metric_version_recomputes_only_that_metric(fake_plugins, fake_registry, monkeypatch) -> None:
    _, first = run(fake_registry, fake_plugins)
    monkeypatch.setattr(fakes.FakeOverlapMetric, "version", "2")
    fakes.reset()
    stats, second = run(fake_registry, fake_plugins)
    assert fakes._CountingMetric.scored == {"fake-overlap": N_GEN}
    assert (stats.generated, stats.scored) == (0, N_GEN)
    assert second == first  # same numbers, recomputed under the new identity
    assert count(fake_registry, "metric_ids") == 3


def test_adding_a_metric_computes_only_that_metric(fake_plugins, fake_registry) -> None:
    rewrite(fake_registry, metrics=["fake-len"])
    _, first = run(fake_registry, fake_plugins)
    rewrite(fake_registry, metrics=["fake-len", "fake-overlap"])
    fakes.reset()
    stats, second = run(fake_registry, fake_plugins)
    assert fakes._CountingMetric.scored == {"fake-overlap": N_GEN}
    assert (stats.generated, stats.scored, stats.cached_scores) == (0, N_GEN, N_GEN)
    assert fakes.FakeEngine.open_calls == 0 and fakes.FakeAdapter.train_calls == 0
    assert metric_rows(second, "fake-len") == metric_rows(first, "fake-len")
    assert all(v[0] is not None for v in metric_rows(second, "fake-overlap").values())


def test_changing_the_template_recomputes_that_model(fake_plugins, fake_registry) -> None:
    run(fake_registry, fake_plugins)
    models = [dict(m) for m in fakes.DEFAULT_MODELS]
    models[1]["template"] = "chat"  # the fine-tuned model: retrain and regenerate
    rewrite(fake_registry, models=models)
    fakes.reset()
    stats, res = run(fake_registry, fake_plugins)
    assert fakes.FakeAdapter.train_calls == 1
    assert stats.generated == N_CONFIGS * N_TEST and stats.cached_generations == N_CONFIGS * N_TEST
    assert fakes.FakeEngine.open_calls == 1
    con = db(fake_registry)
    try:
        texts = [t for (t,) in con.execute("SELECT text FROM generations")]
        assert count(fake_registry, "adapters") == 2
    finally:
        con.close()
    assert len(texts) == N_GEN + N_CONFIGS * N_TEST
    assert all(v[0] is not None for k, v in res.items() if k[2] != "human")


def test_changing_the_base_model_recomputes_that_model(fake_plugins, fake_registry) -> None:
    run(fake_registry, fake_plugins)
    models = [dict(m) for m in fakes.DEFAULT_MODELS]
    models[0]["base_model"] = "fake/base-b"  # the plain model: regenerate, nothing to train
    rewrite(fake_registry, models=models)
    fakes.reset()
    stats, _ = run(fake_registry, fake_plugins)
    assert fakes.FakeAdapter.train_calls == 0
    assert stats.generated == N_CONFIGS * N_TEST
    models[1]["base_model"] = "fake/base-b"  # the fine-tuned model: retrain too
    rewrite(fake_registry, models=models)
    fakes.reset()
    stats, _ = run(fake_registry, fake_plugins)
    assert fakes.FakeAdapter.train_calls == 1
    assert stats.generated == N_CONFIGS * N_TEST


def test_changing_finetune_settings_retrains(fake_plugins, fake_registry) -> None:
    run(fake_registry, fake_plugins)
    models = [dict(m) for m in fakes.DEFAULT_MODELS]
    models[1]["finetune"] = {"r": 8, "alpha": 8, "max_steps": 2}
    rewrite(fake_registry, models=models)
    fakes.reset()
    stats, _ = run(fake_registry, fake_plugins)
    assert (fakes.FakeAdapter.train_calls, stats.trained) == (1, 1)
    assert stats.generated == N_CONFIGS * N_TEST  # the tuned model only


def test_a_deleted_adapter_is_retrained(fake_plugins, fake_registry) -> None:
    import shutil

    run(fake_registry, fake_plugins)
    for p in (fake_registry.parent / "out" / "adapters").iterdir():
        shutil.rmtree(p)
    fakes.reset()
    stats, _ = run(fake_registry, fake_plugins)
    assert stats.trained == 1
    assert stats.generated == 0  # same weights, same sha: generations still valid


def test_identical_effective_decodings_share_generations(fake_plugins, tmp_path) -> None:
    models = [fakes.DEFAULT_MODELS[0]]
    grid = {"decoder": "standard", "mode": "grid", "max_new_tokens": 16, "seed": 0,
            "defaults": fakes.STUDY_DEFAULTS, "vary": {"top_k": [10, 50], "temperature": [0.0, 0.8]}}
    registry = fakes.write_registry(tmp_path / "registry.toml", models=models, sweep=grid)
    stats, res = run(registry, fake_plugins)
    # top_k_10 and top_k_50 at temperature 0 are both greedy: one set of generations
    assert stats.generated == 3 * N_TEST
    assert fakes.FakeEngine.generated == 3 * N_TEST
    assert count(registry, "generations") == 3 * N_TEST
    assert count(registry, "scores") == 2 * 3 * N_TEST
    for metric in ("fake-len", "fake-overlap"):
        a = res[("fake-base", "top_k_10_num_beams_1_temp_0.0", metric)]
        b = res[("fake-base", "top_k_50_num_beams_1_temp_0.0", metric)]
        assert a == b and a[1] == N_TEST and a[0] is not None

    # a new config that decodes like an existing one generates nothing
    grid["vary"]["top_k"] = [10, 50, 75]
    fakes.write_registry(registry, models=models, sweep=grid)
    fakes.reset()
    stats, res = run(registry, fake_plugins)
    assert stats.generated == 1 * N_TEST  # only top_k_75 at temperature 0.8 is new
    assert res[("fake-base", "top_k_75_num_beams_1_temp_0.0", "fake-len")] == res[("fake-base", "top_k_10_num_beams_1_temp_0.0", "fake-len")]


def test_selection_runs_only_the_selected_cells(fake_plugins, fake_registry) -> None:
    sel = Selection(models=["fake-base"], configs=["top_k_50_num_beams_1_temp_0.0"], metrics=["fake-len"])
    stats, res = run(fake_registry, fake_plugins, selection=sel)
    assert (stats.trained, stats.generated, stats.scored) == (0, N_TEST, N_TEST)
    assert set(res) == {("fake-base", "top_k_50_num_beams_1_temp_0.0", "fake-len"), ("fake-base", "top_k_50_num_beams_1_temp_0.0", "human")}


# --------------------------------------------------------------------------- failures


def test_one_engine_call_per_model_takes_every_config_and_compile_time_is_a_stage(fake_plugins, fake_registry, monkeypatch) -> None:
    """GenerateJob hands a model's configs to the engine at once (each request with its own decoding); a session's
    compile time is recorded as a stage of its own."""
    monkeypatch.setattr(fakes.FakeEngine, "compile_seconds", 1.25)
    stats, res = run(fake_registry, fake_plugins)
    assert fakes.FakeEngine.generate_calls == 2  # one call per model, not one per config
    assert stats.generated == N_GEN and not stats.failed_cells
    assert stats.stage_seconds["compile"] == pytest.approx(2.5)
    assert all(error is None for _, _, error in res.values())


def test_a_failing_config_is_a_failed_cell_and_the_rest_completes(cli, fake_registry) -> None:
    rewrite(fake_registry, engine={"name": "fake-engine", "batch_size": 4, "fail_num_beams": 3})
    result = cli("run", "--all", "-r", fake_registry)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "2 cell(s) failed" in result.stderr
    assert "failed" in result.stdout  # the report printed by `run`
    bad = "top_k_50_num_beams_3_temp_0.8"

    report = json.loads(cli("report", "--format", "json", "-r", fake_registry).stdout)
    for row in report:
        if row["metric"] == "human":
            continue
        if row["config"] == bad:
            assert row["value"] is None and row["n"] == 0
            assert "RuntimeError: fake engine failure for num_beams=3" in row["error"]
        else:
            assert row["value"] is not None and row["n"] == N_TEST and row["error"] is None, row
    assert count(fake_registry, "generations") == N_GEN - 2 * N_TEST
    con = db(fake_registry)
    try:
        cells = sorted(c for (c,) in con.execute("SELECT cell FROM failures"))
        status = con.execute("SELECT status FROM runs ORDER BY run_id DESC").fetchone()[0]
    finally:
        con.close()
    assert cells == [f"generate/fake-base/{bad}", f"generate/fake-tuned/{bad}"]
    assert status == "failed"

    table = cli("report", "-r", fake_registry)
    assert table.exit_code == 0 and "failed" in table.stdout
    assert "failed" in cli("report", "--format", "markdown", "-r", fake_registry).stdout

    # fixed: the next run generates only the failed cells and clears the failures
    rewrite(fake_registry)
    fakes.reset()
    result = cli("run", "--all", "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert fakes.FakeEngine.generated == 2 * N_TEST
    assert count(fake_registry, "failures") == 0
    report = json.loads(cli("report", "--format", "json", "-r", fake_registry).stdout)
    assert all(r["value"] is not None and r["error"] is None for r in report if r["metric"] != "human")


def test_a_config_sharing_a_failed_configs_generations_is_failed_too(fake_plugins, tmp_path) -> None:
    grid = {"decoder": "standard", "mode": "grid", "max_new_tokens": 16, "seed": 0,
            "defaults": fakes.STUDY_DEFAULTS, "vary": {"top_k": [10, 50], "num_beams": [1, 3]}}
    registry = fakes.write_registry(tmp_path / "registry.toml", models=[fakes.DEFAULT_MODELS[0]], sweep=grid,
                                    engine={"name": "fake-engine", "fail_num_beams": 3})
    _, res = run(registry, fake_plugins)
    # top_k_10 and top_k_50 with 3 beams decode identically (beam search ignores top_k): both failed
    for config in ("top_k_10_num_beams_3_temp_0.8", "top_k_50_num_beams_3_temp_0.8"):
        value, n, error = res[("fake-base", config, "fake-len")]
        assert value is None and error and "fake engine failure" in error, config


def test_a_failing_training_fails_that_models_cells_only(fake_plugins, fake_registry) -> None:
    models = [dict(m) for m in fakes.DEFAULT_MODELS]
    models[1]["fail_train"] = True
    rewrite(fake_registry, models=models)
    stats, res = run(fake_registry, fake_plugins)
    assert "train/fake-tuned" in stats.failed_cells
    assert stats.generated == N_CONFIGS * N_TEST  # fake-base
    for (model, config, metric), (value, n, error) in res.items():
        if metric == "human":
            continue
        if model == "fake-tuned":
            assert value is None and n == 0 and error  # "fine-tuning failed"
        else:
            assert value is not None and error is None
    con = db(fake_registry)
    try:
        errors = dict(con.execute("SELECT cell, error FROM failures"))
    finally:
        con.close()
    assert errors["train/fake-tuned"] == "RuntimeError: fake training failure"
    assert len(errors) == 1 + N_CONFIGS  # the training and every generate cell of that model


# --------------------------------------------------------------------------- resume


def _snapshot(registry: Path, name: str = "out"):
    con = db(registry, name)
    try:
        gens = dict(con.execute("SELECT gen_key, text FROM generations"))
        scores = {(g, m): v for g, m, v in con.execute("SELECT gen_key, metric_key, value FROM scores")}
        dup_g = con.execute("SELECT COUNT(*) - COUNT(DISTINCT gen_key) FROM generations").fetchone()[0]
        dup_s = con.execute("SELECT COUNT(*) - COUNT(DISTINCT gen_key || '/' || metric_key) FROM scores").fetchone()[0]
        n_g = con.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        n_s = con.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    finally:
        con.close()
    return gens, scores, (n_g, n_s, dup_g, dup_s)


def test_an_interrupted_run_resumes_to_the_same_results(cli, fake_registry, monkeypatch) -> None:
    monkeypatch.setattr(fakes.FakeEngine, "interrupt_after_batches", 5)
    result = cli("run", "--all", "-r", fake_registry)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr and "Traceback" not in result.output
    # the 5 finished batches (4 requests each) are kept; nothing was scored yet
    assert count(fake_registry, "generations") == 5 * 4
    assert count(fake_registry, "scores") == 0
    con = db(fake_registry)
    try:
        assert con.execute("SELECT status FROM runs ORDER BY run_id DESC").fetchone()[0] == "interrupted"
    finally:
        con.close()

    monkeypatch.setattr(fakes.FakeEngine, "interrupt_after_batches", None)
    fakes.reset()
    result = cli("run", "--all", "-r", fake_registry)
    assert result.exit_code == 0, result.output
    assert fakes.FakeEngine.generated == N_GEN - 5 * 4  # the kept batches are not redone
    assert fakes.FakeAdapter.train_calls == 0  # the adapter was finished before the interrupt
    resumed_report = json.loads(cli("report", "--format", "json", "-r", fake_registry).stdout)

    # the same experiment, uninterrupted, in a fresh folder
    fresh_dir = fake_registry.parent / "fresh"
    fresh_dir.mkdir()
    fresh = fakes.write_registry(fresh_dir / "registry.toml")
    assert cli("run", "--all", "-r", fresh).exit_code == 0
    fresh_report = json.loads(cli("report", "--format", "json", "-r", fresh).stdout)

    gens, scores, counts = _snapshot(fake_registry)
    fresh_gens, fresh_scores, fresh_counts = _snapshot(fresh)
    assert counts == fresh_counts == (N_GEN, 2 * N_GEN, 0, 0)  # no duplicate rows
    assert gens == fresh_gens
    assert scores == fresh_scores
    assert resumed_report == fresh_report


def test_an_interrupt_through_the_runner_keeps_finished_batches(fake_plugins, fake_registry, monkeypatch) -> None:
    monkeypatch.setattr(fakes.FakeEngine, "interrupt_after_batches", 3)
    with pytest.raises(KeyboardInterrupt):
        run(fake_registry, fake_plugins)
    assert count(fake_registry, "generations") == 3 * 4
    monkeypatch.setattr(fakes.FakeEngine, "interrupt_after_batches", None)
    stats, _ = run(fake_registry, fake_plugins)
    assert (stats.generated, stats.cached_generations) == (N_GEN - 12, 12)
    assert stats.failed_cells == []


# --------------------------------------------------------------------------- reports


def test_report_formats(cli, fake_registry) -> None:
    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    before = counters()

    out = cli("report", "--format", "json", "-r", fake_registry)
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert isinstance(rows, list) and len(rows) == 2 * N_CONFIGS * 3  # fake-len, fake-overlap, human
    for row in rows:
        assert {"model", "config", "metric", "value", "n"} <= set(row)
    assert {r["metric"] for r in rows} == {"fake-len", "fake-overlap", "human"}
    assert [r["config"] for r in rows if r["model"] == "fake-base" and r["metric"] == "fake-len"] == fakes.STUDY_CONFIGS
    assert all(r["n"] == N_TEST for r in rows if r["metric"] != "human")
    assert next(r for r in rows if r["metric"] == "fake-len")["metric_identity"]["settings"] == {"mode": "length", "cap": 1.0}

    out = cli("report", "--format", "csv", "-r", fake_registry)
    assert out.exit_code == 0
    parsed = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(parsed) == len(rows)
    assert {"model", "config", "metric", "value", "n"} <= set(parsed[0])
    by_key = {(r["model"], r["config"], r["metric"]): r for r in rows}
    for r in parsed:
        ref = by_key[(r["model"], r["config"], r["metric"])]
        assert int(r["n"]) == ref["n"]
        assert (r["value"] == "") if ref["value"] is None else float(r["value"]) == pytest.approx(ref["value"])

    out = cli("report", "--format", "markdown", "-r", fake_registry)
    assert out.exit_code == 0
    md = out.stdout
    assert "## fake-base" in md and "## fake-tuned" in md
    assert "| Config | FakeLen | fake-overlap | Human | n |" in md
    first_cells = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| top_k_")]
    assert len(first_cells) == 2 * N_CONFIGS
    assert all(any(cell.startswith(c) for cell in first_cells) for c in fakes.STUDY_CONFIGS)

    out = cli("report", "--format", "json", "-o", fake_registry.parent / "report.json", "-r", fake_registry)
    assert out.exit_code == 0
    assert json.loads((fake_registry.parent / "report.json").read_text()) == rows

    assert counters() == before  # reports compute nothing

    out = cli("report", "--format", "jsn", "-r", fake_registry)
    assert out.exit_code == 2 and "did you mean 'json'?" in out.stderr


def test_report_without_results_is_a_user_error(cli, fake_registry) -> None:
    out = cli("report", "-r", fake_registry)
    assert out.exit_code == 2
    assert "no results yet" in out.stderr and "Traceback" not in out.output
    assert not (fake_registry.parent / "out").exists()


def test_an_executor_with_room_for_more_jobs_gets_each_models_configs_split(fake_plugins, tmp_path) -> None:
    """With capacity for 5 generation jobs and 2 models, each model's configs go to 3 jobs (one model load each); results are the same."""

    class Wide(LocalExecutor):
        def capacity(self, kind: str) -> int:
            return 5

    one = fakes.write_registry(tmp_path / "one.toml", output_dir="one")
    wide = fakes.write_registry(tmp_path / "wide.toml", output_dir="wide")
    _, expected = run(one, fake_plugins)
    exp = load_experiment(wide, fake_plugins)
    store = Store(exp.output_dir)
    try:
        store.start_run("test", {"experiment_snapshot": exp.snapshot(fake_plugins)})
        fakes.reset()
        Runner(exp, fake_plugins, store, executor=Wide()).run(STAGES)
        assert fakes.FakeEngine.open_calls == 6
        assert results(store) == expected
    finally:
        store.close()

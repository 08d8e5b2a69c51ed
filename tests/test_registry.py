"""registry.toml: the shipped file, sweep modes, decoding semantics, and bad input through ``harness check``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from harness.errors import UserError

import fakes
from harness.plugins import build_plugins
from harness.registry import load_experiment
from harness_decoders.standard import StandardDecoder

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str | None = None, **kwargs) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(fakes.registry_toml(**kwargs) if text is None else text, encoding="utf-8")
    return path


def _sweep(mode="one-at-a-time", defaults=None, vary=None, **extra):
    return {"decoder": "standard", "mode": mode, "max_new_tokens": 16, "seed": 0,
            **extra, "defaults": dict(fakes.STUDY_DEFAULTS if defaults is None else defaults),
            "vary": {k: list(v) if isinstance(v, list) else v for k, v in (fakes.STUDY_VARY if vary is None else vary).items()}}


# --------------------------------------------------------------------------- the shipped file


def test_shipped_registry_validates_with_the_real_plugins() -> None:
    plugins = build_plugins()
    assert not plugins.failures, plugins.failures
    exp = load_experiment(ROOT / "registry.toml", plugins)
    # the defaults first (the report's baseline), then the study's 12 configs, each varying one parameter
    assert [c.name for c in exp.configs] == ["top_k_50_num_beams_1_temp_0.8", *fakes.STUDY_CONFIGS]
    assert len(exp.configs) == 13
    for config in exp.configs[1:]:
        changed = {k: v for k, v in config.params.items() if v != {**fakes.STUDY_DEFAULTS, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0, "beam_sampling": False}[k]}
        assert len(changed) == 1, config
    assert exp.decoder == "standard"
    assert exp.metrics == ["bleu", "rouge_l", "bertscore"]
    assert [m.name for m in exp.models] == ["smollm2-135m", "smollm2-135m-lora"]
    assert exp.models[0].finetune is None and exp.models[1].finetune is not None
    assert exp.output_dir == (ROOT / "runs" / "default").resolve()


def test_check_command_accepts_the_shipped_registry() -> None:
    from click.testing import CliRunner

    import harness.cli

    result = CliRunner().invoke(harness.cli.main, ["check", str(ROOT / "registry.toml")])
    assert result.exit_code == 0, result.output
    assert "13 decoding configs" in result.stdout


def test_fake_registry_is_the_study_sweep(fake_plugins, fake_registry) -> None:
    exp = load_experiment(fake_registry, fake_plugins)
    assert [c.name for c in exp.configs] == fakes.STUDY_CONFIGS
    assert exp.output_dir == (fake_registry.parent / "out").resolve()
    assert exp.engine_settings == {"batch_size": 4, "fail_num_beams": 0}  # defaults filled in
    assert exp.metric_settings["fake-len"] == {"mode": "length", "cap": 1.0}


# --------------------------------------------------------------------------- sweep modes


def test_grid_mode_is_the_full_product(tmp_path, fake_plugins) -> None:
    vary = {"top_k": [10, 40], "num_beams": [1, 3], "temperature": [0.0, 0.5, 1.0]}
    exp = load_experiment(_write(tmp_path, sweep=_sweep("grid", vary=vary)), fake_plugins)
    assert len(exp.configs) == 2 * 2 * 3
    names = [c.name for c in exp.configs]
    assert len(set(names)) == 12
    assert names[0] == "top_k_10_num_beams_1_temp_0.0"
    assert "top_k_40_num_beams_3_temp_1.0" in names
    assert {(c.params["top_k"], c.params["num_beams"], c.params["temperature"]) for c in exp.configs} == {
        (k, b, t) for k in vary["top_k"] for b in vary["num_beams"] for t in vary["temperature"]
    }


def test_include_defaults_adds_the_defaults_config(tmp_path, fake_plugins) -> None:
    exp = load_experiment(_write(tmp_path, sweep=_sweep(include_defaults=True)), fake_plugins)
    names = [c.name for c in exp.configs]
    assert names == ["top_k_50_num_beams_1_temp_0.8", *fakes.STUDY_CONFIGS]


def test_no_vary_runs_the_defaults_only(tmp_path, fake_plugins) -> None:
    exp = load_experiment(_write(tmp_path, sweep=_sweep(vary={})), fake_plugins)
    assert [c.name for c in exp.configs] == ["top_k_50_num_beams_1_temp_0.8"]


def test_a_vary_value_equal_to_the_default_is_one_config(tmp_path, fake_plugins) -> None:
    exp = load_experiment(_write(tmp_path, sweep=_sweep(vary={"top_k": [50, 10]}, include_defaults=True)), fake_plugins)
    assert [c.name for c in exp.configs] == ["top_k_50_num_beams_1_temp_0.8", "top_k_10_num_beams_1_temp_0.8"]


# --------------------------------------------------------------------------- decoding semantics


def test_effective_decoding_of_the_study_sweep(fake_plugins, fake_registry) -> None:
    exp = load_experiment(fake_registry, fake_plugins)
    by_name = {c.name: c.decoding for c in exp.configs}

    greedy = by_name["top_k_50_num_beams_1_temp_0.0"]
    assert greedy.strategy == "greedy" and not greedy.do_sample
    assert set(greedy.unused) == {"temperature", "top_k", "top_p"}
    assert (greedy.temperature, greedy.top_k, greedy.top_p, greedy.num_beams) == (1.0, 0, 1.0, 1)  # neutral
    assert dict(greedy.requested)["temperature"] == 0.0 and dict(greedy.requested)["top_k"] == 50

    for beams in (2, 3, 5, 10):
        beam = by_name[f"top_k_50_num_beams_{beams}_temp_0.8"]
        assert beam.strategy == "beam" and not beam.do_sample
        assert beam.num_beams == beams
        assert set(beam.unused) == {"temperature", "top_k", "top_p"}
        assert (beam.temperature, beam.top_k) == (1.0, 0)

    sample = by_name["top_k_10_num_beams_1_temp_0.8"]
    assert sample.strategy == "sample" and sample.do_sample
    assert (sample.temperature, sample.top_k, sample.top_p, sample.unused) == (0.8, 10, 1.0, ())
    assert {n for n, d in by_name.items() if d.do_sample} == set(fakes.SAMPLED_CONFIGS)
    assert all(d.max_new_tokens == 16 for d in by_name.values())


def test_beam_sampling_only_when_asked(tmp_path, fake_plugins) -> None:
    exp = load_experiment(
        _write(tmp_path, sweep=_sweep(defaults={"top_k": 40, "num_beams": 1, "temperature": 0.7, "beam_sampling": True}, vary={"num_beams": [2, 4]})),
        fake_plugins,
    )
    assert [c.name for c in exp.configs] == ["top_k_40_num_beams_2_temp_0.7_beam_sampling", "top_k_40_num_beams_4_temp_0.7_beam_sampling"]
    d = exp.configs[0].decoding
    assert d.strategy == "beam_sample" and d.do_sample
    assert (d.num_beams, d.temperature, d.top_k, d.unused) == (2, 0.7, 40, ())


def test_identical_effective_decodings_have_equal_identity() -> None:
    dec = StandardDecoder({})
    a = dec.resolve({"top_k": 10, "num_beams": 1, "temperature": 0.0}, 32)
    b = dec.resolve({"top_k": 50, "num_beams": 1, "temperature": 0.0, "top_p": 0.9}, 32)
    assert a.effective() == b.effective()
    assert a.requested != b.requested
    c = dec.resolve({"top_k": 10, "num_beams": 4, "temperature": 0.3}, 32)
    d = dec.resolve({"top_k": 75, "num_beams": 4, "temperature": 1.0}, 32)
    assert c.effective() == d.effective()
    assert dec.resolve({"top_k": 10}, 32).effective() != dec.resolve({"top_k": 25}, 32).effective()


def test_min_p_and_repetition_penalty_resolve_and_name_configs_without_touching_existing_keys() -> None:
    from harness.pipeline.keys import decoding_key

    dec = StandardDecoder({})
    plain = dec.resolve({"top_k": 50, "num_beams": 1, "temperature": 0.8}, 32)
    assert "min_p" not in decoding_key(plain) and "repetition_penalty" not in decoding_key(plain)  # old cache keys stay
    tuned = dec.resolve({"temperature": 0.8, "min_p": 0.1, "repetition_penalty": 1.3}, 32)
    assert (tuned.strategy, tuned.min_p, tuned.repetition_penalty) == ("sample", 0.1, 1.3)
    assert dec.config_name({"temperature": 0.8, "min_p": 0.1, "repetition_penalty": 1.3}) == "top_k_50_num_beams_1_temp_0.8_min_p_0.1_rep_1.3"
    greedy = dec.resolve({"temperature": 0.0, "min_p": 0.1, "repetition_penalty": 1.2}, 32)
    assert greedy.strategy == "greedy" and greedy.min_p == 0.0 and "min_p" in greedy.unused and greedy.repetition_penalty == 1.2
    assert set(dec.resolve({"temperature": 0.0}, 32).unused) == {"temperature", "top_k", "top_p"}
    beam = dec.resolve({"num_beams": 3, "repetition_penalty": 1.1}, 32)
    assert beam.strategy == "beam" and beam.repetition_penalty == 1.1
    with pytest.raises(UserError, match="repetition_penalty must be > 0"):
        dec.resolve({"repetition_penalty": 0.0}, 32)


# --------------------------------------------------------------------------- bad input via `harness check`


def _bad(**kwargs):
    kwargs.setdefault("output_dir", "out")
    return fakes.registry_toml(**kwargs)


def _models(*overrides):
    out = []
    for i, o in enumerate(overrides):
        out.append({"name": f"m{i}", "adapter": "fake-model", "base_model": "fake/base-a", "finetune": False, **o})
    return out


BAD_INPUTS = {
    "unknown-section": (
        _bad() + '\n[experimnt]\nname = "x"\n',
        "experimnt",
        "unknown section (did you mean 'experiment'?)",
    ),
    "unknown-key": (
        _bad(dataset={"source": "fake-data", "test_sise": 8}),
        "dataset.test_sise",
        "unknown key (did you mean 'test_size'?)",
    ),
    "unknown-engine": (
        _bad(engine={"name": "fake-engin"}),
        "engine.name",
        "unknown engine plugin 'fake-engin' (did you mean 'fake-engine'?)",
    ),
    "unknown-engine-option": (
        _bad(engine={"name": "fake-engine", "batch_sise": 2}),
        "engine.batch_sise",
        "did you mean 'batch_size'?",
    ),
    "unknown-metric": (
        _bad(metrics=["fake-len", "fake-overlp"]),
        "metrics.names[1]",
        "unknown metric plugin 'fake-overlp' (did you mean 'fake-overlap'?)",
    ),
    "unknown-metric-option": (
        _bad(metric_settings={"fake-len": {"cap": 1.0, "mdoe": "exact"}}),
        "metrics.fake-len.mdoe",
        "did you mean 'mode'?",
    ),
    "metric-option-choice": (
        _bad(metric_settings={"fake-len": {"mode": "exakt"}}),
        "metrics.fake-len.mode",
        "'exakt' is not allowed (did you mean 'exact'?)",
    ),
    "unknown-model-adapter": (
        _bad(models=_models({"adapter": "fake-modle"})),
        "models[0].adapter",
        "unknown model plugin 'fake-modle' (did you mean 'fake-model'?)",
    ),
    "unknown-dataset": (
        _bad(dataset={"source": "fake-dat", "test_size": 8}),
        "dataset.source",
        "unknown dataset plugin 'fake-dat' (did you mean 'fake-data'?)",
    ),
    "unknown-decoder": (
        _bad(sweep={"decoder": "standart"}),
        "sweep.decoder",
        "unknown decoder plugin 'standart' (did you mean 'standard'?)",
    ),
    "unknown-sweep-param": (
        _bad(sweep=_sweep(vary={"temprature": [0.5]})),
        "sweep.vary.temprature",
        "unknown parameter (did you mean 'temperature'?)",
    ),
    "wrong-type": (
        _bad(dataset={"source": "fake-data", "test_size": "8"}),
        "dataset.test_size",
        "must be an integer, got a string '8'",
    ),
    "wrong-type-bool": (
        _bad(sweep=_sweep(include_defaults="yes")),
        "sweep.include_defaults",
        "must be true or false",
    ),
    "negative-temperature": (
        _bad(sweep=_sweep(vary={"temperature": [0.5, -0.1]})),
        "sweep.vary.temperature[1]",
        "must be >= 0, got -0.1",
    ),
    "num-beams-below-1": (
        _bad(sweep=_sweep(defaults={"top_k": 50, "num_beams": 0, "temperature": 0.8})),
        "sweep.defaults.num_beams",
        "must be >= 1, got 0",
    ),
    "negative-top-k": (
        _bad(sweep=_sweep(vary={"top_k": [-1]})),
        "sweep.vary.top_k[0]",
        "must be >= 0, got -1",
    ),
    "beam-sampling-without-beams": (
        _bad(sweep=_sweep(defaults={"top_k": 50, "num_beams": 1, "temperature": 0.8, "beam_sampling": True}, vary={})),
        "sweep (top_k_50_num_beams_1_temp_0.8_beam_sampling)",
        "beam_sampling needs num_beams > 1",
    ),
    "duplicate-model-names": (
        _bad(models=_models({"name": "same"}, {"name": "same", "base_model": "fake/base-b"})),
        "models[1].name",
        "duplicate model name 'same'",
    ),
    "output-dir-placeholder": (
        _bad(output_dir="runs/{nam}"),
        "experiment.output_dir",
        "bad placeholder ('nam'); only {name} is replaced",
    ),
    "test-size-zero": (
        _bad(dataset={"source": "fake-data", "test_size": 0}),
        "dataset.test_size",
        "must be >= 1, got 0",
    ),
    "dataset-option-range": (
        _bad(dataset={"source": "fake-data", "n": 0, "test_size": 5}),
        "dataset.n",
        "must be >= 1, got 0",
    ),
    "missing-adapter": (
        _bad(models=[{"name": "m", "base_model": "fake/base-a"}]),
        "models[0].adapter",
        "is required; allowed: fake-model",
    ),
    "unknown-finetune-key": (
        _bad(models=_models({"finetune": {"r": 4, "lora_alpha": 8}})),
        "models[0].finetune.lora_alpha",
        "unknown key",
    ),
    "vary-not-a-list": (
        _bad(sweep=_sweep(vary={"top_k": 10})),
        "sweep.vary.top_k",
        "must be a non-empty list of values, got an integer",
    ),
    "vary-wrong-item-type": (
        _bad(sweep=_sweep(vary={"temperature": [0.5, "hot"]})),
        "sweep.vary.temperature[1]",
        "must be a number, got a string 'hot'",
    ),
    "top-p-zero": (
        _bad(sweep=_sweep(vary={"top_p": [0.0]})),
        "sweep (top_k_50_num_beams_1_temp_0.8_top_p_0.0)",
        "top_p must be > 0",
    ),
    "invalid-toml": (
        _bad() + "\n[sweep\n",
        None,
        "not valid TOML",
    ),
    "missing-local-base-model": (
        _bad(models=_models({"base_model": "./weights/missing.gguf"})),
        "models[0].base_model",
        "file not found",
    ),
}
# issue 13, item 10: names that become paths
BAD_INPUTS["model-name-escapes-output-dir"] = (
    _bad(models=_models({"name": "../../../evil"})),
    "models[0].name",
    "'../../../evil' is not allowed: it names files and folders",
)
BAD_INPUTS["model-name-with-slash"] = (_bad(models=_models({"name": "a/b"})), "models[0].name", "is not allowed")
BAD_INPUTS["experiment-name-in-output-dir"] = (
    _bad(name="../up", output_dir="runs/{name}"),
    "experiment.name",
    "'../up' is not allowed",
)
# sweep written as a plain value: an error, not silently the defaults
BAD_INPUTS["sweep-not-a-table"] = ("sweep = 0\n" + _bad().split("[sweep]")[0] + '[metrics]\nnames = ["fake-len"]\n', "sweep", "must be a table, got an integer")
# models written as a plain value instead of [[models]]: the message quotes "[[models]]" literally
BAD_INPUTS["models-not-an-array"] = (
    'models = "fake"\n' + _bad().split("[[models]]")[0] + '\n[metrics]\nnames = ["fake-len"]\n',
    "models",
    "must be a non-empty array of tables ([[models]])",
)


def _assert_one_error(result, registry: Path, key: str | None, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one message, on one line (also when stderr is not a terminal)
    line = lines[0]
    assert line.startswith("error: ")
    assert str(registry) in line
    if key is not None:
        assert f": {key}: " in line
    assert message in line


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_check_rejects_bad_input(case: str, tmp_path: Path, cli) -> None:
    text, key, message = BAD_INPUTS[case]
    registry = _write(tmp_path, text)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("check", registry)
    _assert_one_error(result, registry, key, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [("run", "--all"), ("split",), ("report",), ("human", "export")])
def test_other_commands_reject_bad_input_before_writing(command, tmp_path: Path, cli) -> None:
    text, key, message = BAD_INPUTS["unknown-key"]
    registry = _write(tmp_path, text)
    result = cli(*command, "-r", registry)
    _assert_one_error(result, registry, key, message)
    assert not (tmp_path / "out").exists()


def test_check_missing_file(tmp_path: Path, cli) -> None:
    result = cli("check", tmp_path / "nope.toml")
    _assert_one_error(result, tmp_path / "nope.toml", None, "file not found")


def test_missing_json_data_file_is_an_error_at_split(tmp_path: Path, cli) -> None:
    registry = _write(tmp_path, _bad(dataset={"source": "json", "path": "data/missing.jsonl", "test_size": 5}))
    result = cli("split", "-r", registry)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "dataset.path" in result.stderr and "file not found" in result.stderr and "missing.jsonl" in result.stderr


def test_check_rejects_missing_json_data_file(tmp_path: Path, cli) -> None:
    registry = _write(tmp_path, _bad(dataset={"source": "json", "path": "data/missing.jsonl", "test_size": 5}))
    result = cli("check", registry)
    _assert_one_error(result, registry, "dataset.path", "file not found")


# --------------------------------------------------------------------------- bad input found at split time


def _too_big(tmp_path: Path) -> Path:
    return _write(tmp_path, _bad(dataset={"source": "synthetic", "n": 600, "test_size": 700}))


@pytest.mark.parametrize("command", [("run", "--all"), ("split",)])
def test_test_size_larger_than_the_data(command, tmp_path: Path, cli) -> None:
    registry = _too_big(tmp_path)
    # issue 13, item 12: check reads the data too, so it says what split would say
    _assert_one_error(cli("check", registry), registry, "dataset.test_size", "test_size 700 is larger than the data")
    result = cli(*command, "-r", registry)
    _assert_one_error(result, registry, "dataset.test_size", "test_size 700 is larger than the data (600 unique records)")
    store = tmp_path / "out" / "harness.sqlite"
    if store.exists():  # nothing half-written: no split, no adapters, no generations
        db = sqlite3.connect(store)
        try:
            for table in ("splits", "examples", "adapters", "generations", "scores"):
                assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
        finally:
            db.close()


def test_test_size_error_writes_nothing(tmp_path: Path, cli) -> None:
    registry = _too_big(tmp_path)
    result = cli("split", "-r", registry)
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- issue 13: tracebacks that became messages


@pytest.mark.parametrize("encoding", ["utf-16", "binary"])
def test_registry_that_is_not_utf8(encoding: str, tmp_path: Path, cli) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_bytes(_bad().encode("utf-16") if encoding == "utf-16" else b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    result = cli("check", registry)
    _assert_one_error(result, registry, None, "not UTF-8")
    if encoding == "utf-16":
        assert "UTF-16" in result.stderr


def test_output_dir_that_is_a_file(tmp_path: Path, cli) -> None:
    (tmp_path / "out").write_text("not a folder")
    registry = _write(tmp_path, _bad())
    result = cli("run", "--all", "-r", registry)
    _assert_one_error(result, registry, "experiment.output_dir", "exists and is not a folder")
    assert (tmp_path / "out").read_text() == "not a folder"


def test_output_dir_that_cannot_be_created(tmp_path: Path, cli) -> None:
    registry = _write(tmp_path, _bad(output_dir="/proc/harness-cannot-be-here/out"))
    result = cli("run", "--all", "-r", registry)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "experiment.output_dir" in result.stderr and "cannot create" in result.stderr


@pytest.mark.parametrize("command", [("check",), ("split", "-r")])
def test_check_and_split_agree_on_an_output_dir_that_cannot_be_made(command, tmp_path: Path, cli) -> None:
    """Issue 17, item 6: check passed `output_dir = "/proc/harness-out"`, which split cannot create."""
    registry = _write(tmp_path, _bad(output_dir="/proc/harness-out"))
    result = cli(*command, registry)
    _assert_one_error(result, registry, "experiment.output_dir", "cannot create the results store in /proc/harness-out")


def test_check_probes_a_new_output_dir_and_leaves_nothing_behind(tmp_path: Path, cli) -> None:
    registry = _write(tmp_path, _bad(output_dir="deep/er/out"))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli("check", registry).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "er").mkdir(mode=0o500)  # a folder the store cannot be made in
    try:
        if os.access(tmp_path / "deep" / "er", os.W_OK):
            pytest.skip("running as a user that writes anywhere (root): permissions cannot be tested")
        _assert_one_error(cli("check", registry), registry, "experiment.output_dir", "cannot create the results store")
    finally:
        (tmp_path / "deep" / "er").chmod(0o700)


def test_check_says_the_file_is_valid_when_only_the_data_cannot_be_reached(tmp_path: Path, cli, monkeypatch) -> None:
    """Issue 17, item 7: everything else is validated first; the message says what was and was not checked."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: the Hub "endpoint" refuses at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    registry = _write(tmp_path, _bad(dataset={"source": "hub", "name": "me/data", "test_size": 5}))
    result = cli("check", registry)
    _assert_one_error(result, registry, "dataset.source", "the Hugging Face Hub is unreachable")
    assert "the experiment file is valid (2 models (1 fine-tuned), 12 decoding configs" in result.stderr
    assert "the data could not be checked: " in result.stderr
    assert not (tmp_path / "out").exists()
    # a problem with the file itself still comes first, as before
    broken = _write(tmp_path, _bad(dataset={"source": "hub", "name": "me/data", "test_size": 5}, engine={"name": "fake-engin"}))
    result = cli("check", broken)
    assert result.exit_code == 2 and "engine.name" in result.stderr and "the data could not be checked" not in result.stderr


def test_report_to_a_path_that_cannot_be_written(tmp_path: Path, cli) -> None:
    registry = _write(tmp_path, _bad())
    assert cli("run", "--all", "-r", registry).exit_code == 0
    for target in ("/proc/nope/report.md", str(tmp_path / "registry.toml" / "report.json")):
        result = cli("report", "--format", "json", "-o", target, "-r", registry)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "cannot write" in result.stderr and target in result.stderr


# --------------------------------------------------------------------------- issue 13, item 12: how big a run is


def test_check_reads_the_data_and_states_the_size(tmp_path: Path, cli) -> None:
    registry = _write(tmp_path, _bad())
    result = cli("check", registry)
    assert result.exit_code == 0, result.output
    assert "40 unique records (fake-data) → 32 train / 8 test examples (seed 42)" in result.stdout
    assert "24 cells (2 models × 12 configs), 192 generations (8 test examples each), 384 scores (2 metrics), 1 fine-tune" in result.stdout
    assert not (tmp_path / "out").exists()


def test_a_huge_sweep_needs_yes(tmp_path: Path, cli) -> None:
    grid = {"top_k": list(range(1, 101)), "temperature": [round(0.01 * i, 2) for i in range(1, 101)]}
    registry = _write(tmp_path, _bad(sweep=_sweep(mode="grid", vary=grid)))
    check = cli("check", registry)
    assert check.exit_code == 0 and "20,000 cells (2 models × 10,000 configs)" in check.stdout
    result = cli("run", "--all", "-r", registry)
    assert result.exit_code == 2, result.output
    assert "160,000 generations" in result.stderr and "--yes" in result.stderr
    assert not (tmp_path / "out").exists()

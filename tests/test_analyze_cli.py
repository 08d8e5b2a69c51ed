"""``harness analyze`` and ``harness report`` end to end, on fake model/engine/dataset plugins.

The fakes (defined here, registered next to the real plugins) make a tiny experiment
run in about a second: a dataset of "repeat these words" tasks, a model adapter that
writes a dummy LoRA file, and an engine that repeats a share of the words depending on
the decoding config and on whether the adapter is applied. BLEU and ROUGE-L are the
real plugins. Also: every bad-input path of ``--results``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import hookimpl
from harness.api import DatasetSource, Engine, GenResult, LoadedModel, ModelAdapter

# --------------------------------------------------------------------------- fake plugins

VOCAB = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


class FakeData(DatasetSource):
    name = "fake-data"
    description = "repeat-the-words tasks"

    def fingerprint(self, base_dir):
        return {"source": self.name, "v": 1}

    def load(self, base_dir):
        rng = random.Random(7)
        out = []
        for i in range(60):
            words = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(5, 10)))
            out.append({"instruction": f"Repeat the words: {words}", "input": "", "output": words})
        return out


class FakeModel(ModelAdapter):
    name = "fake-model"
    description = "no weights"

    def identity(self, spec):
        return {"base": spec.base_model}

    def tokenizer(self, spec):
        return None

    def train(self, spec, pairs, out_dir, progress):
        (out_dir / "adapter_model.safetensors").write_bytes(b"fake-weights-" + str(len(pairs)).encode())
        (out_dir / "adapter_config.json").write_text("{}")
        return {"steps": 1, "pairs": len(pairs)}

    def load(self, spec, adapter_dir):
        return LoadedModel(None, None)


def _unit(*parts) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class _Session:
    def __init__(self, tuned: bool):
        self.tuned = tuned

    def generate(self, requests, progress):
        batch = []
        for r in requests:
            words = r.prompt.split("Repeat the words: ", 1)[1].split("\n", 1)[0].split()
            d = r.decoding
            keep = {"greedy": 0.85, "beam": 0.8 + 0.02 * d.num_beams, "sample": 0.95 - 0.45 * d.temperature}.get(d.strategy, 0.7)
            keep = min(0.98, keep + (0.1 if self.tuned else 0.0))
            kept = [w for j, w in enumerate(words) if _unit(f"{r.prompt}|{d.strategy}|{d.temperature}|{d.num_beams}|{self.tuned}", j) < keep]
            text = " ".join(kept)
            batch.append(GenResult(r.key, text, len(r.prompt), len(kept), 0.0, "eos"))
        yield batch

    def close(self):
        pass


class FakeEngine(Engine):
    name = "fake-engine"
    description = "keeps a share of the words"

    def open(self, adapter, spec, adapter_dir):
        return _Session(adapter_dir is not None)


@hookimpl
def harness_register_datasets(register):
    register(FakeData)


@hookimpl
def harness_register_models(register):
    register(FakeModel)


@hookimpl
def harness_register_engines(register):
    register(FakeEngine)


REGISTRY = """
[experiment]
name = "fake-experiment"
output_dir = "{out}"
seed = 0

[dataset]
source = "fake-data"
test_size = 12
train_size = 20

[engine]
name = "fake-engine"

[[models]]
name = "base"
adapter = "fake-model"
base_model = "fake-base"
finetune = false

[[models]]
name = "tuned"
adapter = "fake-model"
base_model = "fake-base"
finetune = true

[sweep]
decoder = "standard"
max_new_tokens = 8
{include_defaults}

[sweep.defaults]
top_k = 50
num_beams = 1
temperature = 0.8

[sweep.vary]
temperature = [0.0, 0.5, 1.0]
num_beams = [2, 4]

[metrics]
names = ["bleu", "rouge_l"]

[human]
n_per_cell = 12
"""


@pytest.fixture
def fake_cli(monkeypatch):
    """A CliRunner whose `harness` sees the fake plugins beside the installed ones."""
    import harness.cli.common as cli_module
    from harness.plugins import build_plugins as real_build

    this = sys.modules[__name__]
    monkeypatch.setattr(cli_module, "build_plugins", lambda: real_build(extra=[this]))
    return CliRunner()


def write_registry(tmp_path: Path, *, include_defaults: bool = False) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(REGISTRY.format(out=tmp_path / "out", include_defaults="include_defaults = true" if include_defaults else ""))
    return path


def invoke(cli, *args, code: int = 0):
    result = cli.invoke(__import__("harness.cli", fromlist=["main"]).main, [str(a) for a in args])
    assert result.exit_code == code, result.output + (repr(result.exception) if result.exception and code == 0 else "")
    return result


def run_experiment(cli, tmp_path: Path, **kw) -> Path:
    registry = write_registry(tmp_path, **kw)
    invoke(cli, "run", "--all", "-r", registry)
    return registry


def _quality(instruction: str, response: str) -> float:
    words = instruction.split("Repeat the words: ", 1)[1].split()
    got = response.split()
    return sum(1 for w in set(words) if w in got) / len(set(words))


def rate_sheet(sheet: Path, out: Path, *, scale: str, annotators=("ann1", "ann2")) -> Path:
    """Fill a sheet as annotators would: ratings follow response quality, the second annotator disagrees now and then."""
    with sheet.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for row in rows:
            q = _quality(row["instruction"], row["response"])
            for k, who in enumerate(annotators):
                noise = _unit(row["item_id"], who)
                if scale == "binary":
                    rating = 1 if q >= 0.85 else 0
                    if k and noise < 0.15:
                        rating = 1 - rating
                else:
                    rating = int(min(5, max(1, round(1 + 4 * q + (noise - 0.5) * (1.2 if k else 0.6)))))
                w.writerow({**row, "rating": str(rating), "annotator": who})
    return out


def import_ratings(cli, tmp_path: Path, registry: Path, *, scale: str = "likert", annotators=("ann1", "ann2")) -> None:
    sheet = tmp_path / "sheet.csv"
    invoke(cli, "human", "export", "-o", sheet, "--scale", scale, "-r", registry)  # an item is rated on the scale it was exported for
    filled = rate_sheet(sheet, tmp_path / "filled.csv", scale=scale, annotators=annotators)
    invoke(cli, "human", "import", filled, "--scale", scale, "-r", registry)


# --------------------------------------------------------------------------- analyze on a CSV

GOOD = """model,config,human,bleu,rouge_l
m1,c1,0.62,30.1,0.52
m1,c2,0.71,33.0,0.50
m1,c3,0.40,25.2,0.55
m1,c4,0.22,18.4,0.41
m2,c1,0.55,28.0,0.40
m2,c2,0.66,31.5,0.45
m2,c3,0.35,22.0,0.47
m2,c4,0.30,20.0,0.49
"""


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "results.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_analyze_csv_json_matches_scipy(tmp_path):
    from scipy import stats as sps

    path = _csv(tmp_path, GOOD)
    out = json.loads(invoke(CliRunner(), "analyze", "--results", path, "--format", "json").output)
    assert isinstance(out, list) and out
    required = {"metric", "scope", "n", "pearson", "spearman", "kendall"} | {f"{c}_ci_{e}" for c in ("pearson", "spearman", "kendall") for e in ("low", "high")}
    for row in out:
        assert required <= set(row)
    assert {(r["scope"], r["metric"]) for r in out} == {(s, m) for s in ("all", "m1", "m2") for m in ("bleu", "rouge_l")}
    rows = list(csv.DictReader(path.open()))
    for r in out:
        chosen = [x for x in rows if r["scope"] in ("all", x["model"])]
        x = [float(c[r["metric"]]) for c in chosen]
        h = [float(c["human"]) for c in chosen]
        assert r["n"] == len(chosen)
        assert r["pearson"] == pytest.approx(sps.pearsonr(x, h)[0], abs=1e-12)
        assert r["spearman"] == pytest.approx(sps.spearmanr(x, h)[0], abs=1e-12)
        assert r["kendall"] == pytest.approx(sps.kendalltau(x, h, variant="b")[0], abs=1e-12)
        for c in ("pearson", "spearman", "kendall"):
            assert r[f"{c}_ci_low"] <= r[c] + 1e-9 and r[c] <= r[f"{c}_ci_high"] + 1e-9


def test_analyze_csv_is_repeatable_and_seeded(tmp_path):
    path = _csv(tmp_path, GOOD)
    a = invoke(CliRunner(), "analyze", "--results", path, "--format", "json").output
    b = invoke(CliRunner(), "analyze", "--results", path, "--format", "json").output
    c = invoke(CliRunner(), "analyze", "--results", path, "--format", "json", "--seed", "5").output
    assert a == b
    assert a != c  # another seed, other resamples (same point estimates)
    assert [r["pearson"] for r in json.loads(a)] == [r["pearson"] for r in json.loads(c)]


def test_analyze_csv_table_and_markdown_have_findings(tmp_path):
    path = _csv(tmp_path, GOOD)
    table = invoke(CliRunner(), "analyze", "--results", path).output
    assert "Spearman" in table and "Findings" in table and "agrees best with human judgment" in table
    md = invoke(CliRunner(), "analyze", "--results", path, "--format", "markdown").output
    assert md.startswith("# ") and "| system | all | bleu |" in md and "## Findings" in md
    out = tmp_path / "analysis.md"
    invoke(CliRunner(), "analyze", "--results", path, "--format", "markdown", "-o", out)
    assert out.read_text() == md


def test_findings_follow_the_numbers(tmp_path):
    """Swap which metric tracks the humans: the findings text swaps with it."""
    first = invoke(CliRunner(), "analyze", "--results", _csv(tmp_path, GOOD), "--format", "markdown").output
    swapped = GOOD.replace("model,config,human,bleu,rouge_l", "model,config,human,rouge_l,bleu")
    second = invoke(CliRunner(), "analyze", "--results", _csv(tmp_path, swapped), "--format", "markdown").output
    best_first = [l for l in first.splitlines() if "System level, overall:" in l and "agrees best" in l][0]
    best_second = [l for l in second.splitlines() if "System level, overall:" in l and "agrees best" in l][0]
    assert "overall: bleu agrees best" in best_first
    assert "overall: rouge_l agrees best" in best_second
    # a metric that moves against humans gets its own sentence
    against = "\n".join(["model,config,human,bleu,anti"] + [f"m,c{i},{i / 10},{i},{10 - i + (i % 2) * 0.1}" for i in range(10)]) + "\n"
    text = invoke(CliRunner(), "analyze", "--results", _csv(tmp_path, against), "--format", "markdown").output
    assert "anti moves against human judgment" in text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model,config,bleu\nm,a,1\nm,b,2\nm,c,3\n", ["missing column 'human'"]),
        (GOOD.replace("m2,c3,0.35,22.0", "m2,c3,0.35,abc"), ["row 8", "'bleu'", "'abc'", "not a number"]),
        (GOOD + "m1,c2,0.7,33.0,0.5\n", ["model 'm1' with config 'c2'", "rows 3 and 10"]),
        ("model,config,human,bleu\nm,a,1,2\nm,b,2,3\n", ["only 2 data rows", "at least 3"]),
        (GOOD + "m3,c1,0.5,20,0.4\nm3,c2,0.6,25,0.5\n", ["model 'm3' has only 2 rows", "rows 10 and 11"]),
        (GOOD.replace("m1,c2,0.71,33.0,0.50", "m1,c2,0.71,,0.50").replace("m1,c3,0.40,25.2,0.55", "m1,c3,0.40,,0.55"), ["model 'm1'", "only 2 rows have both 'bleu' and 'human'"]),
        ("", ["empty"]),
    ],
)
def test_analyze_bad_results_file_exit_2(tmp_path, text, expected):
    path = _csv(tmp_path, text)
    result = CliRunner().invoke(__import__("harness.cli", fromlist=["main"]).main, ["analyze", "--results", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "results.csv" in result.output
    for piece in expected:
        assert piece in " ".join(result.output.split()), result.output


def test_analyze_missing_file_and_unknown_metric(tmp_path):
    main = __import__("harness.cli", fromlist=["main"]).main
    result = CliRunner().invoke(main, ["analyze", "--results", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "cannot read" in result.output
    result = CliRunner().invoke(main, ["analyze", "--results", str(_csv(tmp_path, GOOD)), "--metric", "bleuu"])
    assert result.exit_code == 2 and "did you mean 'bleu'" in result.output


# --------------------------------------------------------------------------- analyze and report on a store


def test_analyze_store_without_ratings_is_a_clear_error(fake_cli, tmp_path):
    registry = run_experiment(fake_cli, tmp_path)
    result = fake_cli.invoke(__import__("harness.cli", fromlist=["main"]).main, ["analyze", "-r", str(registry)])
    assert result.exit_code == 2
    assert "no human ratings" in result.output and "harness human export" in result.output


def test_analyze_store_system_and_example_level(fake_cli, tmp_path):
    registry = run_experiment(fake_cli, tmp_path)
    import_ratings(fake_cli, tmp_path, registry, scale="likert")
    out = json.loads(invoke(fake_cli, "analyze", "-r", registry, "--format", "json").output)
    levels = {(r["level"], r["scope"], r["metric"]) for r in out}
    for level in ("system", "example"):
        for scope in ("all", "base", "tuned"):
            for metric in ("bleu", "rouge_l"):
                assert (level, scope, metric) in levels
    by = {(r["level"], r["scope"], r["metric"]): r for r in out}
    assert by[("system", "all", "bleu")]["n"] == 10  # 2 models x 5 configs
    assert by[("example", "all", "bleu")]["n"] == 120  # every generation rated
    # the fake humans follow quality, so the example-level agreement is clearly positive
    assert by[("example", "all", "rouge_l")]["spearman_ci_low"] > 0
    again = json.loads(invoke(fake_cli, "analyze", "-r", registry, "--format", "json").output)
    assert again == out
    table = invoke(fake_cli, "analyze", "-r", registry).output
    assert "Example level" in table and "Findings" in table
    only = json.loads(invoke(fake_cli, "analyze", "-r", registry, "--format", "json", "--level", "system", "--model", "tuned").output)
    assert {(r["level"], r["scope"]) for r in only} == {("system", "all"), ("system", "tuned")}


def test_report_json_has_intervals_and_significance(fake_cli, tmp_path):
    registry = run_experiment(fake_cli, tmp_path)
    import_ratings(fake_cli, tmp_path, registry, scale="binary")
    rows = json.loads(invoke(fake_cli, "report", "--format", "json", "-r", registry).output)
    assert rows == json.loads(invoke(fake_cli, "report", "--format", "json", "-r", registry).output)  # seeded
    for r in rows:
        assert {"model", "config", "metric", "value", "n", "ci_low", "ci_high", "p_holm", "significant"} <= set(r)
        assert r["value"] is not None
        assert r["ci_low"] <= r["value"] + 1e-12 <= r["ci_high"] + 2e-12, r
    # defaults are not a config here: the first config of the sweep is the baseline
    base = [r for r in rows if r["baseline"]]
    assert {r["config"] for r in base} == {"top_k_50_num_beams_1_temp_0.0"}
    assert all(r["p_holm"] is None for r in base)
    others = [r for r in rows if not r["baseline"]]
    assert all(r["p_holm"] is not None and r["p_holm"] >= r["p_value"] for r in others)
    # sampling at temperature 1.0 drops half the words: a real difference from greedy
    hot = [r for r in rows if r["config"] == "top_k_50_num_beams_1_temp_1.0" and r["metric"] in ("bleu", "rouge_l")]
    assert hot and all(r["significant"] for r in hot)
    human = [r for r in rows if r["metric"] == "human"]
    assert {r["interval"] for r in human} <= {"wilson", "bootstrap"}
    assert {r["interval"] for r in rows if r["metric"] == "bleu"} == {"bootstrap-corpus"}


def test_report_baseline_from_defaults_and_override(fake_cli, tmp_path):
    registry = run_experiment(fake_cli, tmp_path, include_defaults=True)
    rows = json.loads(invoke(fake_cli, "report", "--format", "json", "-r", registry).output)
    assert {r["config"] for r in rows if r["baseline"]} == {"top_k_50_num_beams_1_temp_0.8"}
    table = invoke(fake_cli, "report", "-r", registry).output
    # the table labels configs by what differs from the defaults; the legend gives the full names
    assert "│ defaults (base) " in table and "│ temp=0.0 " in table and "│ beams=2 " in table
    assert "  defaults  top_k_50_num_beams_1_temp_0.8" in table and "  beams=2   top_k_50_num_beams_2_temp_0.8" in table
    assert "Baseline: top_k_50_num_beams_1_temp_0.8 — its parameters are the sweep's defaults" in " ".join(table.split())
    assert "Krippendorff" not in table  # no ratings yet
    rows = json.loads(invoke(fake_cli, "report", "--format", "json", "--baseline", "top_k_50_num_beams_4_temp_0.8", "-r", registry).output)
    assert {r["config"] for r in rows if r["baseline"]} == {"top_k_50_num_beams_4_temp_0.8"}
    bad = fake_cli.invoke(__import__("harness.cli", fromlist=["main"]).main, ["report", "--baseline", "top_k_50_num_beams_4_temp_0.9", "-r", str(registry)])
    assert bad.exit_code == 2
    assert "--baseline" in bad.output and "did you mean 'top_k_50_num_beams_4_temp_0.8'" in bad.output


def test_report_table_marks_and_agreement(fake_cli, tmp_path):
    registry = run_experiment(fake_cli, tmp_path)
    import_ratings(fake_cli, tmp_path, registry, scale="binary")
    text = invoke(fake_cli, "report", "-r", registry).output
    flat = " ".join(text.split())
    assert "(base)" in text and "†" in text
    assert "95% interval" in flat and "Holm" in flat
    assert "Krippendorff's alpha (nominal, binary ratings), all models" in flat
    likert = tmp_path / "likert"
    likert.mkdir()
    registry2 = run_experiment(fake_cli, likert)
    import_ratings(fake_cli, likert, registry2, scale="likert")
    assert "Krippendorff's alpha (ordinal, likert ratings)" in " ".join(invoke(fake_cli, "report", "-r", registry2).output.split())


def test_report_markdown_file_with_plots_beside(fake_cli, tmp_path):
    registry = run_experiment(fake_cli, tmp_path)
    import_ratings(fake_cli, tmp_path, registry, scale="likert")
    out = tmp_path / "report" / "results.md"
    invoke(fake_cli, "report", "--format", "markdown", "-o", out, "-r", registry)
    text = out.read_text()
    for heading in ("## base", "## Paired comparisons", "## Inter-annotator agreement", "## Agreement of metrics with human judgment", "## Findings", "## Plots", "## Provenance"):
        assert heading in text, heading
    images = sorted(p.name for p in (tmp_path / "report" / "results_files").iterdir())
    assert "sweep-temperature.png" in images and "sweep-num_beams.png" in images
    assert "human-bleu.png" in images and "human-rouge_l.png" in images
    for name in images:
        assert f"](results_files/{name})" in text
        assert (tmp_path / "report" / "results_files" / name).read_bytes().startswith(b"\x89PNG")
    assert '"sacrebleu"' in text and "nrefs:1" in text  # provenance: versions and the BLEU signature


def test_report_resamples_and_seed_options(fake_cli, tmp_path):
    registry = run_experiment(fake_cli, tmp_path)
    a = json.loads(invoke(fake_cli, "report", "--format", "json", "--seed", "1", "--resamples", "200", "-r", registry).output)
    b = json.loads(invoke(fake_cli, "report", "--format", "json", "--seed", "2", "--resamples", "200", "-r", registry).output)
    assert [r["value"] for r in a] == [r["value"] for r in b]
    assert [r["ci_low"] for r in a] != [r["ci_low"] for r in b]
    bad = fake_cli.invoke(__import__("harness.cli", fromlist=["main"]).main, ["report", "--resamples", "0", "-r", str(registry)])
    assert bad.exit_code == 2

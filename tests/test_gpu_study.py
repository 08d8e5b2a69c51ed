"""The GPU study's preparation (bench/gpu_study*.py, issue 21), without a GPU or a model.

* the GPU registry is the study's registry but for what the machine forces (local inputs, max_steps);
* the Alpaca-length data follow the published lengths; the tokenizers have the asked vocabulary;
* the projection of the full study and the docs writer, on a recorded result.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import gpu_study  # noqa: E402
import gpu_study_inputs as inputs  # noqa: E402


def _drop(d: dict, *path: str) -> None:
    for key in path[:-1]:
        d = d[key]
    d.pop(path[-1], None)


def test_the_gpu_registry_is_the_study_but_for_what_the_machine_forces(tmp_path):
    path = gpu_study.write_registry(tmp_path, list(gpu_study.STUDY_MODELS), steps=300, examples=100, max_new_tokens=256, engine="transformers")
    gpu = tomllib.loads(path.read_text())
    study = tomllib.loads((ROOT / "registries" / "alpaca-study.toml").read_text())
    assert gpu["dataset"] == {"source": "json", "path": f"{tmp_path}/inputs/{inputs.DATA_FILE}", "test_size": 100, "train_size": 0, "seed": 42}
    assert [m["base_model"] for m in gpu["models"]] == [f"{tmp_path}/inputs/{inputs.MODELS[m['name']][0]}" for m in gpu["models"]]
    assert all(m["finetune"]["max_steps"] == 300 for m in gpu["models"])
    assert gpu["metrics"]["bertscore"] == {"model": f"{tmp_path}/inputs/{inputs.ROBERTA_DIR}", "num_layers": 17}
    # everything else is the study's own
    for reg in (gpu, study):
        _drop(reg, "experiment", "name")
        _drop(reg, "experiment", "output_dir")
        reg.pop("dataset")
        _drop(reg, "metrics", "bertscore", "model")
        for m in reg["models"]:
            m.pop("base_model")
            m["finetune"].pop("max_steps", None)
    assert gpu == study


def test_the_registry_keeps_only_the_models_asked_for(tmp_path):
    path = gpu_study.write_registry(tmp_path, ["phi-2"], steps=2, examples=4, max_new_tokens=8, engine="vllm")
    reg = tomllib.loads(path.read_text())
    assert [m["name"] for m in reg["models"]] == ["phi-2"] and reg["engine"]["name"] == "vllm"
    assert reg["sweep"]["max_new_tokens"] == 8 and reg["dataset"]["test_size"] == 4 and "bertscore" in reg["metrics"]


@pytest.fixture(scope="module")
def words():
    return inputs.english_words(300_000)


def test_the_data_follow_alpacas_published_lengths(words):
    records = inputs.alpaca_length_records(words, 6000, seed=1)
    got = inputs.length_stats(records)
    pub = inputs.ALPACA_CHARS
    assert abs(got["with_input"] / 6000 - pub["with_input"] / pub["records"]) < 0.02
    for field in ("instruction", "input", "output"):
        assert got[field]["mean"] == pytest.approx(pub[field]["mean"], rel=0.1), field
        assert got[field]["max"] <= pub[field]["max"] + 30  # clipped to the published longest (+ the last word)
    for field in ("instruction", "output"):
        assert got[field]["median"] == pytest.approx(pub[field]["median"], rel=0.1), field
    assert len({(r["instruction"], r["input"]) for r in records}) == len(records)  # distinct examples


@pytest.mark.parametrize("kind,size", [("llama", 700), ("gpt2", 800), ("roberta", 800)])
def test_tokenizers_have_the_asked_vocabulary(kind, size, words, tmp_path):
    pytest.importorskip("tokenizers")
    tok = inputs.build_tokenizer(kind, size, inputs.corpus_lines(words), tmp_path, 512)
    assert len(tok) == size
    ids = tok("Return the list of values.")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True).strip() == "Return the list of values."
    if kind == "llama":
        assert ids[0] == tok.bos_token_id and tok.eos_token == "</s>"
    if kind == "roberta":
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.pad_token == "<pad>"


def _result(models=("phi-2",), *, examples=100, new=256) -> dict:
    """A recorded result shaped as bench/gpu_study.py writes it (numbers made up, round)."""
    hist = [{"step": s, "loss": 10.0, "t": float(s)} for s in range(1, 11)]
    return {
        "date": "2026-12-07 10:00", "machine": {"gpu": "NVIDIA H100 80GB HBM3", "driver": "580", "python": "3.12.3", "torch": "2.11.0+cu130"},
        "models": list(models), "config": {"steps": 10, "examples": examples, "max_new_tokens": new, "engine": "transformers"},
        "params": {m: 2_500_000_000 for m in models}, "inputs": {"wall_seconds": 100.0}, "wall_seconds": 500.0,
        "harness": {"wall_seconds": 400.0, "exit": 0, "jobs": [
            *({"job": f"train/{m}", "kind": "train", "model": m, "seconds": 30.0, "torch_peak_allocated_gib": 20.0} for m in models),
            *({"job": f"generate/{m}", "kind": "generate", "model": m, "seconds": 100.0, "torch_peak_allocated_gib": 30.0} for m in models),
            {"job": "score/bleu", "kind": "score", "metric": "bleu", "seconds": 5.0},
        ]},
        "store": {"run": {"versions": {"torch": "2.11.0"}}, "failures": [],
                  "metrics": {"bleu": {"scored": 1300 * len(models), "scored_this_call": 1300 * len(models)}},
                  "adapters": {m: {"steps": 10, "seconds": 20.0, "tokens_seen": 10_000, "tokens_per_second": 500.0, "loss_history": hist,
                                   "batches": {"micro_batch": 8, "grad_accum": 1}, "this_call": True} for m in models},
                  "generations": {m: {"g": {"kind": "greedy", "n": 100, "seconds": 10.0, "new_tokens": 25600, "num_beams": 1, "this_call": True},
                                      "b": {"kind": "beams", "n": 100, "seconds": 40.0, "new_tokens": 25600, "num_beams": 10, "this_call": True}}
                                  for m in models}},
    }


def test_the_stage_table_and_the_projection():
    result = _result()
    result["table"] = table = gpu_study.stage_table(result)
    row = table["models"]["phi-2"]
    # 10,000 tokens over 10 steps; steady: steps 1..10 in 9 s -> 9,000 tokens in 9 s
    assert row["train"]["tok_s_steady"] == 1000.0 and row["train"]["load_seconds"] == 10.0
    assert row["train"]["mfu"] == pytest.approx(4 * 2.5e9 * 1000 / 989.4e12, abs=1e-3)
    assert row["generate"]["load_and_compile_seconds"] == 50.0 and row["generate"]["kinds"]["beams"]["rows"] == 1000
    proj = gpu_study.projection(table)
    # one epoch: 51,902 records x 125 tokens / 1,000 tok/s + 10 s of loading
    assert proj["models"]["phi-2"]["train_seconds"] == round(51902 * 125 / 1000 + 10)
    assert proj["models"]["phi-2"]["generate_seconds"] == 100 and proj["complete"] is False
    # a smaller sweep is scaled: beams by rows and tokens, greedy by tokens only
    small = _result(examples=50, new=128)
    small["table"] = gpu_study.stage_table(small)
    assert gpu_study.projection(small["table"])["models"]["phi-2"]["generate_seconds"] == 10 * 2 + 40 * 4 + 50
    # work an earlier call did (the store carries it) is not this call's
    later = _result()
    later["store"]["adapters"]["phi-2"]["this_call"] = False
    later["harness"]["jobs"] = [j for j in later["harness"]["jobs"] if j["kind"] != "train"]
    assert gpu_study.stage_table(later)["models"]["phi-2"]["train"] is None


def test_the_docs_writer(tmp_path, monkeypatch):
    paths = []
    for i, models in enumerate((("phi-2", "mistral-7b"), ("llama-2-7b",))):
        r = _result(models)
        r["table"] = gpu_study.stage_table(r)
        r["projection"] = gpu_study.projection(r["table"])
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    merged = gpu_study.merge_results(paths)
    assert set(merged["models"]) == set(gpu_study.STUDY_MODELS)
    assert merged["projection"]["complete"] is False  # one metric of three was scored
    bench, table = gpu_study.render(merged)
    assert table.count("(transformers) |") == 3 and "total" in table and "2 device call(s)" in bench
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n")
    common.write_section("t", "one", "## T\n\n", path=doc)
    common.write_section("t", "two", "## T\n\n", path=doc)
    assert doc.read_text().count("<!-- bench:t:begin -->") == 1 and "two" in doc.read_text() and "one" not in doc.read_text()

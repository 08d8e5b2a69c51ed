"""The study's GPU path on a CPU (issue 21), where a CPU can show it.

* unsloth's adapters generate from the model they trained: NF4 weights de-quantised, LoRA merged —
  the same logits as the 4-bit model with its LoRA branches, not those of the 16-bit base;
* that model decodes in the transformers engine's fast loop (``loop = "fast"``; before, the
  adapter replaced ``generate`` and the loop refused it), with the text of ``generate``;
* unsloth trains with the new defaults (padding-free, one pass of 8) along the loss curve of the
  settings the study ran with (padding-free or padded, 4 passes of 2, offloaded checkpointing);
* the GPU run's driver (bench/gpu_study.py) at toy size: inputs built, ``harness run --all`` on
  the GPU variant of the study's registry (3 models, 13 configs, BLEU, ROUGE-L, BERTScore from a
  local roberta-shaped folder), the stage table and projection, before-vs-new fine-tuning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.api import Decoding, FinetuneSpec, GenRequest, ModelSpec, NullProgress
from harness.data import render_prompt, train_pairs
from harness_models.unsloth_adapters import UnslothLlama, nf4_config

pytestmark = pytest.mark.study
ROOT = Path(__file__).resolve().parents[2]


def _spec(path: Path, ft: FinetuneSpec | None, **options) -> ModelSpec:
    opts = {k: o.default for k, o in UnslothLlama.options.items()} | {"max_seq_length": 128} | options
    return ModelSpec("toy-unsloth", "unsloth-llama", str(path), ft, options=opts, base_dir=path.parent)


def _examples():
    from test_study_adapters import examples

    return examples()


@pytest.fixture(scope="module")
def trained(checkpoints, tmp_path_factory):
    """A 4-bit toy Llama trained 3 steps by unsloth (lr high enough that LoRA's B is far from zero)."""
    pytest.importorskip("unsloth")
    pytest.importorskip("bitsandbytes")
    path = checkpoints("llama")
    ft = FinetuneSpec(max_steps=3, batch_size=2, max_seq_length=96, learning_rate=5e-2, seed=0)
    spec = _spec(path, ft)
    adapter = UnslothLlama(spec.options)
    out = tmp_path_factory.mktemp("unsloth-adapter")
    pairs = train_pairs(_examples()[4:], "alpaca", adapter.tokenizer(spec))
    adapter.train(spec, pairs, out, NullProgress())
    return spec, out


def test_the_merged_model_is_the_trained_4bit_model(trained):
    import torch
    import transformers
    from peft import PeftModel

    spec, adapter_dir = trained
    loaded = UnslothLlama(spec.options).load(spec, adapter_dir)
    assert loaded.info["weights"].startswith("nf4 de-quantised") and loaded.model.dtype == torch.float32
    tok = loaded.tokenizer
    ids = tok([render_prompt(e, "alpaca") for e in _examples()[:2]], return_tensors="pt", padding=True)
    path = spec.base_model
    # what training computed: the 4-bit base (unsloth's quantisation) with the LoRA branches beside it
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, quantization_config=nf4_config(torch.float32), dtype=torch.float32,
                                                            device_map={"": "cpu"})
    ref = PeftModel.from_pretrained(ref, str(adapter_dir)).eval()
    plain = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), str(adapter_dir)).eval()
    with torch.no_grad():
        merged = loaded.model(**ids).logits
        four_bit = ref(**ids).logits
        sixteen = plain(**ids).logits
    to_4bit, to_16bit = (merged - four_bit).abs().max(), (merged - sixteen).abs().max()
    print(f"max |logit difference|: to the 4-bit model {to_4bit:.2e}, to the 16-bit one {to_16bit:.2e}, logits up to {merged.abs().max():.2e}")
    torch.testing.assert_close(merged, four_bit, rtol=1e-3, atol=1e-3)
    # and not the unquantised weights: NF4 moves the logits by far more than the merged model differs from the 4-bit one
    assert to_16bit > 10 * to_4bit


def test_the_unsloth_model_decodes_in_the_fast_loop(trained):
    from harness_engines.transformers_engine import TransformersEngine

    spec, adapter_dir = trained
    adapter = UnslothLlama(spec.options)
    tok = adapter.tokenizer(spec)
    greedy = Decoding("greedy", 8)
    requests = [GenRequest(f"g/{e.id}", render_prompt(e, "alpaca", tok), greedy, seed=i) for i, e in enumerate(_examples()[:3])]
    texts = {}
    for loop in ("fast", "generate"):
        session = TransformersEngine({"loop": loop, "batch_size": 3}).open(adapter, spec, adapter_dir)
        try:
            if loop == "fast":
                assert session.fast is not None, session.fast_unsupported
            texts[loop] = {r.key: r.text for batch in session.generate(requests, NullProgress()) for r in batch}
        finally:
            session.close()
    assert texts["fast"] == texts["generate"] and len(texts["fast"]) == 3


@pytest.mark.slow
def test_unsloth_new_defaults_follow_the_loss_curve_of_the_old_ones(checkpoints, tmp_path):
    pytest.importorskip("unsloth")
    pytest.importorskip("bitsandbytes")
    path = checkpoints("llama")
    common = dict(max_steps=3, batch_size=2, grad_accum=4, max_seq_length=96, learning_rate=1e-3, seed=1)
    runs = {}
    for name, fields, options in (
        ("before", dict(packing="padding_free", auto_batch=False), {"gradient_checkpointing": "unsloth"}),
        ("padded", dict(packing="none", auto_batch=False), {"gradient_checkpointing": "unsloth"}),
        ("new", {}, {}),
    ):
        spec = _spec(path, FinetuneSpec(**common, **fields), **options)
        adapter = UnslothLlama(spec.options)
        pairs = train_pairs(_examples()[:24], "alpaca", adapter.tokenizer(spec))
        out = tmp_path / name
        out.mkdir()
        runs[name] = adapter.train(spec, pairs, out, NullProgress())
    assert (runs["new"]["batches"]["micro_batch"], runs["new"]["batches"]["grad_accum"]) == (8, 1)
    assert runs["new"]["gradient_checkpointing"] == "False"  # "auto" on a CPU: not needed
    for name in ("padded", "new"):
        assert [h["loss"] for h in runs[name]["loss_history"]] == pytest.approx([h["loss"] for h in runs["before"]["loss_history"]], rel=1e-4)
        assert runs[name]["tokens_seen"] == runs["before"]["tokens_seen"]


@pytest.mark.slow
def test_the_gpu_study_driver_at_toy_size(tmp_path):
    """bench/gpu_study.py --smoke: the study's registry run end to end by the harness, read back into the stage table."""
    out = tmp_path / "study.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_study.py"), "--smoke", "--work", str(tmp_path / "w"), "--examples", "2",
         "--compare", "phi-2", "--budget", "1200", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["harness"]["exit"] == 0, result["harness"]["stderr_tail"]
    assert result["store"]["failures"] == []
    table = result["table"]
    assert set(table["models"]) == {"llama-2-7b", "mistral-7b", "phi-2"}
    for model, row in table["models"].items():
        assert row["train"]["steps"] == 2 and row["train"]["tokens"] > 0, model
        kinds = row["generate"]["kinds"]
        assert (kinds["greedy"]["configs"], kinds["sampled"]["configs"], kinds["beams"]["configs"]) == (1, 8, 4), model
    assert {name: s["outputs"] for name, s in table["scoring"].items()} == {"bleu": 78, "rouge_l": 78, "bertscore": 78}
    assert result["projection"]["total_minutes"] > 0 and set(result["projection"]["models"]) == set(table["models"])
    compare = result["compare"]["phi-2"]
    assert compare["comparison"]["new"]["max_rel_loss_diff"] < 1e-4
    # the docs writer reads it
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_study

    bench, stage = gpu_study.render(gpu_study.merge_results([out]))
    assert "| phi-2 (transformers) |" in stage and "bertscore" in stage and "before" in bench

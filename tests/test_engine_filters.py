"""min-p, top-k, top-p, temperature and the repetition penalty in the transformers engine, against transformers' processors.

The engine's sampler (``sampling.filter_rows``) keeps, per row, the tokens transformers' chain
``RepetitionPenaltyLogitsProcessor`` → ``TemperatureLogitsWarper`` → ``TopKLogitsWarper`` →
``TopPLogitsWarper`` → ``MinPLogitsWarper`` keeps, with the same scores; rows of one batch may each
carry their own values. Both decoding loops apply them (``generate``'s through ``CounterSampler``, the
own loop per row), and give the same text in float32.
"""

from __future__ import annotations

import pytest

from harness.api import Decoding, GenRequest, NullProgress

torch = pytest.importorskip("torch")

CASES = [
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1),
    dict(temperature=0.7, top_k=0, top_p=1.0, min_p=0.05),
    dict(temperature=0.8, top_k=50, top_p=1.0, min_p=0.2),
    dict(temperature=1.3, top_k=0, top_p=0.9, min_p=0.02),
    dict(temperature=0.9, top_k=20, top_p=0.7, min_p=0.3),
    dict(temperature=0.5, top_k=10, top_p=1.0, min_p=0.0),
    dict(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0),
    dict(temperature=0.6, top_k=0, top_p=1.0, min_p=1.0),
]


def _transformers(scores, ids, penalty, c):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    chain = LogitsProcessorList()
    if penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(penalty))
    chain.append(TemperatureLogitsWarper(c["temperature"]))
    if c["top_k"]:
        chain.append(TopKLogitsWarper(c["top_k"]))
    if c["top_p"] < 1.0:
        chain.append(TopPLogitsWarper(c["top_p"]))
    if c["min_p"] > 0.0:
        chain.append(MinPLogitsWarper(c["min_p"]))
    return chain(ids, scores.clone())


def _ours(scores, ids, penalties, cases):
    from harness_engines import sampling

    rows, vocab = scores.shape
    col = lambda key, dtype=torch.float32: torch.tensor([c[key] for c in cases], dtype=dtype)  # noqa: E731
    penalty = torch.tensor(penalties)[:, None]
    scores = sampling.repetition_penalty(scores, ids, penalty)
    filters = sampling.RowFilters.of([(c["top_k"], c["top_p"], c["min_p"]) for c in cases], vocab)
    values, keep = sampling.filter_rows(scores, col("temperature")[:, None], col("top_k", torch.long), col("top_p")[:, None], col("min_p")[:, None], filters)
    full = torch.full_like(scores, float("-inf"))
    return full.scatter(1, keep, values) if keep is not None else values


@pytest.mark.parametrize("together", [False, True], ids=["one row per call", "every case in one batch"])
def test_the_filters_keep_what_transformers_keeps_with_the_same_scores(together):
    gen = torch.Generator().manual_seed(3)
    vocab = 3000
    logits = torch.randn(len(CASES) * 4, vocab, generator=gen) * 2.5
    ids = torch.randint(0, vocab, (logits.shape[0], 40), generator=gen)
    cases = [c for c in CASES for _ in range(4)]
    penalties = [1.0, 1.3, 0.8, 2.0] * len(CASES)
    want = torch.cat([_transformers(logits[i : i + 1], ids[i : i + 1], penalties[i], c) for i, c in enumerate(cases)])
    if together:
        got = _ours(logits, ids, penalties, cases)
    else:
        got = torch.cat([_ours(logits[i : i + 1], ids[i : i + 1], penalties[i : i + 1], [c]) for i, c in enumerate(cases)])
    kept_want, kept_got = torch.isfinite(want), torch.isfinite(got)
    assert torch.equal(kept_got, kept_want)
    assert torch.allclose(got[kept_got], want[kept_want], rtol=1e-6, atol=1e-6)
    sizes = kept_want.sum(-1)
    assert sizes.min() >= 1 and sizes.max() < vocab and len(set(sizes.tolist())) > 8  # the filters did filter, differently


def test_min_p_one_keeps_only_the_most_likely_token():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0 - 1e-3]])
    got = _ours(logits, torch.zeros(1, 1, dtype=torch.long), [1.0], [dict(temperature=1.0, top_k=0, top_p=1.0, min_p=1.0)])
    assert torch.isfinite(got).tolist() == [[False, True, False, False]]


def test_a_rows_draw_does_not_depend_on_its_neighbours_filters():
    """A row sampled beside rows with wider top-k, top-p or min-p draws the token it draws alone."""
    from harness_engines import sampling

    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(len(CASES), 5000, generator=gen) * 3
    keys = sampling.step_keys(sampling.seed_keys(list(range(len(CASES))), "cpu"), 4)
    alone = torch.cat([
        sampling.sample(logits[i : i + 1], keys[i : i + 1], c["temperature"], c["top_k"], c["top_p"], c["min_p"]) for i, c in enumerate(CASES)
    ])
    col = lambda key, dtype=torch.float32: torch.tensor([c[key] for c in CASES], dtype=dtype)  # noqa: E731
    filters = sampling.RowFilters.of([(c["top_k"], c["top_p"], c["min_p"]) for c in CASES], 5000)
    together = sampling.sample_rows(logits, keys, col("temperature")[:, None], col("top_k", torch.long), col("top_p")[:, None], col("min_p")[:, None], filters)
    assert torch.equal(together, alone)


@pytest.fixture(scope="module")
def toy(toy_llama):
    return toy_llama


@pytest.mark.parametrize(
    "decoding",
    [Decoding("sample", 12, temperature=1.0, min_p=0.1), Decoding("sample", 12, temperature=0.7, top_k=30, min_p=0.05, repetition_penalty=1.4),
     Decoding("sample", 12, temperature=1.1, top_p=0.9, min_p=0.02), Decoding("greedy", 12, repetition_penalty=0.7, unused=("temperature", "top_k", "top_p"))],
    ids=["min_p", "min_p_top_k_penalty", "min_p_top_p", "greedy_penalty_below_1"],
)
def test_min_p_and_the_penalty_give_the_same_text_in_both_loops(toy, decoding):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    requests = [GenRequest(str(i), p, decoding, seed=i) for i, p in enumerate(prompts)]
    texts = []
    for loop in ("generate", "fast"):
        session = TransformersSession(model, tok, 3, loop=loop)
        texts.append({r.key: (r.text, r.new_tokens) for b in session.generate(requests, NullProgress()) for r in b})
    assert texts[0] == texts[1]


def test_min_p_changes_what_is_drawn(toy):
    from harness_engines.transformers_engine import TransformersSession

    model, tok, prompts = toy
    session = TransformersSession(model, tok, 7, loop="fast")

    def run(min_p):
        d = Decoding("sample", 12, temperature=1.0, min_p=min_p)
        return {r.key: r.text for b in session.generate([GenRequest(str(i), p, d, seed=i) for i, p in enumerate(prompts)], NullProgress()) for r in b}

    assert run(0.8) != run(0.0)


def test_beam_sampling_passes_min_p_to_generate():
    from harness_engines.transformers_engine import generate_kwargs

    d = Decoding("beam_sample", 8, num_beams=2, temperature=0.7, top_k=20, min_p=0.05)
    assert generate_kwargs(d, pad_token_id=0, eos_token_id=[1])["min_p"] == 0.05
    assert generate_kwargs(Decoding("beam_sample", 8, num_beams=2), pad_token_id=0, eos_token_id=[1])["min_p"] is None

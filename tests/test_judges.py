"""LLM judges (``judge``, ``judge-pairwise``) with a scripted judge engine: verdict parsing, both orders, missing
verdicts, identical outputs, the identity (what re-judges), and what reports and ``analyze`` make of them.
The same judges on the real SmolLM2 through the transformers engine: tests/test_judges_real.py."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import fakes
from harness import hookimpl
from harness.api import Engine, GenRequest, GenResult, ModelAdapter, ModelSpec, Progress, ScoreInput, TokenLogprob, Example, NullProgress
from harness.errors import UserError
from harness.plugins import build_plugins, use_plugins
from harness.store import STORE_NAME
from harness_judges import prompts, verdicts
from harness_judges.judge import PairwiseJudge, PointwiseJudge
from sheets import read_rows, write_rows

BASE = "top_k_50_num_beams_1_temp_0.8"


# --------------------------------------------------------------------------- a scripted judge engine


def _answers(request: GenRequest) -> tuple[str | None, str | None, str | None]:
    text = "\n".join(c for _, c in request.messages)
    a = re.search(r"\[Start of assistant A's answer\]\n(.*?)\n\[End of assistant A's answer\]", text, re.S)
    b = re.search(r"\[Start of assistant B's answer\]\n(.*?)\n\[End of assistant B's answer\]", text, re.S)
    one = re.search(r"\[Start of the assistant's answer\]\n(.*?)\n\[End of the assistant's answer\]", text, re.S)
    return (a.group(1) if a else None, b.group(1) if b else None, one.group(1) if one else None)


def prefer_longer(request: GenRequest) -> str:
    a, b, one = _answers(request)
    if one is not None:
        return str(min(10, 1 + len(one.split())))
    return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "C"


class ScriptedEngine(Engine):
    """Answers judge prompts with ``script(request)`` (a verdict letter or grade); log-probabilities when asked."""

    name = "scripted-judge"
    version = "1"
    script: ClassVar[Any] = staticmethod(prefer_longer)
    calls: ClassVar[list[GenRequest]] = []
    with_logprobs: ClassVar[bool] = True

    def open(self, adapter: ModelAdapter, spec: ModelSpec, adapter_dir: Path | None):
        return _Session()


class _Session:
    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        out = []
        for r in requests:
            ScriptedEngine.calls.append(r)
            verdict = ScriptedEngine.script(r)
            primed = r.messages[-1][0] == "assistant"
            text = f"{verdict}]]" if primed else f"My reasoning. [[{verdict}]]"
            logprobs = None
            if r.logprobs and ScriptedEngine.with_logprobs:
                positions = [TokenLogprob(t, -0.2, ((t, -0.2), ("B" if t != "B" else "A", -2.0), ("C", -3.0))) for t in (verdict, "]]")] if primed else None
                if not primed:
                    toks = ["My", " reasoning", ".", " [[", verdict, "]]"]
                    positions = [TokenLogprob(t, -0.2, ((t, -0.2),)) for t in toks]
                logprobs = tuple(positions)
            out.append(GenResult(r.key, text, 10, 2, 0.0, "eos", logprobs))
        yield out

    def close(self) -> None:
        pass


@hookimpl
def harness_register_engines(register):
    register(ScriptedEngine)


@pytest.fixture
def judge_plugins(fake_plugins):
    import harness_judges.judge
    import harness_reporters.html

    extra = build_plugins(entry_points=False, extra=[harness_judges.judge, harness_reporters.html, __import__(__name__)])
    for kind in ("metric", "engine", "reporter"):
        fake_plugins.by_kind[kind].update(extra.by_kind[kind])
    ScriptedEngine.calls = []
    ScriptedEngine.script = staticmethod(prefer_longer)
    ScriptedEngine.with_logprobs = True
    use_plugins(fake_plugins)
    yield fake_plugins
    use_plugins(None)


JUDGE = {"model": "fake/base-a", "engine": "scripted-judge", "adapter": "fake-model"}


def judge_registry(folder: Path, metrics=("fake-len", "judge-pairwise"), **settings) -> Path:
    sweep = {"decoder": "standard", "mode": "one-at-a-time", "include_defaults": True, "max_new_tokens": 16, "seed": 0,
             "defaults": dict(fakes.STUDY_DEFAULTS), "vary": {"temperature": [0.0, 1.0], "num_beams": [2]}}
    ms = {m: {**JUDGE, **settings.get(m.replace("-", "_"), {})} for m in metrics if m.startswith("judge")}
    return fakes.write_registry(folder / "registry.toml", models=fakes.DEFAULT_MODELS[:1], sweep=sweep, metrics=list(metrics), metric_settings=ms)


def texts(folder: Path, config: str) -> dict[str, str]:
    con = sqlite3.connect(folder / "out" / STORE_NAME)
    try:
        q = "SELECT ce.example_id, g.text FROM cell_examples ce JOIN generations g USING(gen_key) WHERE ce.config=?"
        return dict(con.execute(q, (config,)).fetchall())
    finally:
        con.close()


# --------------------------------------------------------------------------- verdicts and prompts


def test_text_verdicts_take_the_last_and_never_guess():
    assert verdicts.pair_from_text("A is good [[A]] but on reflection [[B]]") == (0.0, "")
    assert verdicts.pair_from_text("a tie: [[C]]")[0] == 0.5
    assert verdicts.pair_from_text("A wins")[0] is None
    assert verdicts.grade_from_text("Rating: [[7]]", 1, 10) == (7.0, "")
    value, why = verdicts.grade_from_text("Rating: [[12]]", 1, 10)
    assert value is None and "off the scale" in why
    primed = verdicts.read_pair("B]] because", None, "[[")
    assert primed.value == 0.0 and primed.source == "text"
    assert verdicts.read_grade("7", None, "Rating: [[", 1, 10).value == 7.0
    missing = verdicts.read_pair("I cannot decide", None, "")
    assert missing.value is None and "no verdict" in missing.why


def test_logprob_verdicts_merge_spellings_and_weigh_ties_half():
    pos = TokenLogprob("A", math.log(0.5), (("A", math.log(0.5)), (" A", math.log(0.1)), ("B]]", math.log(0.2)), ("C", math.log(0.1)), ("x", math.log(0.1))))
    v = verdicts.read_pair("A", (pos,), "[[")
    assert v.source == "logprobs" and v.probs["A"] == pytest.approx(0.6) and v.mass == pytest.approx(0.9)
    assert v.value == pytest.approx((0.6 + 0.05) / 0.9) and v.text_value == 1.0 and v.winner == "A"
    # a generated reply: the verdict's position is found in the text
    toks = [TokenLogprob(t, -0.1, ((t, -0.1),)) for t in ("So", " [[", "B", "]]")]
    toks[2] = TokenLogprob("B", math.log(0.7), (("B", math.log(0.7)), ("A", math.log(0.3))))
    g = verdicts.read_pair("So [[B]]", tuple(toks), "")
    assert g.value == pytest.approx(0.3)
    # a grade: expected value, and 10 told from 1 by the next token
    first = TokenLogprob("1", math.log(0.6), (("1", math.log(0.6)), ("9", math.log(0.4))))
    second = TokenLogprob("0", math.log(0.5), (("0", math.log(0.5)), ("]]", math.log(0.5))))
    grade = verdicts.read_grade("10", (first, second), "Rating: [[", 1, 10)
    assert grade.source == "logprobs" and grade.probs == {"1": pytest.approx(0.3), "9": pytest.approx(0.4), "10": pytest.approx(0.3)}
    assert grade.value == pytest.approx((0.3 * 1 + 0.4 * 9 + 0.3 * 10) / 1.0) and grade.extra["split_one"] == 0.5


def test_prompt_files_are_checked_and_only_known_placeholders_filled(tmp_path):
    (tmp_path / "t.txt").write_text("Q: {question}\nA: {output_a}\nB: {output_b}\nJSON: {\"k\": 1} {format}")
    p = prompts.build("pair", ask="generate", reference=False, base_dir=tmp_path, template="t.txt", rubric=None, system=None)
    msgs = p.messages({"question": "2+2?", "output_a": "4 {output_b}", "output_b": "5", "instruction": "2+2?", "input": "", "reference": "4"})
    assert msgs[1][1].startswith("Q: 2+2?\nA: 4 {output_b}\nB: 5\nJSON: {\"k\": 1} First compare")
    (tmp_path / "bad.txt").write_text("{question} {ouput_a} {output_b}")
    with pytest.raises(UserError, match=r"unknown placeholder\(s\) \{ouput_a\}"):
        prompts.build("pair", ask="generate", reference=False, base_dir=tmp_path, template="bad.txt", rubric=None, system=None)
    (tmp_path / "grade.txt").write_text("{question}")
    with pytest.raises(UserError, match=r"must show \{output\}"):
        prompts.build("grade", ask="prefill", reference=False, base_dir=tmp_path, template="grade.txt", rubric=None, system=None)
    (tmp_path / "rubric.txt").write_text("Only arithmetic correctness matters.")
    g = prompts.build("grade", ask="prefill", reference=True, base_dir=tmp_path, template=None, rubric="rubric.txt", system=None, scale=(1, 5))
    system, user, primed = g.messages(prompts.example_fields(Example.make("2+2?", "", "4")) | {"output": "4"})
    assert "Only arithmetic correctness matters." in system[1] and "[Reference answer]\n4" in user[1] and "from 1 (worst) to 5" in user[1]
    assert primed == ("assistant", "Rating: [[")


# --------------------------------------------------------------------------- the metrics on their own


def _inputs(pairs: Sequence[tuple[str, str]]) -> list[ScoreInput]:
    ex = Example.make("Say something.", "", "something")
    return [ScoreInput(f"g{i}", p, ex.output, ex, other=o, other_key=f"o{i}", model="m", config="c") for i, (p, o) in enumerate(pairs)]


def test_both_orders_a_flip_is_a_tie_and_identical_outputs_are_not_asked(judge_plugins):
    judge = PairwiseJudge({**JUDGE})
    scores = judge.score(_inputs([("a much longer answer", "short"), ("same", "same"), ("x", "a longer one")]), NullProgress())
    assert [s.value for s in scores] == [pytest.approx(scores[0].value), 0.5, pytest.approx(scores[2].value)]
    assert scores[0].value > 0.8 and scores[2].value < 0.2  # soft preferences from log-probabilities
    assert scores[0].detail["consistent"] is True and scores[0].detail["outcome"] == "win" and scores[0].detail["source"] == "logprobs"
    assert scores[0].detail["value_text"] == 1.0 and [c["output_as"] for c in scores[0].detail["calls"]] == ["A", "B"]
    assert scores[1].detail["identical"] is True and len(ScriptedEngine.calls) == 4  # 2 pairs x 2 orders; the identical pair not asked
    # a judge that always answers A flips with the order: every pair a tie
    ScriptedEngine.script = staticmethod(lambda r: "A")
    flipped = PairwiseJudge({**JUDGE}).score(_inputs([("long answer here", "short")]), NullProgress())[0]
    assert flipped.value == 0.5 and flipped.detail["consistent"] is False and flipped.detail["outcome"] == "tie"


def test_random_order_asks_once_and_records_it_text_verdicts_without_logprobs(judge_plugins):
    ScriptedEngine.with_logprobs = False
    judge = PairwiseJudge({**JUDGE, "order": "random", "ask": "generate"})
    scores = judge.score(_inputs([("longer answer", "short")] * 6), NullProgress())
    assert len(ScriptedEngine.calls) == 6 and {len(s.detail["calls"]) for s in scores} == {1}
    assert {s.detail["calls"][0]["output_as"] for s in scores} == {"A", "B"}  # drawn per example
    assert all(s.value == 1.0 and s.detail["source"] == "text" for s in scores)
    again = judge.score(_inputs([("longer answer", "short")] * 6), NullProgress())
    assert [s.detail["calls"][0]["output_as"] for s in again] == [s.detail["calls"][0]["output_as"] for s in scores]


def test_an_unparseable_verdict_is_missing_with_its_reason_never_a_number(judge_plugins):
    ScriptedEngine.script = staticmethod(lambda r: "maybe")
    s = PairwiseJudge({**JUDGE, "logprobs": 0}).score(_inputs([("long answer", "short")]), NullProgress())[0]
    assert s.missing and s.detail["why"].startswith("unparseable: output first: no verdict")
    g = PointwiseJudge({**JUDGE, "logprobs": 0}).score(_inputs([("an answer", "")]), NullProgress())[0]
    assert g.missing and "no rating" in g.detail["why"]
    ScriptedEngine.script = staticmethod(lambda r: "11")
    off = PointwiseJudge({**JUDGE, "logprobs": 0}).score(_inputs([("an answer", "")]), NullProgress())[0]
    assert off.missing and "off the scale" in off.detail["why"]


def test_grades_are_on_0_1_with_the_scale_recorded(judge_plugins):
    scores = PointwiseJudge({**JUDGE, "scale": [1, 5]}).score(_inputs([("one two three", ""), ("", "")]), NullProgress())
    assert scores[0].value == pytest.approx((4 - 1) / 4) and scores[0].detail["scale"] == [1, 5] and scores[0].detail["grade"] == 4.0
    assert scores[1].value == 0.0 and scores[1].detail["empty"] is True  # an empty answer: the lowest grade, not asked
    assert len(ScriptedEngine.calls) == 1 and ScriptedEngine.calls[0].decoding.max_new_tokens == 1  # 1-5: one token


def test_identity_holds_what_changes_a_verdict_and_never_the_key(judge_plugins, monkeypatch, tmp_path):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-never-stored")
    base = PairwiseJudge({**JUDGE, "api_key_env": "JUDGE_KEY"}).identity()
    assert "sk-secret" not in json.dumps(base)
    assert PairwiseJudge({**JUDGE, "api_key_env": "OTHER"}).identity() == base
    (tmp_path / "t.txt").write_text("{question} {output_a} {output_b} {format}")
    changed = {}
    for what, settings in {"order": {"order": "random"}, "ask": {"ask": "generate"}, "model": {"model": "fake/other"},
                           "logprobs": {"logprobs": 5}, "temperature": {"temperature": 0.5}, "against": {"against": "reference"}}.items():
        changed[what] = PairwiseJudge({**JUDGE, **settings}).identity() != base
    j = PairwiseJudge({**JUDGE, "template": "t.txt"})
    j.base_dir = tmp_path
    changed["template"] = j.identity() != base
    assert all(changed.values()), changed
    assert base["llm_judge"]["parser"] == verdicts.PARSER_VERSION and base["llm_judge"]["model_identity"] == {"base_model": "fake/base-a"}


# --------------------------------------------------------------------------- a run


def test_a_run_reports_win_rates_against_the_baseline_and_rejudges_only_what_changed(cli, judge_plugins, tmp_path):
    registry = judge_registry(tmp_path)
    run = cli("run", "--all", "-r", registry)
    assert run.exit_code == 0, run.output
    rows = json.loads(cli("report", "--format", "json", "-r", registry).stdout)
    got = {r["config"]: r for r in rows if r["metric"] == "judge-pairwise"}
    base = texts(tmp_path, BASE)
    for config, row in got.items():
        mine = texts(tmp_path, config)
        assert row["against"] == BASE and 0.0 <= row["value"] <= 1.0 and row["n"] == 8 and row["n_missing"] == 0
        # the scripted judge prefers the longer answer; soft values lean the same way
        wins = [1.0 if len(mine[e]) > len(base[e]) else 0.0 if len(mine[e]) < len(base[e]) else 0.5 for e in mine]
        assert (row["value"] > 0.5) == (sum(wins) / len(wins) > 0.5) or sum(wins) / len(wins) == 0.5
        assert "judge" in row and row["judge"]["sources"] == {"logprobs": 8 - row["judge"]["identical"]} or row["judge"]["identical"] == 8
        assert row["metric_identity"]["llm_judge"]["order"] == "both"
    assert got[BASE]["value"] == 0.5  # the baseline against itself: identical outputs, ties
    calls = len(ScriptedEngine.calls)
    assert calls > 0
    assert cli("run", "--all", "-r", registry).exit_code == 0
    assert len(ScriptedEngine.calls) == calls  # cached: nothing re-judged
    # changing the order policy re-judges this judge only; fake-len stays cached
    fakes.reset()
    judge_registry(tmp_path, judge_pairwise={"order": "random"})
    assert cli("run", "--all", "-r", registry).exit_code == 0
    assert fakes._CountingMetric.scored == {} and len(ScriptedEngine.calls) > calls
    # adding a grading judge judges only that
    before = len(ScriptedEngine.calls)
    judge_registry(tmp_path, metrics=("fake-len", "judge-pairwise", "judge"), judge_pairwise={"order": "random"})
    assert cli("run", "--all", "-r", registry).exit_code == 0
    new = ScriptedEngine.calls[before:]
    assert new and all("[Start of the assistant's answer]" in r.messages[1][1] for r in new)


def test_reports_show_the_judges_reliability_self_preference_and_what_they_said(cli, judge_plugins, tmp_path):
    registry = judge_registry(tmp_path)
    assert cli("run", "--all", "-r", registry).exit_code == 0
    md = cli("report", "--format", "markdown", "-r", registry)
    assert md.exit_code == 0, md.output
    section = md.stdout.split("## LLM judges")[1].split("\n## ")[0]
    assert "self-preference" in section and "fake-base" in section  # the judge model is the judged model's base
    assert "kept their verdict when the outputs swapped places" in section and "answer shown first won" in section
    html = cli("report", "--format", "html", "-r", registry).stdout
    judges_html = html.split('<section id="judges">')[1].split("</section>")[0]
    assert "What the judges said" in judges_html and "My reasoning" not in judges_html and "<pre>" in judges_html
    table = cli("report", "-r", registry)
    assert "self-preference" in table.stdout


def test_analyze_gives_the_judges_agreement_with_pairwise_human_ratings(cli, judge_plugins, tmp_path):
    registry = judge_registry(tmp_path)
    assert cli("run", "--all", "-r", registry).exit_code == 0
    sheet = tmp_path / "pairs.csv"
    assert cli("human", "export", "--pairwise", "-o", sheet, "-n", 8, "-r", registry).exit_code == 0
    con = sqlite3.connect(tmp_path / "out" / STORE_NAME)
    items = {r[0]: r for r in con.execute("SELECT item_id, gen_key, gen_key_b, a_on_left FROM human_items")}
    text = dict(con.execute("SELECT gen_key, text FROM generations"))
    con.close()
    filled = []
    for r in read_rows(sheet):  # annotators who, like the scripted judge, prefer the longer answer
        _, ga, gb, a_left = items[r["item_id"]]
        la, lb = len(text[ga]), len(text[gb])
        side = "tie" if la == lb else ("left" if (la > lb) == bool(a_left) else "right")
        filled.append(r | {"rating": side, "annotator": "ann1"})
    write_rows(sheet, filled)
    assert cli("human", "import", sheet, "-r", registry).exit_code == 0
    out = cli("analyze", "--format", "json", "-r", registry)
    assert out.exit_code == 0, out.output
    prefs = {(r["metric"], r["scope"]): r for r in json.loads(out.stdout) if r["level"] == "preference"}
    judge = prefs[("judge-pairwise", "all")]
    assert judge["agreement"] == 1.0 and judge["kappa"] == pytest.approx(1.0) and judge["n"] >= 3
    table = cli("analyze", "-r", registry)
    assert "judge-pairwise agrees best with the annotators' preferences" in table.stdout


# --------------------------------------------------------------------------- statistics, checked against libraries


def test_cohen_kappa_matches_sklearn_and_statsmodels():
    import random as _random

    from harness.report.judges import cohen_kappa

    rng = _random.Random(3)
    a = [rng.choice([-1, 0, 1]) for _ in range(200)]
    b = [x if rng.random() < 0.6 else rng.choice([-1, 0, 1]) for x in a]
    ours = cohen_kappa(a, b, labels=[-1, 0, 1])
    sm = pytest.importorskip("statsmodels.stats.inter_rater")
    import numpy as np

    table = np.zeros((3, 3))
    for x, y in zip(a, b):
        table[x + 1, y + 1] += 1
    assert ours == pytest.approx(sm.cohens_kappa(table).kappa, abs=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert ours == pytest.approx(sklearn.cohen_kappa_score(a, b), abs=1e-12)


def test_length_control_removes_a_pure_length_preference():
    import numpy as np

    from harness.report.judges import length_controlled

    pytest.importorskip("statsmodels")
    rng = np.random.default_rng(0)
    diff = rng.normal(40, 60, 200)  # outputs mostly longer than the baseline's
    p = 1 / (1 + np.exp(-(0.0 + 2.0 * np.tanh(diff / diff.std()))))  # a judge that cares only about length
    y = (rng.random(200) < p).astype(float)
    fit = length_controlled(y, diff)
    assert y.mean() > 0.6 and abs(fit["lc"] - 0.5) < 0.08 and fit["coefficients"]["length"] > 1.0
    # a real quality difference survives length control
    q = 1 / (1 + np.exp(-(1.0 + 0.0 * diff)))
    yq = (rng.random(200) < q).astype(float)
    assert abs(length_controlled(yq, diff)["lc"] - yq.mean()) < 0.05
    # the same coefficients as a direct maximum-likelihood fit
    from scipy.optimize import minimize

    X = np.column_stack([np.ones(200), np.tanh(diff / diff.std())])

    def nll(b):
        z = X @ b
        return -np.sum(y * z - np.log1p(np.exp(z)))

    direct = minimize(nll, np.zeros(2)).x
    assert [fit["coefficients"]["intercept"], fit["coefficients"]["length"]] == pytest.approx(direct.tolist(), abs=1e-3)


def test_without_statsmodels_the_report_says_so(monkeypatch):
    import builtins

    from harness.report.judges import length_controlled

    real = builtins.__import__

    def no_statsmodels(name, *args, **kwargs):
        if name.startswith("statsmodels"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_statsmodels)
    fit = length_controlled([1, 0, 1, 1, 0, 1], [3, -2, 5, 1, -4, 2])
    assert fit["lc"] is None and "statsmodels is not installed" in fit["note"]


def test_the_gpu_example_with_judges_validates_and_its_judges_are_set_up():
    from harness.registry import load_experiment
    from test_study_registry import ROOT, project_plugins

    plugins = project_plugins()
    exp = load_experiment(ROOT / "registries" / "judges-gpu.toml", plugins)
    assert exp.metrics == ["bleu", "rouge_l", "judge-pairwise", "judge"]
    pair, grade = exp.metric_settings["judge-pairwise"], exp.metric_settings["judge"]
    assert pair["engine"] == grade["engine"] == "vllm" and pair["order"] == "both" and grade["reference"] is True
    use_plugins(plugins)
    try:
        judge = plugins.create("metric", "judge-pairwise", pair)
        assert judge.against() == "baseline" and judge.decoding().max_new_tokens == 1
        assert plugins.create("metric", "judge", grade).decoding().max_new_tokens == 2  # 1-10: "10" needs a second token
    finally:
        use_plugins(None)

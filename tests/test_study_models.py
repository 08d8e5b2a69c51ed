"""The study adapters' cheap paths, in the main environment (no unsloth, no weights, no network).

Registration, identity, the architecture check (it reads only config.json, before
unsloth is imported), a missing unsloth (training needs it; generation does not), bitsandbytes
that cannot run, and hub errors.
The full train/load/generate round trip runs in tests/study (its own venv).
"""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.api import FinetuneSpec, ModelSpec, NullProgress
from harness.errors import MissingDependency, UserError
from harness_models import peft_lora
from harness_models.phi2 import PHI_TARGETS, PeftPhi2
from harness_models.unsloth_adapters import UnslothAdapter, UnslothLlama, UnslothMistral

ADAPTERS = [UnslothLlama, UnslothMistral, PeftPhi2]


def spec_for(cls, base: str, tmp: Path, **options) -> ModelSpec:
    opts = {k: o.default for k, o in cls.options.items()}
    opts.update(options)
    return ModelSpec(name="m", adapter=cls.name, base_model=base, finetune=FinetuneSpec(), options=opts, base_dir=tmp)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """Folders holding only the config.json of a llama, mistral and phi model: enough for the architecture check."""
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, MistralConfig, PhiConfig

    root = tmp_path_factory.mktemp("configs")
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100)
    out = {}
    for arch, cfg in (("llama", LlamaConfig(**small)), ("mistral", MistralConfig(**small)), ("phi", PhiConfig(**small))):
        cfg.save_pretrained(root / arch)
        out[arch] = root / arch
    return out


def test_registration_and_options():
    registered = []
    for module in ("harness_models.unsloth_adapters", "harness_models.phi2"):
        __import__(module, fromlist=["x"]).harness_register_models(register=registered.append)
    assert [c.name for c in registered] == ["unsloth-llama", "unsloth-mistral", "peft-phi2"]
    assert issubclass(UnslothLlama, UnslothAdapter) and issubclass(UnslothMistral, UnslothAdapter)
    assert UnslothLlama.options["load_in_4bit"].default is True
    assert PeftPhi2.options["load_in_4bit"].default is False
    assert PeftPhi2.default_targets == PHI_TARGETS == ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")
    assert (UnslothLlama.default_base_model, UnslothMistral.default_base_model, PeftPhi2.default_base_model) == (
        "meta-llama/Llama-2-7b-hf",
        "mistralai/Mistral-7B-v0.1",
        "microsoft/phi-2",
    )


def test_importing_the_adapters_imports_nothing_heavy():
    code = (
        "import sys; import harness_models.unsloth_adapters, harness_models.phi2; "
        "print(sorted(m for m in ('unsloth', 'torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("cls", ADAPTERS)
def test_identity_names_adapter_and_4bit(cls, tmp_path):
    a = spec_for(cls, "org/model", tmp_path, load_in_4bit=True)
    b = spec_for(cls, "org/model", tmp_path, load_in_4bit=False)
    ia, ib = cls({}).identity(a), cls({}).identity(b)
    assert ia["adapter"] == cls.name and ia["load_in_4bit"] is True and ib["load_in_4bit"] is False
    assert ia["base"] == {"hub": "org/model", "revision": "main"}
    assert ia != ib and ia == cls({}).identity(a)
    json.dumps(ia)


@pytest.mark.parametrize(
    "cls,arch,expected",
    [(UnslothLlama, "mistral", "llama"), (UnslothMistral, "phi", "mistral"), (PeftPhi2, "llama", "phi"), (UnslothLlama, "phi", "llama")],
)
def test_architecture_mismatch(cls, arch, expected, configs, tmp_path):
    spec = spec_for(cls, str(configs[arch]), tmp_path)
    for call in (lambda: cls({}).load(spec, None), lambda: cls({}).train(spec, [], tmp_path, NullProgress())):
        with pytest.raises(UserError) as info:
            call()
        msg = str(info.value)
        assert str(configs[arch]) in msg and f"model_type '{arch}'" in msg and f"'{expected}'" in msg
        assert "\n" not in msg and info.value.exit_code == 2


@pytest.mark.parametrize("cls,arch", [(UnslothLlama, "llama"), (UnslothMistral, "mistral")])
def test_missing_unsloth(cls, arch, configs, tmp_path, monkeypatch):
    """Fine-tuning needs unsloth (generation does not: load builds a plain transformers model)."""
    monkeypatch.setitem(sys.modules, "unsloth", None)  # as if not installed, whether or not it is
    with pytest.raises(MissingDependency) as info:
        cls({}).train(spec_for(cls, str(configs[arch]), tmp_path), [], tmp_path, NullProgress())
    msg = str(info.value)
    assert "'unsloth'" in msg and "pip install 'llm-decoding-harness[unsloth]'" in msg and "\n" not in msg
    assert info.value.exit_code == 2


def test_unsloth_that_refuses_to_start_is_one_user_error(configs, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "unsloth":
            raise NotImplementedError("Unsloth cannot find any torch accelerator? You need a GPU.")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(UserError, match="unsloth is installed but failed to start.*torch accelerator"):
        UnslothLlama({}).train(spec_for(UnslothLlama, str(configs["llama"]), tmp_path), [], tmp_path, NullProgress())


def test_bitsandbytes_missing_or_broken(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(MissingDependency, match=r"\[qlora\]"):
        peft_lora.check_bitsandbytes()

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise RuntimeError("CUDA Setup failed despite GPU being available")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "bitsandbytes")
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(UserError, match="bitsandbytes cannot run on this machine.*CUDA Setup failed.*load_in_4bit = false"):
        peft_lora.check_bitsandbytes()


def _hub_error(spec, exc):
    with pytest.raises(UserError) as info:
        with peft_lora._hub_errors(spec):
            raise exc
    return str(info.value)


def test_hub_errors_name_the_model_and_the_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    spec = spec_for(UnslothLlama, "meta-llama/Llama-2-7b-hf", tmp_path)
    gated = OSError(
        "You are trying to access a gated repo.\nMake sure to have access to it at https://huggingface.co/meta-llama/Llama-2-7b-hf.\n401 Client Error."
    )
    msg = _hub_error(spec, gated)
    assert "'meta-llama/Llama-2-7b-hf' is a gated model" in msg and "HF_TOKEN is not set" in msg and "\n" not in msg

    class GatedRepoError(Exception):
        pass

    wrapped = OSError("cannot load")
    wrapped.__cause__ = GatedRepoError("403")
    assert "gated model" in _hub_error(spec, wrapped)

    class RepositoryNotFoundError(Exception):
        pass

    missing = OSError("not found")
    missing.__cause__ = RepositoryNotFoundError("401 Client Error: Repository Not Found")
    assert "was not found on the hub" in _hub_error(spec, missing)

    offline = OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.")
    assert "neither a local checkpoint nor reachable" in _hub_error(spec, offline)


def test_unreachable_hub_model_is_a_user_error(tmp_path):
    pytest.importorskip("transformers")
    code = (
        "from pathlib import Path; from harness.api import ModelSpec, FinetuneSpec; from harness.errors import UserError\n"
        "from harness_models.unsloth_adapters import UnslothLlama\n"
        "spec = ModelSpec('m', 'unsloth-llama', 'meta-llama/Llama-2-7b-hf', None, options={}, base_dir=Path('.'))\n"
        "try:\n    UnslothLlama({}).load(spec, None)\nexcept UserError as e:\n    print('USER', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(HF_HUB_OFFLINE="1"), timeout=120)
    assert out.stdout.startswith("USER"), out.stderr[-2000:]
    assert "meta-llama/Llama-2-7b-hf" in out.stdout


def _env(**extra):
    import os

    root = Path(__file__).resolve().parent.parent
    paths = [str(root), *(str(p) for p in sorted((root / "plugins").iterdir()) if p.is_dir())]
    env = {**os.environ, "PYTHONPATH": ":".join(paths + [os.environ.get("PYTHONPATH", "")]), **extra}
    env.pop("HF_TOKEN", None)
    return env

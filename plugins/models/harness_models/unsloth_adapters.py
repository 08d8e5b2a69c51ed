"""``unsloth-llama`` and ``unsloth-mistral``: QLoRA fine-tuning and inference through unsloth.

The reference study fine-tuned Llama-2-7B and Mistral-7B with unsloth: the base model
loaded in 4-bit NF4 (``FastLanguageModel.from_pretrained(..., load_in_4bit=True)``), LoRA
on every attention and MLP projection (``get_peft_model``), TRL's SFTTrainer with the
loss on the response only, and generation in unsloth's inference mode
(``FastLanguageModel.for_inference``).

unsloth patches transformers, PEFT and TRL globally when it is imported, so it is
imported only inside the methods of these adapters, i.e. only in a run that uses one of
them. It is an optional dependency: ``pip install 'llm-decoding-harness[unsloth]'``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from harness import hookimpl
from harness.api import LoadedModel, ModelAdapter, ModelSpec, Option, Progress, TrainPair
from harness.errors import MissingDependency, UserError

from . import loading, sft
from .peft_lora import DEFAULT_TARGETS, _hub_errors, check_bitsandbytes, check_model_type, load_tokenizer

#: what ``gradient_checkpointing`` maps to in ``get_peft_model(use_gradient_checkpointing=...)``
_CHECKPOINTING = {"unsloth": "unsloth", "true": True, "false": False}


class UnslothAdapter(ModelAdapter):
    """Shared base of the unsloth adapters; a subclass sets ``name``, ``model_type`` and ``default_base_model``."""

    version = "1"
    #: the ``config.model_type`` this adapter accepts
    model_type: ClassVar[str] = ""
    #: the reference study's base model (documentation; registry.toml names the base model)
    default_base_model: ClassVar[str] = ""
    default_targets: ClassVar[tuple[str, ...]] = DEFAULT_TARGETS
    options = {
        "revision": Option(str, default="main", help="hub revision of base_model"),
        "load_in_4bit": Option(bool, default=True, help="QLoRA: 4-bit NF4 base weights through bitsandbytes (the study's setting)"),
        "max_seq_length": Option(
            int,
            default=2048,
            minimum=8,
            help="context length unsloth prepares the model for (RoPE scaling past the model's own); "
            "training uses at least finetune.max_seq_length",
        ),
        "dtype": Option(
            str,
            default="auto",
            choices=("auto", "float32", "bfloat16", "float16"),
            help="auto: unsloth's choice, bf16 where the hardware supports it, else fp16 (fp32 on CPUs without bf16)",
        ),
        "gradient_checkpointing": Option(
            str,
            default="unsloth",
            choices=tuple(_CHECKPOINTING),
            help="unsloth: unsloth's offloaded checkpointing (least memory); true: standard; "
            "false: off unless finetune.gradient_checkpointing = true",
        ),
    }

    # -- identity and tokenizer (cheap: unsloth is not imported)

    def identity(self, spec: ModelSpec) -> dict[str, Any]:
        o = self._opts(spec)
        fp = loading.fingerprint(spec.base_model, spec.base_dir, o["revision"])
        return {
            "adapter": self.name,
            "base": fp,
            "load_in_4bit": o["load_in_4bit"],
            "dtype": o["dtype"],
            "max_seq_length": o["max_seq_length"],
        }

    def tokenizer(self, spec: ModelSpec) -> Any:
        return load_tokenizer(spec, self._hub_kwargs(spec))

    def base_path(self, spec: ModelSpec) -> str:
        return loading.resolve(spec.base_model, spec.base_dir)

    # -- training and loading

    def train(self, spec: ModelSpec, pairs: Sequence[TrainPair], out_dir: Path, progress: Progress) -> dict[str, Any]:
        assert spec.finetune is not None
        ft = spec.finetune
        o = self._opts(spec)
        fast = self._fast_language_model(spec)
        torch = _import("torch")
        model, tok = self._from_pretrained(spec, fast, max(o["max_seq_length"], ft.max_seq_length), ft.seed)
        checkpointing = _CHECKPOINTING[o["gradient_checkpointing"]]
        if checkpointing is False and ft.gradient_checkpointing:
            checkpointing = True
        model = fast.get_peft_model(
            model,
            r=ft.r,
            lora_alpha=ft.alpha,
            lora_dropout=ft.dropout,
            target_modules=list(ft.target_modules or self.default_targets),
            bias="none",
            use_gradient_checkpointing=checkpointing,
            random_state=ft.seed,
        )
        torch.manual_seed(ft.seed)
        dtype = _compute_dtype(model)
        cuda = torch.cuda.is_available()
        summary = sft.train_sft(
            model,
            tok,
            pairs,
            # unsloth set up checkpointing on the model; the Trainer must not add its own on top
            dataclasses.replace(ft, gradient_checkpointing=False),
            out_dir,
            progress,
            peft_config=None,
            bf16=dtype == torch.bfloat16,
            fp16=dtype == torch.float16,
            extra_args={"use_cpu": not cuda},
            fused_loss=True,  # unsloth serves TRL's fused LM-head loss with its own kernel, CPU included
        )
        summary.update(
            device="cuda" if cuda else "cpu",
            dtype=str(dtype),
            load_in_4bit=o["load_in_4bit"],
            gradient_checkpointing=str(checkpointing),
            unsloth=_version("unsloth"),
        )
        return summary

    def load(self, spec: ModelSpec, adapter_dir: Path | None) -> LoadedModel:
        o = self._opts(spec)
        fast = self._fast_language_model(spec)
        model, tok = self._from_pretrained(spec, fast, o["max_seq_length"], 0)
        if adapter_dir is not None:
            peft = _import("peft")
            model = peft.PeftModel.from_pretrained(model, str(adapter_dir))
        fast.for_inference(model)  # unsloth's fast generation path; set again before every generate below
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        info = {
            "device": str(next(model.parameters()).device),
            "dtype": str(_compute_dtype(model)),
            "load_in_4bit": o["load_in_4bit"],
            "unsloth": _version("unsloth"),
        }
        loaded = LoadedModel(model, tok, info)
        if "generate" in {f.name for f in dataclasses.fields(LoadedModel)}:
            loaded.generate = _InferenceGenerate(fast, model)  # type: ignore[attr-defined]
        return loaded

    # -- helpers

    def _opts(self, spec: ModelSpec) -> dict[str, Any]:
        return {**{k: o.default for k, o in self.options.items()}, **spec.options}

    def _hub_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        if loading.local_path(spec.base_model, spec.base_dir) is None:
            return {"revision": self._opts(spec)["revision"]}
        return {}

    def _fast_language_model(self, spec: ModelSpec) -> Any:
        """Check the architecture (config only), then import unsloth and return its FastLanguageModel."""
        path = loading.resolve(spec.base_model, spec.base_dir)
        check_model_type(spec, path, self.name, (self.model_type,), self._hub_kwargs(spec))
        fast = import_unsloth(self.name)
        if self._opts(spec)["load_in_4bit"]:
            check_bitsandbytes()
        return fast

    def _from_pretrained(self, spec: ModelSpec, fast: Any, max_seq_length: int, seed: int) -> tuple[Any, Any]:
        o = self._opts(spec)
        torch = _import("torch")
        path = loading.resolve(spec.base_model, spec.base_dir)
        dtype = None if o["dtype"] == "auto" else getattr(torch, o["dtype"])
        kwargs: dict[str, Any] = {
            "max_seq_length": max_seq_length,
            "load_in_4bit": o["load_in_4bit"],
            "dtype": dtype,
            # load exactly the named model (unsloth would swap in its own pre-quantised copy otherwise)
            "use_exact_model_name": True,
            "random_state": seed,
            **self._hub_kwargs(spec),
        }
        with _hub_errors(spec), _bnb_errors(spec, o["load_in_4bit"]):
            model, tok = fast.from_pretrained(path, **kwargs)
        return model, tok


class UnslothLlama(UnslothAdapter):
    name = "unsloth-llama"
    description = "Llama models (model_type llama; reference: meta-llama/Llama-2-7b-hf); QLoRA via unsloth"
    model_type = "llama"
    default_base_model = "meta-llama/Llama-2-7b-hf"


class UnslothMistral(UnslothAdapter):
    name = "unsloth-mistral"
    description = "Mistral models (model_type mistral; reference: mistralai/Mistral-7B-v0.1); QLoRA via unsloth"
    model_type = "mistral"
    default_base_model = "mistralai/Mistral-7B-v0.1"


class _InferenceGenerate:
    """``LoadedModel.generate``: ``model.generate`` inside unsloth's inference mode."""

    def __init__(self, fast: Any, model: Any):
        self.fast = fast
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.fast.for_inference(self.model)
        return self.model.generate(*args, **kwargs)


class _bnb_errors:
    """A 4-bit load that fails inside bitsandbytes becomes one UserError."""

    def __init__(self, spec: ModelSpec, load_in_4bit: bool):
        self.spec = spec
        self.load_in_4bit = load_in_4bit

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not self.load_in_4bit or isinstance(exc, UserError) or not isinstance(exc, Exception):
            return False
        text = f"{type(exc).__name__}: {exc}"
        if "bitsandbytes" in text.lower() or "4bit" in text.lower() or "4-bit" in text.lower():
            raise UserError(
                f"load_in_4bit was requested but bitsandbytes cannot run here ({text}); set load_in_4bit = false",
                key=f"models.{self.spec.name}.load_in_4bit",
            ) from None
        return False


def import_unsloth(adapter: str) -> Any:
    """unsloth's FastLanguageModel, or a MissingDependency/UserError that says how to fix it."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    try:
        import unsloth  # noqa: F401  (patches transformers, PEFT and TRL: only here, only when used)
        from unsloth import FastLanguageModel
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("unsloth", "unsloth_zoo"):
            raise MissingDependency("unsloth", "unsloth", purpose=f"the {adapter} model adapter") from None
        raise UserError(f"unsloth is installed but cannot be imported ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # unsloth refuses to start on some machines
        raise UserError(f"unsloth is installed but failed to start on this machine ({type(exc).__name__}: {exc})") from None
    return FastLanguageModel


def _compute_dtype(model: Any) -> Any:
    """The dtype the model computes in (not the 4-bit storage type)."""
    config = getattr(model, "config", None)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if dtype is not None and not isinstance(dtype, str):
        return dtype
    torch = _import("torch")
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise MissingDependency("unsloth", "unsloth", purpose=f"the unsloth model adapters (missing: {name})") from None


@hookimpl
def harness_register_models(register):
    register(UnslothLlama)
    register(UnslothMistral)

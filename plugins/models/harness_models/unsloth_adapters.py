"""``unsloth-llama`` and ``unsloth-mistral``: QLoRA fine-tuning through unsloth.

The reference study fine-tuned Llama-2-7B and Mistral-7B with unsloth: the base model
loaded in 4-bit NF4 (``FastLanguageModel.from_pretrained(..., load_in_4bit=True)``), LoRA
on every attention and MLP projection (``get_peft_model``) and TRL's SFTTrainer with the
loss on the response only. Training here is exactly that, with the harness's batching
(``finetune.packing`` / ``auto_batch``, see :mod:`harness_models.sft`) and gradient
checkpointing only where memory needs it (option ``gradient_checkpointing = "auto"``).

Generation does not go through unsloth: :meth:`UnslothAdapter.load` builds the model the
adapter was trained on — the base weights quantised to NF4 exactly as unsloth quantises them
(bitsandbytes, double quantisation, ``lm_head`` kept) — de-quantises it into 16-bit weights and
merges the LoRA weights into them (what unsloth's ``save_pretrained_merged(...,
"merged_16bit")`` writes for serving, with vLLM say). A plain transformers model
comes out, which the transformers engine's fast decoding loop (static cache, CUDA graphs)
decodes; unsloth's own inference mode went through ``generate`` only. Without
``load_in_4bit`` the bf16 base is merged with the adapter directly.

unsloth patches transformers, PEFT and TRL globally when it is imported, so it is
imported only inside ``train``, i.e. only in a run that fine-tunes with one of these
adapters. It is an optional dependency: ``pip install 'llm-decoding-harness[unsloth]'``.
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
#: ("auto" is decided per run: :func:`auto_checkpointing`)
_CHECKPOINTING = {"auto": None, "unsloth": "unsloth", "true": True, "false": False}


class UnslothAdapter(ModelAdapter):
    """Shared base of the unsloth adapters; a subclass sets ``name``, ``model_type`` and ``default_base_model``."""

    # 2: generation from the de-quantised, merged model (was unsloth's inference mode over the
    #    4-bit model); padding-free batches and the automatic micro-batch by default
    version = "2"
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
            default="auto",
            choices=tuple(_CHECKPOINTING),
            help="auto: off when the largest micro-batch fits in GPU memory without it, else unsloth's; "
            "unsloth: unsloth's offloaded checkpointing (least memory); true: standard; "
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
        if checkpointing is None:
            checkpointing = True if ft.gradient_checkpointing else auto_checkpointing(model, tok, pairs, ft)
        elif checkpointing is False and ft.gradient_checkpointing:
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
            probe_checkpointing=None,  # decided above, on the model: the micro-batch probe keeps it
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
        """The trained model as plain 16-bit weights: NF4 base (when 4-bit) de-quantised, LoRA merged in."""
        o = self._opts(spec)
        torch = _import("torch")
        transformers = _import("transformers")
        loading.quiet_hf()
        path = loading.resolve(spec.base_model, spec.base_dir)
        check_model_type(spec, path, self.name, (self.model_type,), self._hub_kwargs(spec))
        cuda = torch.cuda.is_available()
        dtype = generation_dtype(o["dtype"], cuda)
        kwargs: dict[str, Any] = {"dtype": dtype, **self._hub_kwargs(spec)}
        if o["load_in_4bit"]:
            check_bitsandbytes()
            kwargs["quantization_config"] = nf4_config(dtype)
            kwargs["device_map"] = {"": 0} if cuda else {"": "cpu"}
        with _hub_errors(spec), _bnb_errors(spec, o["load_in_4bit"]):
            model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if o["load_in_4bit"]:
            model = model.dequantize(dtype=dtype)  # the NF4 weights the adapter was trained against, in the compute dtype
        else:
            model.to("cuda" if cuda else "cpu")
        if adapter_dir is not None:
            peft = _import("peft")
            model = peft.PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        model.eval()
        tok = self.tokenizer(spec)
        info = {
            "device": str(next(model.parameters()).device),
            "dtype": str(dtype),
            "load_in_4bit": o["load_in_4bit"],
            "weights": "nf4 de-quantised, LoRA merged" if o["load_in_4bit"] else "LoRA merged",
        }
        return LoadedModel(model, tok, info)

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


def auto_checkpointing(model: Any, tokenizer: Any, pairs: Sequence[TrainPair], ft: Any) -> Any:
    """``gradient_checkpointing = "auto"``: False when the largest micro-batch of ``ft`` fits in free GPU memory without it, else "unsloth".

    Estimated before the LoRA layers exist (unsloth sets checkpointing up with them): the worst
    pass of ``batch_size × grad_accum`` examples times :func:`~harness_models.batching.activation_bytes_per_token`.
    On a CPU: False (memory is the token budget's concern).
    """
    torch = _import("torch")
    if not torch.cuda.is_available():
        return False
    from . import batching

    lengths = [len(ids) + 1 for ids in tokenizer([p.prompt + p.response for p in pairs], add_special_tokens=True)["input_ids"]]
    step = ft.batch_size * ft.grad_accum if ft.auto_batch and ft.packing != "group_by_length" else ft.batch_size
    rows, per_row = batching.worst_tokens(lengths, step, ft.packing, ft.max_seq_length)
    need = rows * per_row * batching.activation_bytes_per_token(model.config)
    free, _ = torch.cuda.mem_get_info()
    return False if need <= batching.MEMORY_SHARE * free else "unsloth"


def generation_dtype(choice: str, cuda: bool) -> Any:
    """The dtype generation computes in: the option, or bf16 on GPUs that have it, fp16 on others, fp32 on a CPU."""
    torch = _import("torch")
    if choice != "auto":
        return getattr(torch, choice)
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def nf4_config(dtype: Any) -> Any:
    """unsloth's 4-bit quantisation (``FastLanguageModel.from_pretrained(load_in_4bit=True)``): NF4, double quantisation, ``lm_head`` kept."""
    transformers = _import("transformers")
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=["lm_head"],
    )


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

"""LoRA supervised fine-tuning with TRL's SFTTrainer, shared by the built-in adapters.

Training data are prompt/completion pairs, so TRL computes the loss on the completion
(the response) only and appends the tokenizer's EOS to it. The trained adapter is
saved as ``adapter_model.safetensors`` + ``adapter_config.json``.

``FinetuneSpec.packing`` picks how examples become batches:

* ``"padding_free"`` (default): the batches of ``"none"`` — the same examples in the same order —
  each flattened into one sequence whose ``position_ids`` restart at every example, without
  padding (TRL's ``padding_free``). transformers builds a block-diagonal causal mask from those
  ``position_ids`` for SDPA/eager attention, and unsloth passes the example boundaries to its
  own attention, so examples never attend to each other: each example's loss is the one it has
  in a padded batch (tests/test_finetune_defaults.py). Examples are truncated to
  ``max_seq_length`` exactly as TRL truncates padded ones (TRL enforces no length in this mode);
* ``"none"``: padded batches of ``batch_size`` examples in random order;
* ``"pack"``: TRL's best-fit-decreasing packing, several examples per row of up to
  ``max_seq_length`` tokens, padding-free. ``batch_size`` counts rows, so an epoch has fewer
  steps: with ``max_steps = 0`` the Trainer counts the steps of ``epochs`` over the packed rows;
* ``"group_by_length"``: padded batches of examples of similar length (transformers'
  ``LengthGroupedSampler``: random mega-batches of up to 50 batches, sorted by length).

``FinetuneSpec.auto_batch`` (default on) runs each optimizer step's ``batch_size × grad_accum``
examples in as few forward passes as fit (:mod:`harness_models.batching`); the step and its loss
do not change.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.api import FinetuneSpec, Progress, TrainPair
from harness.errors import MissingDependency

from . import batching
from .batching import BatchPlan


def lora_config(ft: FinetuneSpec, default_targets: Sequence[str]) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=ft.r,
        lora_alpha=ft.alpha,
        lora_dropout=ft.dropout,
        target_modules=list(ft.target_modules or default_targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def train_sft(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[TrainPair],
    ft: FinetuneSpec,
    out_dir: Path,
    progress: Progress,
    *,
    peft_config: Any | None,
    bf16: bool = False,
    fp16: bool = False,
    trainer_cls: Any = None,
    extra_args: dict[str, Any] | None = None,
    fused_loss: bool | None = None,
    probe_checkpointing: Any = "transformers",
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``pairs`` and save the adapter into ``out_dir``; returns a summary.

    ``peft_config`` is None when the model already carries LoRA layers (unsloth's
    ``get_peft_model``). ``trainer_cls`` defaults to TRL's SFTTrainer. ``fused_loss``:
    whether TRL's fused LM-head loss may run; None means only on a CUDA/XPU device (see
    :func:`plain_loss_trainer`). unsloth replaces that kernel with one that runs anywhere.
    ``probe_checkpointing``: how the micro-batch probe switches gradient checkpointing —
    "transformers" (:func:`hf_checkpointing`), a callable ``(model, on)``, or None when the
    adapter set it up on the model itself (see :func:`plan_batches`).
    """
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer
    except ImportError as exc:
        raise MissingDependency(exc.name or "trl", "default", purpose="fine-tuning") from None

    packing = ft.packing
    if packing not in PACKING_ARGS:
        raise ValueError(f"unknown packing {packing!r}; allowed: {', '.join(PACKING_ARGS)}")
    if peft_config is not None:
        # LoRA layers before the trainer (as TRL would add them, from the same random state): the
        # micro-batch probe needs them, and the trainer then gets a model that already has them
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
        peft_config = None
    if probe_checkpointing == "transformers":
        probe_checkpointing = hf_checkpointing
    batch_plan = plan_batches(model, tokenizer, pairs, ft, probe_checkpointing)
    steps_per_epoch = max(1, math.ceil(len(pairs) / (ft.batch_size * ft.grad_accum)))
    total = ft.max_steps if ft.max_steps > 0 else max(1, math.ceil(steps_per_epoch * ft.epochs))
    # packed rows, not examples, make the steps of an epoch: let the Trainer count them
    schedule = {"max_steps": -1, "num_train_epochs": ft.epochs} if packing == "pack" and ft.max_steps <= 0 else {"max_steps": total}
    dataset = Dataset.from_list([{"prompt": p.prompt, "completion": p.response} for p in pairs])
    history: list[dict[str, float]] = []

    class _Progress(TrainerCallback):
        def __init__(self) -> None:
            self.tokens = 0
            self.started = time.perf_counter()
            self.advance = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.advance = progress.task("fine-tuning", state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                history.append({"step": state.global_step, "loss": float(logs["loss"]), "t": round(time.perf_counter() - self.started, 3)})

        def on_step_end(self, args, state, control, **kwargs):
            fields = {"loss": history[-1]["loss"]} if history else {}
            if self.advance is not None:
                self.advance(1, **fields)

    config = SFTConfig(
        output_dir=str(out_dir / "_trainer"),
        per_device_train_batch_size=batch_plan.micro_batch,
        gradient_accumulation_steps=batch_plan.grad_accum,
        learning_rate=ft.learning_rate,
        **schedule,
        warmup_steps=ft.warmup_steps,
        weight_decay=ft.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=ft.seed,
        data_seed=ft.seed,
        # padding-free batches get no length cap from TRL: truncated below, as TRL truncates padded ones
        max_length=None if packing == "padding_free" else ft.max_seq_length,
        completion_only_loss=True,
        gradient_checkpointing=batch_plan.gradient_checkpointing,
        bf16=bf16,
        fp16=fp16,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **PACKING_ARGS[packing],
        **(extra_args or {}),
    )
    trainer_cls = trainer_cls or SFTTrainer
    if fused_loss is None:
        fused_loss = _device_type(model) in ("cuda", "xpu")
    if not fused_loss:
        trainer_cls = plain_loss_trainer(trainer_cls)
    counter = TokenCounter()
    with _quiet_padding_free_warning(model if packing == "padding_free" else None):
        trainer = counting_trainer(trainer_cls, counter)(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[_Progress()],
        )
    if packing == "padding_free":
        trainer.train_dataset = truncate_like_trl(trainer.train_dataset, ft.max_seq_length)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes through the harness's own bars, not printed dicts
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(str(out_dir), safe_serialization=True)
    _remove_tree(out_dir / "_trainer")
    return {
        "steps": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_history": history,
        "seconds": round(seconds, 2),
        "examples": len(pairs),
        "packing": packing,
        "batches": batch_plan.record(),
        # tokens the model read (padding excluded) and the supervised ones, over every pass
        "tokens_seen": counter.tokens,
        "supervised_tokens": counter.supervised,
        "tokens_per_second": round(counter.tokens / seconds, 1) if seconds > 0 else None,
    }


def plan_batches(model: Any, tokenizer: Any, pairs: Sequence[TrainPair], ft: FinetuneSpec, probe_checkpointing: Any) -> BatchPlan:
    """The micro-batches of ``ft`` for ``model`` (see :mod:`harness_models.batching`).

    ``probe_checkpointing``: how to switch gradient checkpointing for a GPU probe — a callable
    ``(model, on)``, or None when the adapter fixed it (the plan then keeps ``ft``'s setting).
    """
    if not ft.auto_batch or ft.packing == "group_by_length":
        return batching.plan(ft, [], batching.cpu_fits)
    texts = [p.prompt + p.response for p in pairs]
    lengths = [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]  # + EOS, as TRL appends it
    if _device_type(model) != "cuda":
        return batching.plan(ft, lengths, batching.cpu_fits)
    switch = (lambda on: probe_checkpointing(model, on)) if probe_checkpointing is not None else None
    probe = batching.CudaProbe(model, vocab_size=len(tokenizer), set_checkpointing=switch)
    chosen = batching.plan(ft, lengths, probe, can_checkpoint=switch is not None)
    if switch is not None:
        switch(chosen.gradient_checkpointing)
    estimated = [r["estimated"] for r in probe.results if "estimated" in r]
    if estimated:
        chosen = dataclasses.replace(chosen, reason=f"{chosen.reason} (estimated: the probe pass raised {estimated[0]})")
    return chosen


def hf_checkpointing(model: Any, on: bool) -> None:
    """Gradient checkpointing on/off for a transformers (PEFT-wrapped) model, as the Trainer turns it on."""
    if on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_disable()


def truncate_like_trl(dataset: Any, max_length: int) -> Any:
    """What TRL does to padded examples, for padding-free ones (where it enforces no length).

    Every token column keeps its first ``max_length`` entries; examples left without a
    supervised token are dropped (TRL's ``truncation_mode = "keep_start"``).
    """
    token_columns = [c for c in ("input_ids", "labels", "attention_mask", "completion_mask", "assistant_masks", "position_ids") if c in dataset.column_names]

    def truncate(example):
        return {c: example[c][:max_length] for c in token_columns}

    dataset = dataset.map(truncate)
    if "labels" in dataset.column_names:
        dataset = dataset.filter(lambda example: any(label != -100 for label in example["labels"]))
    return dataset


class TokenCounter:
    """Tokens the model read (padding excluded) and supervised tokens, summed over every forward pass."""

    def __init__(self) -> None:
        self.tokens = 0
        self.supervised = 0

    def add(self, inputs: Any) -> None:
        ids = inputs.get("input_ids")
        if ids is None:
            return
        mask = inputs.get("attention_mask")
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        labels = inputs.get("labels")
        if labels is not None:
            self.supervised += int((labels != -100).sum())


def counting_trainer(base: type, counter: TokenCounter) -> type:
    """``base`` counting the tokens of every batch it trains on into ``counter``."""

    class CountingTrainer(base):  # type: ignore[misc, valid-type]
        def training_step(self, model, inputs, *args, **kwargs):
            counter.add(inputs)
            return super().training_step(model, inputs, *args, **kwargs)

    CountingTrainer.__qualname__ = f"Counting{base.__name__}"
    return CountingTrainer


#: SFTConfig arguments of each ``FinetuneSpec.packing`` value
PACKING_ARGS: dict[str, dict[str, Any]] = {
    # said explicitly for every mode: unsloth turns padding-free on by itself when it is left unset
    "padding_free": {"padding_free": True},
    "none": {"padding_free": False},
    # best-fit decreasing; TRL turns padding-free on with it (overflowing examples are truncated to max_length, as unpacked)
    "pack": {"packing": True, "packing_strategy": "bfd"},
    "group_by_length": {"train_sampling_strategy": "group_by_length", "padding_free": False},
}


def plain_loss_trainer(base: type) -> type:
    """``base`` (an SFTTrainer) computing the loss with the model's own cross-entropy.

    TRL 1.15's SFTTrainer computes the loss through a fused LM head whose kernel is
    written in Triton, which runs on CUDA/XPU only. On a CPU it fails: without Triton
    with ``AttributeError: 'NoneType' object has no attribute 'apply'``, with Triton
    installed with ``RuntimeError: 0 active drivers``. The loss here is the same —
    token cross-entropy on the response, the prompt labels being -100 — computed by
    ``transformers.Trainer.compute_loss`` (TRL's entropy/accuracy logs are skipped).
    """
    from transformers import Trainer

    class PlainLossSFTTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    PlainLossSFTTrainer.__qualname__ = f"PlainLoss{base.__name__}"
    return PlainLossSFTTrainer


class _quiet_padding_free_warning:
    """Silence TRL's warning that padding-free batches need FlashAttention, for SDPA/eager attention.

    transformers builds a block-diagonal causal mask from the restarting ``position_ids`` for
    those (tests/test_finetune_defaults.py checks each example's loss); other attention
    implementations keep the warning.
    """

    PREFIX = "Padding-free training is enabled, but the attention implementation"  # after the rank accelerate prepends

    def __init__(self, model: Any):
        config = getattr(model, "config", None)
        self.active = getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
        self.logger = logging.getLogger("trl.trainer.sft_trainer")

    def filter(self, record: logging.LogRecord) -> bool:
        return self.PREFIX not in str(record.getMessage())

    def __enter__(self) -> None:
        if self.active:
            self.logger.addFilter(self)

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeFilter(self)


def _device_type(model: Any) -> str:
    try:
        return next(model.parameters()).device.type
    except (StopIteration, AttributeError):
        return "cpu"


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

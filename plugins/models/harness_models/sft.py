"""LoRA supervised fine-tuning with TRL's SFTTrainer, shared by the built-in adapters.

Training data are prompt/completion pairs, so TRL computes the loss on the completion
(the response) only and appends the tokenizer's EOS to it. The trained adapter is
saved as ``adapter_model.safetensors`` + ``adapter_config.json``.

``FinetuneSpec.packing`` picks how examples become batches:

* ``"none"``: padded batches of ``batch_size`` examples in random order;
* ``"pack"``: TRL's best-fit-decreasing packing, several examples per row of up to
  ``max_seq_length`` tokens, padding-free (a batch is one flattened sequence whose
  ``position_ids`` restart at every example). transformers builds a block-diagonal mask from
  those ``position_ids`` for SDPA/eager attention, so examples never attend to each other
  (TRL's warning that only FlashAttention supports this predates that). ``batch_size`` counts
  rows, so an epoch has fewer steps: with ``max_steps = 0`` the Trainer counts the steps of
  ``epochs`` over the packed rows;
* ``"group_by_length"``: padded batches of examples of similar length (transformers'
  ``LengthGroupedSampler``: random mega-batches of up to 50 batches, sorted by length).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.api import FinetuneSpec, Progress, TrainPair
from harness.errors import MissingDependency


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
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``pairs`` and save the adapter into ``out_dir``; returns a summary.

    ``peft_config`` is None when the model already carries LoRA layers (unsloth's
    ``get_peft_model``). ``trainer_cls`` defaults to TRL's SFTTrainer. ``fused_loss``:
    whether TRL's fused LM-head loss may run; None means only on a CUDA/XPU device (see
    :func:`plain_loss_trainer`). unsloth replaces that kernel with one that runs anywhere.
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
        per_device_train_batch_size=ft.batch_size,
        gradient_accumulation_steps=ft.grad_accum,
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
        max_length=ft.max_seq_length,
        completion_only_loss=True,
        gradient_checkpointing=ft.gradient_checkpointing,
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
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_Progress()],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes through the harness's own bars, not printed dicts
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(str(out_dir), safe_serialization=True)
    _remove_tree(out_dir / "_trainer")
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    return {
        "steps": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_history": history,
        "seconds": round(seconds, 2),
        "examples": len(pairs),
        "packing": packing,
        "tokens_seen": tokens,
    }


#: SFTConfig arguments of each ``FinetuneSpec.packing`` value
PACKING_ARGS: dict[str, dict[str, Any]] = {
    "none": {},
    # best-fit decreasing; TRL turns padding-free on with it (overflowing examples are truncated to max_length, as unpacked)
    "pack": {"packing": True, "packing_strategy": "bfd"},
    "group_by_length": {"train_sampling_strategy": "group_by_length"},
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


def _device_type(model: Any) -> str:
    try:
        return next(model.parameters()).device.type
    except (StopIteration, AttributeError):
        return "cpu"


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

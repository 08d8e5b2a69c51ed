"""How the examples of an optimizer step go through the model: ``FinetuneSpec.auto_batch``.

An optimizer step sees ``batch_size × grad_accum`` examples (rows with ``packing = "pack"``). How
many of them go through one forward pass — the micro-batch — changes speed and memory, never the
step: the Trainer draws a step's examples from the same shuffled order whatever the micro-batch,
and normalises the loss by the supervised tokens of the whole step (``num_items_in_batch``), so
the gradient and the logged loss are those of one pass over all of them.

With ``auto_batch`` the micro-batch is the largest divisor of the step's examples that fits:

* on a GPU, measured: one forward and backward pass of the worst case — the longest examples of
  the training set, as many as the micro-batch holds, flattened (padding-free, packed) or padded
  to the longest — on the real model with its LoRA layers, in training mode; it fits when the
  peak memory of that pass plus the optimizer's state for the trainable weights stays within
  ``MEMORY_SHARE`` of the memory the process can use. An out-of-memory error means it does not.
  The pass leaves no trace: gradients are dropped and the random generators restored;
* on a CPU, by a token budget (``CPU_TOKENS`` tokens a pass), which bounds the activations.

Gradient checkpointing: when ``gradient_checkpointing`` is false and not even one example a pass
fits, it is turned on and the sizes are tried again (:func:`plan`); unsloth's adapters decide it
before loading LoRA layers, from :func:`activation_bytes_per_token`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from harness.api import FinetuneSpec

#: share of the GPU memory the process can use that a planned step may take (the rest: allocator
#: fragmentation, batches longer than the probe by the odd token, the logits of the fused loss)
MEMORY_SHARE = 0.85
#: tokens a forward pass may hold on a CPU
CPU_TOKENS = 16384


@dataclass(frozen=True)
class BatchPlan:
    """The micro-batches of one optimizer step: ``micro_batch × grad_accum`` examples a step."""

    micro_batch: int
    grad_accum: int
    gradient_checkpointing: bool
    #: why: "as set", "fits: ...", "cpu budget", ...
    reason: str
    #: tokens of the worst-case pass that decided it (0 when nothing was measured)
    probe_tokens: int = 0
    #: its peak memory in GiB (GPU only)
    probe_peak_gib: float | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


def divisors(n: int) -> list[int]:
    """Divisors of ``n``, largest first."""
    return [d for d in range(n, 0, -1) if n % d == 0]


def worst_tokens(lengths: Sequence[int], rows: int, packing: str, max_seq_length: int) -> tuple[int, int]:
    """(rows, tokens per row) of the largest forward pass ``rows`` examples can make.

    Padding-free: the ``rows`` longest examples flattened into one row. Padded ("none",
    "group_by_length"): ``rows`` rows of the longest example. Packed: ``rows`` full rows.
    """
    capped = sorted((min(n, max_seq_length) for n in lengths), reverse=True)
    if packing == "pack":
        return rows, max_seq_length
    if packing == "padding_free":
        return 1, sum(capped[:rows])
    return rows, (capped[0] if capped else max_seq_length)


def plan(
    ft: FinetuneSpec,
    lengths: Sequence[int],
    fits: Callable[[int, int, bool], tuple[bool, float | None]],
    *,
    can_checkpoint: bool = True,
) -> BatchPlan:
    """The micro-batch (and gradient checkpointing) of ``ft``.

    ``fits(rows, tokens_per_row, checkpointing)`` says whether a pass of that shape fits (and its
    peak GiB when measured). ``lengths``: the token count of every training example (packed rows
    count ``max_seq_length``). ``can_checkpoint``: whether checkpointing may still be switched on
    here (false when the adapter already decided it).
    """
    step = ft.batch_size * ft.grad_accum
    if not ft.auto_batch or ft.packing == "group_by_length":
        return BatchPlan(ft.batch_size, ft.grad_accum, ft.gradient_checkpointing, "as set")
    choices = [ft.gradient_checkpointing] if (ft.gradient_checkpointing or not can_checkpoint) else [False, True]
    for checkpointing in choices:
        for micro in divisors(step):
            rows, per_row = worst_tokens(lengths, micro, ft.packing, ft.max_seq_length)
            ok, peak = fits(rows, per_row, checkpointing)
            if ok:
                why = f"largest that fits: {micro} of {step} examples a pass"
                if checkpointing and not ft.gradient_checkpointing:
                    why += " with gradient checkpointing (none fit without)"
                return BatchPlan(micro, step // micro, checkpointing, why, rows * per_row, peak)
    rows, per_row = worst_tokens(lengths, 1, ft.packing, ft.max_seq_length)
    return BatchPlan(1, step, choices[-1], "nothing fits: one example a pass", rows * per_row, None)


def cpu_fits(rows: int, tokens_per_row: int, checkpointing: bool) -> tuple[bool, None]:
    return rows * tokens_per_row <= CPU_TOKENS, None


def activation_bytes_per_token(config: Any) -> float:
    """A generous estimate of what LoRA training keeps per token for the backward pass, without checkpointing.

    Per layer: the inputs of the LoRA projections, the attention's queries, keys, values and
    output, the norms' inputs (about 10 × hidden) and the MLP's gate, up and activation (3 ×
    intermediate), in 16-bit; plus fp32 logits for the loss. Measured peaks of unsloth QLoRA runs
    sit below it.
    """
    hidden = int(getattr(config, "hidden_size", 4096))
    inter = int(getattr(config, "intermediate_size", 4 * hidden))
    layers = int(getattr(config, "num_hidden_layers", 32))
    vocab = int(getattr(config, "vocab_size", 32000))
    return layers * (10 * hidden + 3 * inter) * 2 + vocab * 4


class CudaProbe:
    """``fits`` for :func:`plan`: one measured forward and backward pass per shape on the GPU.

    A pass that raises anything but an out-of-memory error (a model whose training forward needs
    more than ids and labels) is judged by :func:`activation_bytes_per_token` instead, and says so
    in ``results``. ``set_checkpointing(bool)`` switches gradient checkpointing on the model for a probe (None:
    the adapter fixed it). ``memory`` replaces the CUDA memory readings in tests: a callable
    returning (budget_bytes, peak_bytes_after_the_pass).
    """

    def __init__(self, model: Any, *, vocab_size: int, set_checkpointing: Callable[[bool], None] | None = None, memory: Any = None):
        self.model = model
        self.vocab = max(8, int(vocab_size))
        self.set_checkpointing = set_checkpointing
        self.memory = memory
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.results: list[dict[str, Any]] = []

    def __call__(self, rows: int, tokens_per_row: int, checkpointing: bool) -> tuple[bool, float | None]:
        import torch

        if self.set_checkpointing is not None:
            self.set_checkpointing(checkpointing)
        device = next(self.model.parameters()).device
        cuda = device.type == "cuda" and self.memory is None
        if cuda:
            gc.collect()
            torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info(device)
            budget = torch.cuda.memory_allocated(device) + free
            torch.cuda.reset_peak_memory_stats(device)
        cpu_state = torch.random.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        was_training = self.model.training
        out_of_memory = False
        failed: str | None = None
        try:
            self._pass(rows, tokens_per_row, device)
        except torch.OutOfMemoryError:
            out_of_memory = True
        except Exception as exc:  # the pass itself cannot run here: judge this size by the estimate instead
            failed = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.model.zero_grad(set_to_none=True)
            torch.random.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
            self.model.train(was_training)
        if cuda:
            peak = torch.cuda.max_memory_allocated(device)
            gc.collect()
            torch.cuda.empty_cache()
        elif self.memory is not None:
            budget, peak = self.memory(rows, tokens_per_row, checkpointing)
        else:  # a CPU: the pass ran, nothing to measure
            budget, peak = float("inf"), 0.0
        if failed is not None:
            base = torch.cuda.memory_allocated(device) if cuda else 0.0
            per_token = activation_bytes_per_token(getattr(self.model, "config", None)) / (3 if checkpointing else 1)
            peak = base + rows * tokens_per_row * per_token
        # Adam keeps two fp32 moments per trainable weight beyond what the pass allocated
        need = peak + 8 * self.trainable
        ok = not out_of_memory and need <= MEMORY_SHARE * budget
        peak_gib = None if out_of_memory else round(peak / 2**30, 2)
        record = {"rows": rows, "tokens_per_row": tokens_per_row, "checkpointing": checkpointing, "peak_gib": peak_gib, "fits": ok}
        if failed is not None:
            record["estimated"] = failed
        self.results.append(record)
        return ok, peak_gib

    def _pass(self, rows: int, tokens_per_row: int, device: Any) -> None:
        import torch

        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(3, self.vocab, (rows, tokens_per_row), generator=gen).to(device)
        self.model.train()
        out = self.model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        del out, ids

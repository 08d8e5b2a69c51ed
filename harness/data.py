"""Alpaca-format records: validation, the deterministic train/test split, prompt templates."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .api import Example, TrainPair, stable_hash
from .errors import UserError

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def to_examples(records: Sequence[dict[str, Any]], source: str) -> list[Example]:
    """Validate records and give each its id (see :class:`~harness.api.Example`).

    Exact duplicates are kept once. Records with the same instruction and input but
    different outputs are all kept, told apart by the order in which their outputs first
    appear.
    """
    bad: list[str] = []
    examples: list[Example] = []
    variants: dict[tuple[str, str], list[str]] = {}
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            bad.append(f"record {i}: not an object")
            continue
        inp = rec.get("input") or ""
        if not isinstance(rec.get("instruction"), str) or not isinstance(rec.get("output"), str) or not isinstance(inp, str):
            bad.append(f"record {i}: needs string 'instruction' and 'output' (and optional string 'input')")
            continue
        outputs = variants.setdefault((rec["instruction"], inp), [])
        if rec["output"] in outputs:
            continue  # an exact duplicate
        outputs.append(rec["output"])
        examples.append(Example.make(rec["instruction"], inp, rec["output"], variant=len(outputs) - 1))
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise UserError("; ".join(bad[:10]) + more, file=source)
    return examples


def split(examples: Sequence[Example], test_size: int, train_size: int, seed: int, *, source: str = "") -> tuple[list[Example], list[Example]]:
    """Deterministic split: order by id, shuffle with ``seed``, take the test split first, then train.

    The order of records in the source does not matter, and the test split for a given
    seed and size stays the same when ``train_size`` changes.
    """
    n = len(examples)
    if test_size > n:
        raise UserError(f"test_size {test_size} is larger than the data ({n} unique records)", key="dataset.test_size", file=source or None)
    rest = n - test_size
    if train_size > rest:
        raise UserError(
            f"train_size {train_size} plus test_size {test_size} is larger than the data ({n} unique records); at most {rest} allowed",
            key="dataset.train_size",
            file=source or None,
        )
    ordered = sorted(examples, key=lambda e: e.id)
    random.Random(seed).shuffle(ordered)
    test = ordered[:test_size]
    train = ordered[test_size : test_size + (train_size or rest)]
    return train, test


def render_prompt(example: Example, template: str, tokenizer: Any = None) -> str:
    """The prompt as text. ``chat`` applies the tokenizer's chat template; a model without a tokenizer here
    (``tokenizer`` None: a model served behind an API, whose server applies its chat template) gets the user
    message itself, and engines send :func:`prompt_messages` instead."""
    if template == "alpaca":
        if example.input:
            return ALPACA_WITH_INPUT.format(instruction=example.instruction, input=example.input)
        return ALPACA_NO_INPUT.format(instruction=example.instruction)
    if template == "chat":
        content = _chat_content(example)
        if tokenizer is None:
            return content
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("template = 'chat' but the model's tokenizer has no chat template; use template = 'alpaca'")
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    raise UserError(f"unknown template '{template}'; allowed: alpaca, chat")


def prompt_messages(example: Example, template: str) -> tuple[tuple[str, str], ...]:
    """The prompt as a conversation (``GenRequest.messages``) for a chat template; () for the Alpaca template."""
    return (("user", _chat_content(example)),) if template == "chat" else ()


def _chat_content(example: Example) -> str:
    return example.instruction if not example.input else f"{example.instruction}\n\n{example.input}"


def template_identity(template: str, tokenizer: Any = None) -> dict[str, str]:
    """What the prompt depends on, recorded with every generation and hashed into cache keys.

    A chat model without a tokenizer here (served behind an API) has its template applied by the server:
    the model's identity (endpoint and served name) stands for it."""
    if template == "alpaca":
        return {"template": "alpaca", "sha256": stable_hash([ALPACA_WITH_INPUT, ALPACA_NO_INPUT])[:16]}
    if tokenizer is None:
        return {"template": "chat", "applied_by": "server"}
    return {"template": "chat", "sha256": stable_hash(getattr(tokenizer, "chat_template", "") or "")[:16]}


def train_pairs(examples: Sequence[Example], template: str, tokenizer: Any = None) -> list[TrainPair]:
    return [TrainPair(render_prompt(e, template, tokenizer), e.output) for e in examples]

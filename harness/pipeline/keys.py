"""Cache keys: pure functions of what each result depends on (no plugins, no I/O).

* split key   = dataset fingerprint + sizes + seed
* train key   = adapter plugin + base identity + the train examples (content) + template + LoRA settings
* model key   = base identity + adapter sha256 (or "base")
* gen key     = model key + template + example id + effective decoding + engine identity
                (+ per-example seed for sampled strategies)
* score key   = gen key + metric key + reference sha (see ``harness.store``)

The driver of a run and its workers (any executor) compute keys with these same
functions, so a result made anywhere lands under the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..api import Decoding, Example, FinetuneSpec, non_default, stable_hash


def example_seed(sweep_seed: int, example_id: str) -> int:
    """The sampling seed of one example: the same in every config and batch."""
    return int(hashlib.sha256(f"{sweep_seed}:{example_id}".encode()).hexdigest()[:8], 16)


def model_key(identity: Mapping[str, Any], adapter_sha: str | None) -> str:
    return stable_hash({"identity": dict(identity), "adapter_sha256": adapter_sha or "base"})


def train_key(identity: Mapping[str, Any], train: Sequence[Example], template: Mapping[str, str], finetune: FinetuneSpec) -> str:
    """What a trained adapter depends on: only what it learned from (the train examples' full content), never the rest of the data."""
    content = stable_hash([[e.id, e.instruction, e.input, e.output] for e in train])
    return stable_hash({"identity": dict(identity), "train": content, "template": dict(template), "finetune": non_default(finetune)})


def decoding_key(decoding: Decoding) -> dict[str, Any]:
    return {k: v for k, v in non_default(decoding).items() if k != "requested"}


def gen_key(model_key_: str, template: Mapping[str, str], example_id: str, decoding: Decoding, engine: Mapping[str, Any], seed: int) -> str:
    key: dict[str, Any] = {
        "model": model_key_,
        "template": dict(template),
        "example": example_id,
        "decoding": decoding_key(decoding),
        "engine": dict(engine),
    }
    if decoding.do_sample:
        key["seed"] = seed
    return stable_hash(key)


def metric_key(identity: Mapping[str, Any]) -> str:
    return stable_hash(dict(identity))


__all__ = ["example_seed", "model_key", "train_key", "gen_key", "metric_key", "decoding_key"]

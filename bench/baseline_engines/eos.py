"""Shared by the built-in engines: the set of token ids that end a generation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def unique_token_ids(values: Iterable[Any]) -> list[int]:
    """Flatten ints and lists of ints (tokenizer, generation config, model config), first seen first, no repeats."""
    ids: list[int] = []
    for value in values:
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    return ids

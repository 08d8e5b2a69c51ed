"""Choosing what annotators rate: blinded items sampled from the run's generations.

:func:`sample_items` picks up to ``n_per_cell`` generations for every (model, config)
cell. It picks the *same* examples in every cell where it can, so ratings are paired,
and shuffles the whole list so the order gives no hint about the model or config. Two
configs that decode identically (beam search ignores temperature, say) share their
generations: such a generation becomes one item, rated once, and its rating counts for
every config that produced it. The store keeps each :class:`SheetItem` to map opaque
item ids back; rating formats (``harness.api.RatingFormat`` plugins) move the items to
annotators and the ratings back.

Ratings are put on 0-1 by :func:`to_unit`: binary unchanged (the fraction rated
acceptable), Likert ``(r - 1) / 4`` (1 -> 0, 3 -> 0.5, 5 -> 1).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UserError

__all__ = ["SheetCandidate", "SheetItem", "make_item_id", "sample_items", "to_unit"]

Cell = tuple[str, str]


@dataclass(frozen=True)
class SheetCandidate:
    """One stored generation that may be picked for rating."""

    gen_key: str  # the store's key of the generation
    model: str
    config: str
    example_id: str
    instruction: str
    input: str
    response: str
    reference: str = ""


@dataclass(frozen=True)
class SheetItem:
    """One exported item. The store keeps it to map ``item_id`` back to its generation.

    ``model`` and ``config`` name the first cell that produced the generation; a rating
    counts for every cell whose generation it is.
    """

    item_id: str
    gen_key: str
    model: str
    config: str
    example_id: str


# --------------------------------------------------------------------------- sampling


def make_item_id(salt: str, gen_key: str) -> str:
    """The opaque id of a generation on a sheet: ``"h"`` + 10 hex digits of sha256(salt + gen_key).

    The id stays the same for the same salt and generation, and nothing about the
    model or config can be read from it. The leading letter stops spreadsheets from
    reading an id such as ``1e5`` as a number.
    """
    return "h" + hashlib.sha256((salt + gen_key).encode("utf-8")).hexdigest()[:10]


def sample_items(
    candidates: Iterable[SheetCandidate], n_per_cell: int, seed: int, *, salt: str
) -> list[tuple[SheetItem, SheetCandidate]]:
    """Pick up to ``n_per_cell`` generations per (model, config) cell, paired and shuffled.

    The examples are ranked once for all cells. First come the examples that the
    most cells have, so an example every cell has comes before one that some cells
    lack. Among examples that equally many cells have, the order is drawn from
    ``seed``. Each cell then takes its first ``n_per_cell`` examples in this ranking
    (all of them if it has fewer). When every cell has the same examples, every
    cell gets the same ones; when some are missing, the cells still share as many
    as they can. Finally the whole list is shuffled with the same random generator.

    The result depends only on the candidates, ``seed`` and ``salt``, not on the
    order in which the candidates are given.

    A generation shared by several configs (identical effective decoding) may be
    listed once per config: it becomes one item, rated once. Raises ``ValueError`` when
    a cell has two different generations for one example, or, with odds of about one
    in a trillion per pair, when two item ids collide (use another salt). Raises
    ``UserError`` when ``n_per_cell`` is below 1.
    """
    if n_per_cell < 1:
        raise UserError(f"the number of items per model and config must be at least 1, got {n_per_cell}")

    cells: dict[Cell, dict[str, SheetCandidate]] = {}
    for cand in candidates:
        by_example = cells.setdefault((cand.model, cand.config), {})
        other = by_example.get(cand.example_id)
        if other is not None and other.gen_key != cand.gen_key:
            raise ValueError(
                f"model {cand.model!r}, config {cand.config!r} has two generations for example "
                f"{cand.example_id!r} ({other.gen_key!r} and {cand.gen_key!r})"
            )
        by_example[cand.example_id] = cand

    rng = random.Random(seed)
    coverage: dict[str, int] = {}
    for by_example in cells.values():
        for example_id in by_example:
            coverage[example_id] = coverage.get(example_id, 0) + 1
    ranking = sorted(coverage)
    rng.shuffle(ranking)
    ranking.sort(key=lambda example_id: -coverage[example_id])  # stable: keeps the drawn order within ties

    sampled: list[tuple[SheetItem, SheetCandidate]] = []
    owners: dict[str, str] = {}  # item_id -> gen_key
    for model, config in sorted(cells):
        by_example = cells[(model, config)]
        chosen = [example_id for example_id in ranking if example_id in by_example][:n_per_cell]
        for example_id in chosen:
            cand = by_example[example_id]
            item_id = make_item_id(salt, cand.gen_key)
            if owners.get(item_id) == cand.gen_key:
                continue  # a generation this config shares with one already picked: rated once
            if item_id in owners:
                raise ValueError(
                    f"item id {item_id!r} is shared by {owners[item_id]!r} and {cand.gen_key!r}; use another salt"
                )
            owners[item_id] = cand.gen_key
            item = SheetItem(item_id, cand.gen_key, cand.model, cand.config, cand.example_id)
            sampled.append((item, cand))
    rng.shuffle(sampled)
    return sampled


# --------------------------------------------------------------------------- scales


def to_unit(value: float, scale: str) -> float:
    """Map a rating (or mean) on ``scale`` to 0-1, higher is better: binary and pairwise unchanged, Likert ``(r - 1) / 4``."""
    if scale in ("binary", "pairwise"):
        return value
    if scale == "likert":
        return (value - 1.0) / 4.0
    raise ValueError(f"unknown rating scale {scale!r}; allowed: 'binary', 'likert', 'pairwise'")


def candidates(store, results) -> list[SheetCandidate]:
    """Every stored generation of the recorded cells of ``results``, with its example and reference."""
    out: list[SheetCandidate] = []
    examples: dict[str, dict] = {}
    for cell in results.cells:
        texts = store.texts([k for _, k in cell.keys])
        refs = examples.setdefault(cell.split_key, store.test_examples(cell.split_key))
        for example_id, gen_key in cell.keys:
            if gen_key in texts and example_id in refs:
                e = refs[example_id]
                out.append(SheetCandidate(gen_key, cell.model, cell.config, example_id, e.instruction, e.input, texts[gen_key], e.output))
    return out

"""Choosing what annotators rate: blinded items sampled from the run's generations.

:func:`sample_items` picks up to ``n_per_cell`` generations for every (model, config)
cell. It picks the *same* examples in every cell where it can, so ratings are paired,
and shuffles the whole list so the order gives no hint about the model or config. Two
configs that decode identically (beam search ignores temperature, say) share their
generations: such a generation becomes one item, rated once, and its rating counts for
every config that produced it. The store keeps each :class:`SheetItem` to map opaque
item ids back; rating formats (``harness.api.RatingFormat`` plugins) move the items to
annotators and the ratings back.

An item keeps the scale it was first exported for, for ever, so a rating never changes
meaning. Asking for another scale on outputs already exported makes a second round: new
items with new ids (:func:`round_ids`), beside the first round's items and ratings.

Ratings are put on 0-1 by :func:`to_unit`: binary unchanged (the fraction rated
acceptable), Likert ``(r - 1) / 4`` (1 -> 0, 3 -> 0.5, 5 -> 1).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UserError

__all__ = ["SheetCandidate", "SheetItem", "PairItem", "make_item_id", "sample_items", "pair_items", "candidates", "rating_items", "prepare_items", "round_ids", "earlier_rounds", "to_unit"]

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


# --------------------------------------------------------------------------- pairwise items


@dataclass(frozen=True)
class PairItem:
    """One exported pairwise item: config ``a``'s and config ``b``'s generations for one example of one model.

    ``a_on_left`` records the side ``a`` is shown on (drawn per item from the salt, so it is
    random to annotators and the same every time the item is exported).
    """

    item_id: str
    gen_key_a: str
    gen_key_b: str
    model: str
    config_a: str
    config_b: str
    example_id: str
    a_on_left: bool


def pair_items(candidates: Iterable[SheetCandidate], against: str, n_per_cell: int, seed: int, *, salt: str) -> list[tuple[PairItem, SheetCandidate, SheetCandidate]]:
    """Pairs of every config with ``against`` on the same examples, N per (model, config), paired and shuffled.

    The examples are chosen as for single items (:func:`sample_items`: the same examples in
    every cell where possible). Two generations with the same text are not asked about
    (nobody can prefer one), nor is a config sharing its generations with ``against``.
    """
    cands = list(candidates)
    base = {(c.model, c.example_id): c for c in cands if c.config == against}
    if not base:
        raise UserError(f"no generations of the config '{against}' to compare with", key="--against")
    others = [c for c in cands if c.config != against and (c.model, c.example_id) in base and base[(c.model, c.example_id)].response != c.response]
    if not others:
        raise UserError(f"no config has outputs that differ from '{against}' on the same examples: nothing to compare", key="--against")
    picked = sample_items(others, n_per_cell, seed, salt=salt)
    out = []
    for item, cand in picked:
        b = base[(cand.model, cand.example_id)]
        item_id = make_item_id(salt, f"pair|{cand.gen_key}|{b.gen_key}")
        a_on_left = hashlib.sha256(f"{salt}|side|{item_id}".encode()).digest()[0] % 2 == 0
        out.append((PairItem(item_id, cand.gen_key, b.gen_key, cand.model, cand.config, against, cand.example_id, a_on_left), cand, b))
    return out


# --------------------------------------------------------------------------- items as annotators see them


def rating_items(store) -> dict[str, Any]:
    """Every exported item of ``store`` as a :class:`~harness.api.RatingItem` (texts from the stored generations and examples), by id.

    Pairwise items show their outputs in the recorded order (left, right). Items whose
    generations are gone from the store are left out.
    """
    from ..api import RatingItem

    rows = store.human_items()
    keys = sorted({k for r in rows for k in (r["gen_key"], r["gen_key_b"]) if k})
    gens = store.generations(keys)
    examples: dict[str, Any] = {}
    for (split_key,) in store.db.execute("SELECT split_key FROM splits ORDER BY created"):  # the latest reference wins
        examples.update(store.test_examples(split_key))
    out = {}
    for r in rows:
        e = examples.get(r["example_id"])
        a = gens.get(r["gen_key"])
        b = gens.get(r["gen_key_b"]) if r["gen_key_b"] else None
        if e is None or a is None or (r["gen_key_b"] and b is None):
            continue
        if b is None:
            outputs = (a["text"],)
        else:
            outputs = (a["text"], b["text"]) if r["a_on_left"] else (b["text"], a["text"])
        out[r["item_id"]] = RatingItem(r["item_id"], e.instruction, e.input, e.output, outputs, r["scale"] or "")
    return out


def prepare_items(store, results, *, n_per_cell: int, pairwise: bool = False, against: str | None = None, scale: str | None = None) -> tuple[list[Any], Any]:
    """Sample the items to rate from ``results`` (single outputs, or pairs with ``against``), record them in the store
    (the map from opaque ids to cells), and return them as annotators see them, with the scale they are rated on.

    An item keeps the scale it was first exported for, for ever (its ratings mean what that scale
    says). Asking for another scale on the same outputs makes a second round: new items with new
    ids (:func:`round_ids`), rated and counted on their own scale beside the first round, whose
    items and ratings stay as they are. Call it inside ``store.transaction()`` to record the
    items only if what follows (writing the sheet) succeeds.
    """
    import secrets

    from ..api import RatingScale
    from .data import choose_baseline

    settings = results.experiment.human
    cands = candidates(store, results)
    if not cands:
        raise UserError(f"no generations to rate yet in {store.directory}; run `harness run --all` first")
    salt = store.get_meta("human_salt") or secrets.token_hex(8)
    seed = int(settings.get("seed", 0))
    with store.transaction():
        if pairwise:
            if against is None:
                configs = [(c.name, c.params) for c in results.configs]
                against = choose_baseline(configs, results.experiment.sweep_defaults or None)["config"]
            elif against not in {c.name for c in results.configs}:
                from ..errors import unknown_name

                raise UserError(unknown_name("config", against, [c.name for c in results.configs]), key="--against")
            pairs = pair_items(cands, against, n_per_cell, seed, salt=salt)
            ids = [p.item_id for p, _, _ in pairs]
            if store.get_meta("human_salt") is None:
                store.set_meta("human_salt", salt)
            store.save_pair_items([(p.item_id, p.gen_key_a, p.gen_key_b, p.model, p.config_a, p.config_b, p.example_id, p.a_on_left) for p, _, _ in pairs])
            rated_on = RatingScale("pairwise")
        else:
            wanted = scale or settings.get("scale", "auto")
            rated_on = RatingScale("likert" if wanted == "likert" else "binary")
            sampled = round_ids(store, sample_items(cands, n_per_cell, seed, salt=salt), rated_on.name, salt=salt)
            ids = [i.item_id for i, _ in sampled]
            if store.get_meta("human_salt") is None:
                store.set_meta("human_salt", salt)
            store.save_human_items([(i.item_id, i.gen_key, i.model, i.config, i.example_id) for i, _ in sampled], rated_on.name)
        items = rating_items(store)
    return [items[i] for i in ids if i in items], rated_on


def round_ids(store, sampled: list[tuple[SheetItem, SheetCandidate]], scale: str, *, salt: str) -> list[tuple[SheetItem, SheetCandidate]]:
    """``sampled`` with each generation's item id on ``scale``: the item exported before for this scale, else a new one.

    A generation's first item has the id :func:`make_item_id` (salt, gen_key), whatever its
    scale. An item for the same generation on another scale (a second round) gets
    ``make_item_id(salt, "<scale>|<gen_key>")``, so ids never move between scales and the same
    request gives the same ids again. An item recorded without a scale (before scales were
    recorded) is taken by the first scale that asks for it.
    """
    rows = store.human_items()
    on_scale = {(r["gen_key"], r["scale"]): r["item_id"] for r in rows if r["gen_key_b"] is None}
    taken = {r["item_id"] for r in rows}
    out = []
    for item, cand in sampled:
        item_id = on_scale.get((item.gen_key, scale)) or on_scale.get((item.gen_key, ""))
        if item_id is None:
            item_id = item.item_id
            if item_id in taken:
                item_id = make_item_id(salt, f"{scale}|{item.gen_key}")
                if item_id in taken:
                    raise ValueError(f"item id {item_id!r} is already used by another item; use another salt")
        out.append((replace(item, item_id=item_id), cand))
    return out


def earlier_rounds(store, item_ids: Iterable[str]) -> dict[str, int]:
    """How many items on another (single-output) scale rate the same outputs as ``item_ids``, by scale."""
    rows = [r for r in store.human_items() if r["gen_key_b"] is None]
    by_id = {r["item_id"]: r for r in rows}
    chosen = [by_id[i] for i in item_ids if i in by_id]
    gens = {r["gen_key"] for r in chosen}
    scales = {r["scale"] for r in chosen}
    out: dict[str, int] = {}
    for r in rows:
        if r["gen_key"] in gens and r["scale"] not in scales and r["scale"]:
            out[r["scale"]] = out.get(r["scale"], 0) + 1
    return out

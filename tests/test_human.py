"""Tests of choosing the blinded items annotators rate (harness.human)."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.report.items import SheetCandidate, make_item_id, sample_items, to_unit

MODELS = ("llama-small", "qwen-tiny")
CONFIGS = ("greedy", "beam4", "topp09")


def candidates(models=MODELS, configs=CONFIGS, examples=range(20), skip=()):
    """One generation per (model, config, example), minus the (model, config, example) in ``skip``."""
    out = []
    for model in models:
        for config in configs:
            for i in examples:
                example_id = f"ex{i:03d}"
                if (model, config, example_id) in skip:
                    continue
                out.append(
                    SheetCandidate(
                        gen_key=f"{model}|{config}|{example_id}",
                        model=model,
                        config=config,
                        example_id=example_id,
                        instruction=f"instruction {i}",
                        input=f"input {i}" if i % 2 else "",
                        response=f"response {i}",
                    )
                )
    return out


def examples_by_cell(sampled):
    cells: dict[tuple[str, str], set[str]] = {}
    for item, _ in sampled:
        cells.setdefault((item.model, item.config), set()).add(item.example_id)
    return cells


# --------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_and_independent_of_input_order():
    cands = candidates()
    a = sample_items(cands, 5, seed=7, salt="s")
    b = sample_items(list(reversed(cands)), 5, seed=7, salt="s")
    assert a == b
    c = sample_items(cands, 5, seed=8, salt="s")
    assert [item.gen_key for item, _ in c] != [item.gen_key for item, _ in a]


def test_sampling_is_paired_across_configs_and_models():
    sampled = sample_items(candidates(), 5, seed=1, salt="s")
    cells = examples_by_cell(sampled)
    assert set(cells) == {(m, c) for m in MODELS for c in CONFIGS}
    chosen = set.union(*cells.values())
    assert len(chosen) == 5
    assert all(ids == chosen for ids in cells.values())
    # the chosen examples depend on the seed, not just the first ids in sorted order
    picks = set()
    for seed in range(5):
        cells = examples_by_cell(sample_items(candidates(), 5, seed=seed, salt="s"))
        picks.add(frozenset(set.union(*cells.values())))
    assert len(picks) > 1


def test_sampling_prefers_examples_every_cell_has():
    # ex000-ex004 are missing from one cell: the cells should still share 5 examples
    skip = {("qwen-tiny", "beam4", f"ex{i:03d}") for i in range(5)}
    for seed in range(10):
        cells = examples_by_cell(sample_items(candidates(skip=skip), 5, seed=seed, salt="s"))
        shared = set.intersection(*cells.values())
        assert len(shared) == 5
        assert all(len(ids) == 5 for ids in cells.values())


def test_sampling_respects_n_per_cell_and_takes_all_when_fewer():
    cands = candidates(examples=range(4)) + [
        SheetCandidate("extra|cfg|ex000", "extra", "cfg", "ex000", "i", "", "r"),
    ]
    sampled = sample_items(cands, 3, seed=0, salt="s")
    cells = examples_by_cell(sampled)
    assert len(cells[("extra", "cfg")]) == 1
    assert all(len(ids) == 3 for cell, ids in cells.items() if cell != ("extra", "cfg"))
    assert len(sample_items(cands, 100, seed=0, salt="s")) == len(cands)
    with pytest.raises(UserError):
        sample_items(cands, 0, seed=0, salt="s")


def test_sampling_shuffles_model_and_config_order():
    sampled = sample_items(candidates(), 10, seed=3, salt="s")
    order = [(item.model, item.config) for item, _ in sampled]
    assert order != sorted(order)
    # the first half of the sheet is not one model
    assert len({model for model, _ in order[: len(order) // 2]}) == 2


def test_item_ids_are_opaque_and_stable():
    sampled = sample_items(candidates(), 5, seed=2, salt="secret")
    again = sample_items(candidates(), 5, seed=2, salt="secret")
    assert [i.item_id for i, _ in sampled] == [i.item_id for i, _ in again]
    for item, cand in sampled:
        assert item.item_id == make_item_id("secret", cand.gen_key)
        assert item.item_id.startswith("h") and len(item.item_id) == 11
        for name in (*MODELS, *CONFIGS, *item.model.split("-"), cand.example_id):
            assert name not in item.item_id
        assert (item.gen_key, item.model, item.config, item.example_id) == (
            cand.gen_key,
            cand.model,
            cand.config,
            cand.example_id,
        )
    assert make_item_id("other", sampled[0][1].gen_key) != sampled[0][0].item_id
    assert len({i.item_id for i, _ in sampled}) == len(sampled)


def test_sampling_rejects_two_generations_for_one_example_of_a_cell():
    cands = candidates(examples=range(2))
    twin = SheetCandidate("other-key", cands[0].model, cands[0].config, cands[0].example_id, "i", "", "r")
    with pytest.raises(ValueError):
        sample_items(cands + [twin], 1, seed=0, salt="s")
    # the same generation listed twice for a cell is harmless
    assert sample_items(cands + [cands[0]], 1, seed=0, salt="s") == sample_items(cands, 1, seed=0, salt="s")


def test_a_generation_shared_by_two_configs_is_one_item():
    """Beam search ignores temperature: two configs can decode identically and share generations (issue 13, item 5)."""
    shared = []
    for i in range(6):
        for config in ("beam2_t05", "beam2_t10"):  # the same gen key under both configs
            shared.append(SheetCandidate(f"m|beam2|ex{i:03d}", "m", config, f"ex{i:03d}", f"instruction {i}", "", f"response {i}"))
    own = [SheetCandidate(f"m|greedy|ex{i:03d}", "m", "greedy", f"ex{i:03d}", f"instruction {i}", "", f"r {i}") for i in range(6)]
    sampled = sample_items(shared + own, 4, seed=0, salt="s")
    keys = [item.gen_key for item, _ in sampled]
    assert len(keys) == len(set(keys)) == 8  # 4 shared items rated once, 4 greedy ones
    assert len({item.item_id for item, _ in sampled}) == 8
    assert {item.example_id for item, _ in sampled if item.gen_key.startswith("m|beam2")} == {
        item.example_id for item, _ in sampled if item.config == "greedy"
    }


def test_to_unit():
    assert to_unit(1.0, "binary") == 1.0
    assert to_unit(3.0, "likert") == 0.5
    assert to_unit(0.5, "pairwise") == 0.5
    with pytest.raises(ValueError):
        to_unit(1.0, "stars")



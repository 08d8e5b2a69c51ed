"""Tests of the blinded human-rating sheet (harness.human)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from harness import human
from harness.errors import UserError
from harness.human import (
    COLUMNS,
    Rating,
    SheetCandidate,
    SheetItem,
    escape_cell,
    group_ratings,
    likert_mean,
    make_item_id,
    read_sheet,
    sample_items,
    summarize,
    unescape_cell,
    write_sheet,
)

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


def write_csv(path: Path, rows, header=("item_id", "instruction", "input", "response", "rating", "annotator")):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def rating_rows(ratings):
    """CSV rows (header of write_csv) from (item_id, rating, annotator) triples."""
    return [[item_id, "instr", "", "resp", rating, annotator] for item_id, rating, annotator in ratings]


KNOWN = {"haaaaaaaaaa", "hbbbbbbbbbb", "hcccccccccc", "hdddddddddd"}


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


def test_sampling_rejects_duplicate_generations():
    cands = candidates(examples=range(2))
    with pytest.raises(ValueError):
        sample_items(cands + [cands[0]], 1, seed=0, salt="s")
    twin = SheetCandidate("other-key", cands[0].model, cands[0].config, cands[0].example_id, "i", "", "r")
    with pytest.raises(ValueError):
        sample_items(cands + [twin], 1, seed=0, salt="s")


# --------------------------------------------------------------------------- export


def test_written_sheet_has_exactly_the_columns_and_hides_model(tmp_path):
    sampled = sample_items(candidates(), 3, seed=0, salt="s")
    path = tmp_path / "sheet.csv"
    write_sheet(path, sampled)
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == COLUMNS
    assert len(rows) == 1 + len(sampled)
    assert [row[0] for row in rows[1:]] == [item.item_id for item, _ in sampled]
    assert all(row[4] == "" and row[5] == "" for row in rows[1:])
    text = path.read_text(encoding="utf-8")
    for name in (*MODELS, *CONFIGS):
        assert name not in text
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    "text",
    ["=SUM(A1)", "+1", "-x", "@cmd", "\tTAB", "\rCR", "'=already", "''+two", "'tis plain", "plain", "", "a=b", "'"],
)
def test_escape_round_trips(text):
    assert unescape_cell(escape_cell(text)) == text


def test_formula_cells_are_escaped_on_disk_and_read_back(tmp_path):
    texts = ["=SUM(A1)", "+1", "-x", "@cmd"]
    sampled = [
        (
            SheetItem(f"h{i:010d}", f"k{i}", "m", "c", f"e{i}"),
            SheetCandidate(f"k{i}", "m", "c", f"e{i}", text, "multi\nline\n=input", text),
        )
        for i, text in enumerate(texts)
    ]
    path = tmp_path / "sheet.csv"
    write_sheet(path, sampled)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    for row, text in zip(rows, texts):
        assert row[1] == "'" + text and row[3] == "'" + text
        assert row[2] == "multi\nline\n=input"  # only the start of a cell matters
    for row, text in zip(rows, texts):
        assert [unescape_cell(cell) for cell in row[1:4]] == [text, "multi\nline\n=input", text]


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sheet.csv"
    path.write_text("old content\n", encoding="utf-8")
    sampled = sample_items(candidates(), 3, seed=0, salt="s")
    calls = {"n": 0}
    real = human.escape_cell

    def failing(text):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("disk on fire")
        return real(text)

    monkeypatch.setattr(human, "escape_cell", failing)
    with pytest.raises(RuntimeError):
        write_sheet(path, sampled)
    assert path.read_text(encoding="utf-8") == "old content\n"
    assert list(tmp_path.iterdir()) == [path]


def test_write_into_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        write_sheet(tmp_path / "nope" / "sheet.csv", [])
    assert "nope" in str(err.value)


# --------------------------------------------------------------------------- import


def test_export_fill_and_read_back(tmp_path):
    sampled = sample_items(candidates(), 2, seed=0, salt="s")
    path = tmp_path / "sheet.csv"
    write_sheet(path, sampled)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    for i, row in enumerate(rows[1:]):
        row[4], row[5] = str(i % 2), "ann"
    write_csv(path, rows[1:], header=rows[0])
    ratings, scale = read_sheet(path, {item.item_id for item, _ in sampled})
    assert scale == "binary"
    assert [r.item_id for r in ratings] == [item.item_id for item, _ in sampled]
    assert [r.row for r in ratings] == list(range(2, 2 + len(sampled)))


def test_read_binary_sheet(tmp_path):
    path = write_csv(
        tmp_path / "s.csv",
        rating_rows([("haaaaaaaaaa", "1", "ann"), ("hbbbbbbbbbb", "0", "ann"), ("hcccccccccc", "1.0", "ann")]),
    )
    ratings, scale = read_sheet(path, KNOWN)
    assert scale == "binary"
    assert ratings == [
        Rating("haaaaaaaaaa", "ann", 1.0, 2),
        Rating("hbbbbbbbbbb", "ann", 0.0, 3),
        Rating("hcccccccccc", "ann", 1.0, 4),
    ]


def test_read_likert_sheet(tmp_path):
    path = write_csv(tmp_path / "s.csv", rating_rows([("haaaaaaaaaa", "5", "ann"), ("hbbbbbbbbbb", " 3 ", "ann")]))
    ratings, scale = read_sheet(path, KNOWN)
    assert scale == "likert"
    assert [r.rating for r in ratings] == [5.0, 3.0]


def test_only_ones_is_ambiguous_unless_the_scale_is_named(tmp_path):
    path = write_csv(tmp_path / "s.csv", rating_rows([("haaaaaaaaaa", "1", "ann"), ("hbbbbbbbbbb", "1", "ann")]))
    with pytest.raises(UserError) as err:
        read_sheet(path, KNOWN)
    assert "both scales" in str(err.value)
    assert read_sheet(path, KNOWN, scale="binary")[1] == "binary"
    assert read_sheet(path, KNOWN, scale="likert")[1] == "likert"


def test_several_annotators(tmp_path):
    path = write_csv(
        tmp_path / "s.csv",
        rating_rows(
            [
                ("haaaaaaaaaa", "1", "ann"),
                ("haaaaaaaaaa", "0", "bob"),
                ("hbbbbbbbbbb", "1", "bob"),
                ("hbbbbbbbbbb", "", "carl"),  # not rated yet
            ]
        ),
    )
    ratings, scale = read_sheet(path, KNOWN)
    assert scale == "binary"
    assert [(r.item_id, r.annotator, r.rating) for r in ratings] == [
        ("haaaaaaaaaa", "ann", 1.0),
        ("haaaaaaaaaa", "bob", 0.0),
        ("hbbbbbbbbbb", "bob", 1.0),
    ]


def test_empty_ratings_and_blank_rows_are_skipped(tmp_path):
    rows = rating_rows([("haaaaaaaaaa", "", ""), ("hbbbbbbbbbb", "4", "ann"), ("hcccccccccc", "  ", "ann")])
    rows.insert(1, [])
    rows.append(["", "", "", "", "", ""])
    path = write_csv(tmp_path / "s.csv", rows)
    ratings, scale = read_sheet(path, KNOWN)
    assert scale == "likert"
    assert ratings == [Rating("hbbbbbbbbbb", "ann", 4.0, 4)]


def test_header_whitespace_bom_extra_columns_and_semicolons(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(
        "\ufeff Rating ; item_id ;notes; annotator \r\n2;haaaaaaaaaa;fine;ann\r\n".encode("utf-8")
    )
    ratings, scale = read_sheet(path, KNOWN)
    assert (ratings, scale) == ([Rating("haaaaaaaaaa", "ann", 2.0, 2)], "likert")


def test_row_numbers_follow_spreadsheet_rows_with_multiline_cells(tmp_path):
    rows = [
        ["haaaaaaaaaa", "a\nb\nc", "", "resp", "1", "ann"],
        ["hbbbbbbbbbb", "x", "", "resp", "abc", "ann"],
    ]
    path = write_csv(tmp_path / "s.csv", rows)
    with pytest.raises(UserError) as err:
        read_sheet(path, KNOWN)
    assert "row 3 (line 5): rating 'abc' is not a number" in str(err.value)


# --------------------------------------------------------------------------- bad input


def assert_sheet_error(path, known=KNOWN, *, rows=(), contains=(), scale="auto"):
    with pytest.raises(UserError) as err:
        read_sheet(path, known, scale=scale)
    message = str(err.value)
    assert message.startswith(str(path) + ": ")
    assert err.value.file == str(path)
    for row in rows:
        assert f"row {row}" in message or f"rows {row}" in message or f", {row}" in message, (row, message)
    for text in contains:
        assert text in message, (text, message)
    return message


def test_missing_columns(tmp_path):
    path = write_csv(tmp_path / "s.csv", [["haaaaaaaaaa", "1"]], header=("item_id", "score"))
    message = assert_sheet_error(path, contains=["'rating'", "'annotator'", "found: 'item_id', 'score'"])
    assert "'item_id'," not in message.split("found:")[0]


def test_unknown_item_ids_are_listed_with_rows(tmp_path):
    rows = rating_rows([("haaaaaaaaaa", "1", "ann")] + [(f"hzz{i:08d}", "0", "ann") for i in range(13)])
    path = write_csv(tmp_path / "s.csv", rows)
    message = assert_sheet_error(path, rows=[3, 4, 12], contains=["unknown item ids", "'hzz00000000'", "and 3 more"])
    assert "'hzz00000010'" not in message  # only the first 10 are listed


def test_non_numeric_rating(tmp_path):
    path = write_csv(tmp_path / "s.csv", rating_rows([("haaaaaaaaaa", "1", "ann"), ("hbbbbbbbbbb", "abc", "ann")]))
    assert_sheet_error(
        path,
        rows=[3],
        contains=["row 3: rating 'abc' is not a number; allowed: 0 or 1 (binary) or 1-5 (Likert)"],
    )
    assert_sheet_error(path, scale="binary", contains=["row 3: rating 'abc' is not a number; allowed: 0 or 1 (binary)"])
    nan = write_csv(tmp_path / "nan.csv", rating_rows([("haaaaaaaaaa", "nan", "ann")]))
    assert_sheet_error(nan, rows=[2], contains=["is not a number"])


@pytest.mark.parametrize(
    ("values", "scale", "bad_rows", "text"),
    [
        (["1", "0", "7"], "auto", [4], "rating '7' is out of range; allowed: 0 or 1 (binary) or 1-5 (Likert)"),
        (["1", "2.5"], "auto", [3], "rating '2.5' is not a whole number"),
        (["1", "3"], "binary", [3], "rating '3' is out of range; allowed: 0 or 1 (binary)"),
        (["0", "3"], "likert", [2], "rating '0' is out of range; allowed: 1-5 (Likert)"),
        (["1", "0", "3", "4"], "auto", [3, 4, 5], "mix two scales"),
    ],
)
def test_out_of_range_ratings(tmp_path, values, scale, bad_rows, text):
    ids = sorted(KNOWN)
    path = write_csv(tmp_path / "s.csv", rating_rows([(ids[i], v, "ann") for i, v in enumerate(values)]))
    assert_sheet_error(path, scale=scale, rows=bad_rows, contains=[text])


def test_rating_without_annotator_or_item_id(tmp_path):
    path = write_csv(
        tmp_path / "s.csv",
        rating_rows([("haaaaaaaaaa", "1", "ann"), ("hbbbbbbbbbb", "0", "  "), ("", "1", "ann")]),
    )
    assert_sheet_error(
        path, rows=[3, 4], contains=["row 3: rating '0' has no annotator", "row 4: rating '1' has no item_id"]
    )


def test_duplicate_item_and_annotator(tmp_path):
    path = write_csv(
        tmp_path / "s.csv",
        rating_rows([("haaaaaaaaaa", "1", "ann"), ("hbbbbbbbbbb", "0", "ann"), ("haaaaaaaaaa", "0", "ann")]),
    )
    assert_sheet_error(path, contains=["'haaaaaaaaaa' is rated more than once by annotator 'ann' on rows 2, 4"])


def test_all_problems_are_reported_together_and_nothing_is_returned(tmp_path):
    rows = rating_rows(
        [
            ("haaaaaaaaaa", "1", "ann"),
            ("hbbbbbbbbbb", "0", "ann"),
            ("hunknown000", "1", "ann"),
            ("hcccccccccc", "yes", "ann"),
            ("hdddddddddd", "1", ""),
        ]
    )
    path = write_csv(tmp_path / "s.csv", rows)
    message = assert_sheet_error(path, rows=[4, 5, 6], contains=["3 problems", "nothing was imported"])
    assert "row 2" not in message and "row 3" not in message


def test_one_bad_row_among_good_ones_raises(tmp_path):
    rows = rating_rows([(item, "1", f"ann{i}") for i, item in enumerate(sorted(KNOWN))] + [("haaaaaaaaaa", "0", "x")])
    rows.append(["haaaaaaaaaa", "", "", "", "9", "y"])
    path = write_csv(tmp_path / "s.csv", rows)
    assert_sheet_error(path, rows=[7], contains=["1 problem in the rating sheet"])


def test_empty_file_and_file_without_ratings(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert_sheet_error(empty, contains=["no ratings found"])
    unrated = write_csv(tmp_path / "unrated.csv", rating_rows([("haaaaaaaaaa", "", "")]))
    assert_sheet_error(unrated, contains=["no ratings found"])
    header_only = write_csv(tmp_path / "header.csv", [])
    assert_sheet_error(header_only, contains=["no ratings found"])


def test_unreadable_files(tmp_path):
    assert_sheet_error(tmp_path / "missing.csv", contains=["file not found"])
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("item_id,rating,annotator\nhaaaaaaaaaa,1,Jos\xe9\n".encode("latin-1"))
    assert_sheet_error(latin1, contains=["not UTF-8"])


def test_unknown_scale_name(tmp_path):
    path = write_csv(tmp_path / "s.csv", rating_rows([("haaaaaaaaaa", "1", "ann")]))
    with pytest.raises(UserError):
        read_sheet(path, KNOWN, scale="stars")


# --------------------------------------------------------------------------- summary


def test_summarize_binary():
    result = summarize({("m", "greedy"): [1, 0, 1, 1], ("m", "beam"): [0, 0]}, "binary")
    assert result == {("m", "greedy"): (0.75, 4), ("m", "beam"): (0.0, 2)}


def test_summarize_likert_maps_to_unit_interval():
    by_cell = {("m", "a"): [1, 5, 3], ("m", "b"): [5, 5]}
    assert summarize(by_cell, "likert") == {("m", "a"): (0.5, 3), ("m", "b"): (1.0, 2)}
    assert likert_mean(by_cell) == {("m", "a"): (3.0, 3), ("m", "b"): (5.0, 2)}


def test_summarize_averages_annotators_per_item_first():
    by_cell = {("m", "c"): {"h1": [1, 0, 0, 0], "h2": [1]}, ("m", "empty"): {}}
    result = summarize(by_cell, "binary")
    assert result[("m", "c")] == (pytest.approx((0.25 + 1) / 2), 2)
    mean, n = result[("m", "empty")]
    assert math.isnan(mean) and n == 0
    with pytest.raises(ValueError):
        summarize({("m", "c"): [3]}, "binary")


def test_group_ratings_then_summarize():
    items = {
        "h1": SheetItem("h1", "k1", "m", "greedy", "e1"),
        "h2": SheetItem("h2", "k2", "m", "greedy", "e2"),
        "h3": SheetItem("h3", "k3", "m", "beam", "e1"),
    }
    ratings = [
        Rating("h1", "ann", 5, 2),
        Rating("h1", "bob", 3, 3),
        Rating("h2", "ann", 1, 4),
        Rating("h3", "ann", 4, 5),
    ]
    grouped = group_ratings(ratings, items)
    assert grouped == {("m", "greedy"): {"h1": [5, 3], "h2": [1]}, ("m", "beam"): {"h3": [4]}}
    assert likert_mean(grouped) == {("m", "greedy"): (2.5, 2), ("m", "beam"): (4.0, 1)}
    assert summarize(grouped, "likert") == {("m", "greedy"): (0.375, 2), ("m", "beam"): (0.75, 1)}
    with pytest.raises(ValueError):
        group_ratings([Rating("hx", "ann", 1, 2)], items)


def test_long_lists_of_problems_are_capped(tmp_path):
    path = write_csv(tmp_path / "s.csv", rating_rows([("haaaaaaaaaa", f"bad{i}", f"ann{i}") for i in range(15)]))
    message = assert_sheet_error(
        path, rows=[2, 11], contains=["15 problems", "... and 5 more ratings that are not numbers"]
    )
    assert "row 12:" not in message

"""The built-in ``csv`` rating format (harness_ratings.csv_format): export, read back, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness.api import PAIR_LEFT, PAIR_RIGHT, PAIR_TIE, Rating, RatingItem, RatingScale
from harness.errors import UserError
from harness_ratings import csv_format
from harness_ratings.csv_format import COLUMNS, PAIR_COLUMNS, escape_cell, unescape_cell, write_sheet

BINARY = RatingScale("binary")


def items(n=6, pairwise=False):
    out = []
    for i in range(n):
        outputs = (f"left {i}", f"right {i}") if pairwise else (f"response {i}",)
        out.append(RatingItem(f"h{i:010d}", f"instruction {i}", f"input {i}" if i % 2 else "", f"reference {i}", outputs))
    return out


def read_sheet(path, known, scale="auto"):
    """The reader with a set of ids and a scale name, as the old tests spelled them."""
    mapping = {i: RatingItem(i, "", "", "", ("",)) for i in known}
    ratings, resolved = csv_format.read_sheet(path, mapping, None if scale == "auto" else RatingScale(scale))
    return ratings, resolved.name


def R(item_id, annotator, value, row):
    return Rating(item_id, annotator, float(value), where=f"row {row}")


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



# --------------------------------------------------------------------------- export


def test_written_sheet_has_exactly_the_columns(tmp_path):
    its = items()
    path = tmp_path / "sheet.csv"
    write_sheet(path, its, BINARY)
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == COLUMNS
    assert len(rows) == 1 + len(its)
    assert [row[0] for row in rows[1:]] == [i.item_id for i in its]
    assert [row[3] for row in rows[1:]] == [i.reference for i in its]
    assert all(row[5] == "" and row[6] == "" for row in rows[1:])
    assert list(tmp_path.iterdir()) == [path]


def test_pairwise_sheet_round_trip(tmp_path):
    its = items(3, pairwise=True)
    path = tmp_path / "pairs.csv"
    write_sheet(path, its, RatingScale("pairwise"))
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == PAIR_COLUMNS
    assert rows[1][4:6] == ["left 0", "right 0"]
    for row, verdict in zip(rows[1:], ["left", "Right", "tie"]):
        row[6], row[7] = verdict, "ann"
    write_csv(path, rows[1:], header=rows[0])
    ratings, scale = csv_format.read_sheet(path, {i.item_id: i for i in its})
    assert scale.name == "pairwise"
    assert [r.value for r in ratings] == [PAIR_LEFT, PAIR_RIGHT, PAIR_TIE]
    rows[2][6] = "3"
    write_csv(path, rows[1:], header=rows[0])
    with pytest.raises(UserError, match="row 3: rating '3' is not one of left, right, tie"):
        csv_format.read_sheet(path, {i.item_id: i for i in its})


def test_comment_column_is_read(tmp_path):
    its = items(2)
    path = tmp_path / "sheet.csv"
    write_sheet(path, its, BINARY)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][5:8] = ["1", "ann", "=good, concise"]
    write_csv(path, rows[1:], header=rows[0])
    ratings, _ = csv_format.read_sheet(path, {i.item_id: i for i in its}, BINARY)
    assert ratings == [Rating(its[0].item_id, "ann", 1.0, comment="=good, concise", where="row 2")]


@pytest.mark.parametrize(
    "text",
    ["=SUM(A1)", "+1", "-x", "@cmd", "\tTAB", "\rCR", "'=already", "''+two", "'tis plain", "plain", "", "a=b", "'"],
)
def test_escape_round_trips(text):
    assert unescape_cell(escape_cell(text)) == text


def test_formula_cells_are_escaped_on_disk_and_read_back(tmp_path):
    texts = ["=SUM(A1)", "+1", "-x", "@cmd"]
    its = [RatingItem(f"h{i:010d}", text, "multi\nline\n=input", text, (text,)) for i, text in enumerate(texts)]
    path = tmp_path / "sheet.csv"
    write_sheet(path, its, BINARY)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    for row, text in zip(rows, texts):
        assert row[1] == "'" + text and row[3] == "'" + text and row[4] == "'" + text
        assert row[2] == "multi\nline\n=input"  # only the start of a cell matters
    for row, text in zip(rows, texts):
        assert [unescape_cell(cell) for cell in row[1:5]] == [text, "multi\nline\n=input", text, text]


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sheet.csv"
    path.write_text("old content\n", encoding="utf-8")
    calls = {"n": 0}
    real = csv_format.escape_cell

    def failing(text):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("disk on fire")
        return real(text)

    monkeypatch.setattr(csv_format, "escape_cell", failing)
    with pytest.raises(RuntimeError):
        write_sheet(path, items(), BINARY)
    assert path.read_text(encoding="utf-8") == "old content\n"
    assert list(tmp_path.iterdir()) == [path]


def test_write_into_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        write_sheet(tmp_path / "nope" / "sheet.csv", [], BINARY)
    assert "nope" in str(err.value)


# --------------------------------------------------------------------------- import


def test_export_fill_and_read_back(tmp_path):
    its = items()
    path = tmp_path / "sheet.csv"
    write_sheet(path, its, BINARY)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    for i, row in enumerate(rows[1:]):
        row[5], row[6] = str(i % 2), "ann"
    write_csv(path, rows[1:], header=rows[0])
    ratings, scale = read_sheet(path, {i.item_id for i in its})
    assert scale == "binary"
    assert [r.item_id for r in ratings] == [i.item_id for i in its]
    assert [r.where for r in ratings] == [f"row {n}" for n in range(2, 2 + len(its))]


def test_read_binary_sheet(tmp_path):
    path = write_csv(
        tmp_path / "s.csv",
        rating_rows([("haaaaaaaaaa", "1", "ann"), ("hbbbbbbbbbb", "0", "ann"), ("hcccccccccc", "1.0", "ann")]),
    )
    ratings, scale = read_sheet(path, KNOWN)
    assert scale == "binary"
    assert ratings == [
        R("haaaaaaaaaa", "ann", 1.0, 2),
        R("hbbbbbbbbbb", "ann", 0.0, 3),
        R("hcccccccccc", "ann", 1.0, 4),
    ]


def test_read_likert_sheet(tmp_path):
    path = write_csv(tmp_path / "s.csv", rating_rows([("haaaaaaaaaa", "5", "ann"), ("hbbbbbbbbbb", " 3 ", "ann")]))
    ratings, scale = read_sheet(path, KNOWN)
    assert scale == "likert"
    assert [r.value for r in ratings] == [5.0, 3.0]


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
    assert [(r.item_id, r.annotator, r.value) for r in ratings] == [
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
    assert ratings == [R("hbbbbbbbbbb", "ann", 4.0, 4)]


def test_header_whitespace_bom_extra_columns_and_semicolons(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(
        "\ufeff Rating ; item_id ;notes; annotator \r\n2;haaaaaaaaaa;fine;ann\r\n".encode("utf-8")
    )
    ratings, scale = read_sheet(path, KNOWN)
    assert (ratings, scale) == ([R("haaaaaaaaaa", "ann", 2.0, 2)], "likert")


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


def assert_sheet_error(path, known=KNOWN, *, rows=(), contains=(), scale="auto"):  # noqa: B006
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


def test_unknown_scale_name():
    with pytest.raises(ValueError):
        RatingScale("stars")


def test_long_lists_of_problems_are_capped(tmp_path):
    path = write_csv(tmp_path / "s.csv", rating_rows([("haaaaaaaaaa", f"bad{i}", f"ann{i}") for i in range(15)]))
    message = assert_sheet_error(
        path, rows=[2, 11], contains=["15 problems", "... and 5 more ratings that cannot be read"]
    )
    assert "row 12:" not in message

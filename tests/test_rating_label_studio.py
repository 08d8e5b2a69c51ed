"""The ``label-studio`` rating format (harness_ratings.label_studio) against real Label Studio exports.

The exports in tests/fixtures/label_studio were written by a real Label Studio 1.23.2 server
(tests/labelstudio, see the README there); this suite has no Label Studio and reads them as files.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import rating_samples
from harness.api import RatingItem, RatingScale
from harness.errors import UserError
from harness_ratings import label_studio
from harness_ratings.label_studio import LabelStudioRatingFormat, annotator_name, labeling_config, read_export, write_export

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "label_studio"
SCALES = ["binary", "likert", "pairwise"]
EMAILS = ("ann.one@example.org", "ann.two@example.org")
NUMBERS = ("label-studio user 2", "label-studio user 3")


def known(scale: str) -> dict[str, RatingItem]:
    return rating_samples.by_id(rating_samples.items(scale))


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("scale_name", SCALES)
def test_export_writes_tasks_and_config(tmp_path, scale_name):
    scale = RatingScale(scale_name)
    items = rating_samples.items(scale)
    fmt = LabelStudioRatingFormat()
    folder = tmp_path / "new" / "folder"
    written = fmt.export(items, scale, folder)
    assert written == fmt.targets(folder) == [folder / "tasks.json", folder / "labeling_config.xml"]
    assert sorted(p.name for p in folder.iterdir()) == ["labeling_config.xml", "tasks.json"]

    tasks = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
    assert [list(t) for t in tasks] == [["data"]] * len(items)
    texts = ["output_left", "output_right"] if scale.pairwise else ["output"]
    for task, item in zip(tasks, items):
        data = task["data"]
        assert list(data) == ["item_id", "harness_export", "instruction", "input", "reference", *texts]
        assert data["item_id"] == item.item_id
        assert [data[k] for k in ("instruction", "input", "reference")] == [item.instruction, item.input, item.reference]
        assert tuple(data[k] for k in texts) == item.outputs
    markers = {t["data"]["harness_export"] for t in tasks}
    assert len(markers) == 1 and markers.pop().startswith(f"harness-label-studio/1 {scale_name} ")

    config = ET.fromstring((folder / "labeling_config.xml").read_text(encoding="utf-8"))
    shown = {e.get("name"): e.get("value") for e in config.iter("Text")}
    assert shown == {name: f"${name}" for name in ["instruction", "input", "reference", *texts]}
    rating = [e for e in config.iter() if e.get("name") == "rating"]
    assert len(rating) == 1 and rating[0].get("toName") == texts[0] and rating[0].get("required") == "true"
    if scale_name == "likert":
        assert rating[0].tag == "Rating" and rating[0].get("maxRating") == "5"
    else:
        assert rating[0].tag == "Choices"
        aliases = [c.get("alias") for c in rating[0].iter("Choice")]
        assert aliases == (["left", "tie", "right"] if scale.pairwise else ["1", "0"])
    comment = [e for e in config.iter("TextArea")]
    assert len(comment) == 1 and comment[0].get("name") == "comment"


def test_the_marker_tells_exports_apart():
    scale = RatingScale("binary")
    items = rating_samples.items(scale)
    assert label_studio.export_marker(items, scale) == label_studio.export_marker(list(reversed(items)), scale)
    assert label_studio.export_marker(items[:5], scale) != label_studio.export_marker(items, scale)


def test_export_refuses_items_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="needs 2"):
        write_export(tmp_path, rating_samples.items("binary"), RatingScale("pairwise"))
    twice = rating_samples.items("binary")[:2] * 2
    with pytest.raises(ValueError, match="used twice"):
        write_export(tmp_path, twice, RatingScale("binary"))
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_both_files_or_neither(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "tasks.json").write_text("old tasks")
    (folder / "labeling_config.xml").write_text("old config")
    real = label_studio.temporary_beside
    calls = []

    def failing(path, write, **kw):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, write, **kw)

    monkeypatch.setattr(label_studio, "temporary_beside", failing)
    with pytest.raises(UserError, match="No space left on device"):
        write_export(folder, rating_samples.items("binary"), RatingScale("binary"))
    assert (folder / "tasks.json").read_text() == "old tasks"
    assert (folder / "labeling_config.xml").read_text() == "old config"
    assert sorted(p.name for p in folder.iterdir()) == ["labeling_config.xml", "tasks.json"]


def test_export_into_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError) as err:
        write_export(blocker / "sub", rating_samples.items("binary"), RatingScale("binary"))
    assert str(blocker) in str(err.value)


def test_labeling_config_escapes_nothing_it_should_not():
    # the Choice labels are attribute-quoted; the config stays well-formed for every scale
    for name in SCALES:
        ET.fromstring(labeling_config(RatingScale(name)))


# --------------------------------------------------------------------------- read real exports


@pytest.mark.parametrize("scale_name", SCALES)
@pytest.mark.parametrize("kind,names", [("plain", NUMBERS), ("with-users", EMAILS)])
def test_reads_real_exports(scale_name, kind, names):
    path = FIXTURES / f"{scale_name}-{kind}.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert sum(a["was_cancelled"] for t in raw for a in t["annotations"]) == 1  # the server kept the cancelled one

    ratings, scale = read_export(path, known(scale_name))
    assert scale == RatingScale(scale_name)
    assert {(r.item_id, r.annotator, r.value, r.comment) for r in ratings} == rating_samples.expected_ratings(scale_name, names)
    assert len(ratings) == len(rating_samples.expected_ratings(scale_name, names))
    by_task = {t["data"]["item_id"]: t["id"] for t in raw}
    for r in ratings:
        assert r.where.startswith(f"task {by_task[r.item_id]}, annotation ")
    # the scale may be named, and must then match
    assert read_export(path, known(scale_name), RatingScale(scale_name))[0] == ratings


def test_cancelled_annotation_is_skipped():
    path = FIXTURES / "likert-plain.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    cancelled = [(t["data"]["item_id"], a["completed_by"]) for t in raw for a in t["annotations"] if a["was_cancelled"]]
    assert cancelled == [(rating_samples.items("likert")[2].item_id, 3)]
    ratings, _ = read_export(path, known("likert"))
    assert (cancelled[0][0], "label-studio user 3") not in {(r.item_id, r.annotator) for r in ratings}


def test_pairwise_values_are_as_shown():
    ratings, _ = read_export(FIXTURES / "pairwise-with-users.json", known("pairwise"))
    first = {r.item_id: r.value for r in ratings if r.annotator == EMAILS[0]}
    assert [first[i.item_id] for i in rating_samples.items("pairwise")] == rating_samples.PLAN["pairwise"][0]


def test_annotator_names():
    assert annotator_name(2) == "label-studio user 2"
    assert annotator_name({"id": 2, "email": " ann@example.org ", "first_name": ""}) == "ann@example.org"
    assert annotator_name({"id": 7, "email": ""}) == "label-studio user 7"
    assert annotator_name(None) is None and annotator_name(True) is None and annotator_name("ann") is None


def test_plugin_is_registered(fake_plugins, cli):
    assert "label-studio" in fake_plugins.names("rating_format")
    info = fake_plugins.info("rating_format", "label-studio")
    assert info.cls.destination == "folder"
    listed = cli("plugins")
    assert listed.exit_code == 0 and "label-studio" in listed.stdout


# --------------------------------------------------------------------------- bad input: one error, nothing returned


def assert_refused(path, items, *needles, scale=None):
    with pytest.raises(UserError) as err:
        read_export(path, items, scale)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    for needle in needles:
        assert needle in message, message
    return message


def test_export_of_another_project():
    raw = json.loads((FIXTURES / "foreign-project.json").read_text())
    message = assert_refused(FIXTURES / "foreign-project.json", known("likert"), "no harness item", "nothing was imported")
    for task in raw:
        assert f"task {task['id']}" in message


def test_items_not_in_the_store():
    items = known("binary")
    missing = rating_samples.items("binary")[4]
    del items[missing.item_id]
    raw = json.loads((FIXTURES / "binary-plain.json").read_text())
    task_id = next(t["id"] for t in raw if t["data"]["item_id"] == missing.item_id)
    assert_refused(FIXTURES / "binary-plain.json", items, f"task {task_id} ({missing.item_id!r})", "not in the store")
    # an export of another scale's items: every task unknown
    assert_refused(FIXTURES / "binary-plain.json", known("likert"), "6 problems", "not in the store")


def test_off_scale_and_twice_rated():
    path = FIXTURES / "likert-bad.json"
    raw = json.loads(path.read_text())
    items = rating_samples.items("likert", n=3)
    seven = next(t for t in raw if t["data"]["item_id"] == items[0].item_id)
    message = assert_refused(path, rating_samples.by_id(items), "2 problems")
    assert f"task {seven['id']}, annotation {seven['annotations'][0]['id']}: rating 7 is off the likert scale; allowed: a rating of 1-5" in message
    assert f"item {items[1].item_id!r} is rated more than once by 'label-studio user 2'" in message


def test_scale_other_than_exported():
    message = assert_refused(FIXTURES / "likert-plain.json", known("likert"), "exported for the likert scale", scale=RatingScale("binary"))
    assert "ratings on the binary scale were asked for" in message


def test_truncated_export(tmp_path):
    data = (FIXTURES / "binary-plain.json").read_bytes()
    path = tmp_path / "truncated.json"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path, known("binary"), "not valid JSON", "truncated", "export the project again")


def test_corrupted_export(tmp_path):
    data = (FIXTURES / "binary-plain.json").read_text(encoding="utf-8")
    path = tmp_path / "corrupted.json"
    path.write_text(data.replace('"annotations":[', '"annotations":[}', 1), encoding="utf-8")
    message = assert_refused(path, known("binary"), "not valid JSON at line 1", "corrupted")
    assert "truncated" not in message
    path.write_bytes(b"\xff\xfe" + data.encode("utf-16-le"))
    assert_refused(path, known("binary"), "not UTF-8")
    path.write_text("", encoding="utf-8")
    assert_refused(path, known("binary"), "empty")
    path.write_text('{"tasks": []}', encoding="utf-8")
    assert_refused(path, known("binary"), "expected a JSON list of tasks")


def test_missing_file_and_folder(tmp_path):
    assert_refused(tmp_path / "nope.json", known("binary"), "file not found")
    assert_refused(tmp_path, known("binary"), "is a folder")


def test_json_min_export_is_named(tmp_path):
    """JSON-MIN flattens each annotation into the task's fields: say which export to take instead."""
    raw = json.loads((FIXTURES / "binary-plain.json").read_text())
    flat = [{"id": t["id"], **t["data"], "annotator": 2, "annotation_id": 1, "rating": "1"} for t in raw]
    path = tmp_path / "min.json"
    path.write_text(json.dumps(flat))
    assert_refused(path, known("binary"), "JSON-MIN", "export the project as 'JSON'")


def test_results_of_another_labeling_config(tmp_path):
    raw = json.loads((FIXTURES / "binary-plain.json").read_text())
    raw[0]["annotations"][0]["result"][0]["from_name"] = "sentiment"
    path = tmp_path / "edited-config.json"
    path.write_text(json.dumps(raw))
    assert_refused(path, known("binary"), f"task {raw[0]['id']}, annotation {raw[0]['annotations'][0]['id']}: unknown result 'sentiment'")


def test_an_annotation_without_a_rating(tmp_path):
    raw = json.loads((FIXTURES / "likert-with-users.json").read_text())
    raw[1]["annotations"][0]["result"] = [r for r in raw[1]["annotations"][0]["result"] if r["from_name"] != "rating"]
    path = tmp_path / "no-rating.json"
    path.write_text(json.dumps(raw))
    assert_refused(path, known("likert"), "no rating in the annotation's result")


def test_only_cancelled_annotations(tmp_path):
    raw = json.loads((FIXTURES / "binary-plain.json").read_text())
    for task in raw:
        for annotation in task["annotations"]:
            annotation["was_cancelled"] = True
    path = tmp_path / "all-cancelled.json"
    path.write_text(json.dumps(raw))
    assert_refused(path, known("binary"), "no ratings found")


@pytest.mark.parametrize("scale_name,value", [("binary", 1.0), ("likert", 4.0), ("pairwise", 0.0)])
def test_reads_what_was_clicked_in_label_studio(scale_name, value):
    """Exports of annotations made by clicking in Label Studio's own labeling page (choice aliases, stars, Skip)."""
    path = FIXTURES / f"{scale_name}-clicked.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    items = rating_samples.items(scale_name, n=2)
    [done] = [a for t in raw for a in t["annotations"] if not a["was_cancelled"]]
    [skipped] = [a for t in raw for a in t["annotations"] if a["was_cancelled"]]
    assert skipped["result"] == [] and done["completed_by"] == skipped["completed_by"]
    ratings, scale = read_export(path, rating_samples.by_id(items))
    assert scale.name == scale_name
    assert [(r.item_id, r.annotator, r.value, r.comment) for r in ratings] == [
        (items[0].item_id, f"label-studio user {done['completed_by']}", value, "clicked in Label Studio")
    ]

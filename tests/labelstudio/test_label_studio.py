"""The label-studio rating format against a real Label Studio server (issue 11 item 2).

Export items with the harness plugin, create a project from its labeling config with the SDK, import
its tasks, sign up two annotators, post their annotations through the API with their own tokens,
download the JSON exports and read them back with the plugin. With HARNESS_LS_FIXTURES=DIR the
exports are also copied to DIR (how tests/fixtures/label_studio was made).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import rating_samples
from harness.api import RatingScale
from harness.errors import UserError
from harness_ratings.label_studio import LabelStudioRatingFormat, write_export
from ls_server import CANCEL, download_plain, result_for, round_trip

pytestmark = pytest.mark.slow


def save_fixture(path: Path, name: str) -> None:
    target = os.environ.get("HARNESS_LS_FIXTURES")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / name)


@pytest.mark.parametrize("scale_name", ["binary", "likert", "pairwise"])
def test_round_trip(label_studio, annotators, tmp_path, scale_name):
    scale = RatingScale(scale_name)
    items = rating_samples.items(scale)
    folder = tmp_path / "export"
    written = write_export(folder, items, scale)
    assert [p.name for p in written] == ["tasks.json", "labeling_config.xml"]

    done = round_trip(
        label_studio,
        folder,
        annotators,
        decide=lambda i, a, data: rating_samples.planned(scale_name, annotators.index(a), i),
        comment=lambda i, a, data: rating_samples.COMMENTS.get((annotators.index(a), i), ""),
        out_dir=tmp_path / "from-ls",
        title=f"harness {scale_name}",
    )
    assert any(value == CANCEL for _, _, value, _ in done.submitted)

    plain = json.loads(done.exports["plain"].read_text(encoding="utf-8"))
    # Label Studio kept every text exactly as exported (unicode, markup, $variables, leading '=')
    sent = {t["data"]["item_id"]: t["data"] for t in json.loads((folder / "tasks.json").read_text(encoding="utf-8"))}
    assert {t["data"]["item_id"]: t["data"] for t in plain} == sent
    # the cancelled annotation is in the export, marked as such
    assert sum(a["was_cancelled"] for t in plain for a in t["annotations"]) == 1

    fmt = LabelStudioRatingFormat()
    known = rating_samples.by_id(items)
    emails = tuple(a.email for a in annotators)
    numbers = tuple(f"label-studio user {a.user_id}" for a in annotators)
    for kind, names in (("with_users", emails), ("plain", numbers)):
        ratings, got_scale = fmt.read(done.exports[kind], known, None)
        assert got_scale == scale
        assert {(r.item_id, r.annotator, r.value, r.comment) for r in ratings} == rating_samples.expected_ratings(scale_name, names)
        assert all(r.where.startswith("task ") and ", annotation " in r.where for r in ratings)
        ratings_again, _ = fmt.read(done.exports[kind], known, scale)
        assert ratings_again == ratings
    save_fixture(done.exports["plain"], f"{scale_name}-plain.json")
    save_fixture(done.exports["with_users"], f"{scale_name}-with-users.json")


def test_export_of_another_project_is_refused(label_studio, annotators, tmp_path):
    """A project that did not come from the harness: Label Studio's own text classification template."""
    admin = label_studio.client()
    config = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
</View>"""
    project = admin.projects.create(title="someone else's project", label_config=config)
    admin.projects.import_tasks(id=project.id, request=[{"data": {"text": "great"}}, {"data": {"text": "awful"}}])
    client = label_studio.client(annotators[0].token)
    for task in admin.tasks.list(project=project.id):
        client.annotations.create(id=task.id, result=[{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}}])
    path = download_plain(label_studio, project.id, tmp_path / "foreign.json")
    with pytest.raises(UserError) as err:
        LabelStudioRatingFormat().read(path, rating_samples.by_id(rating_samples.items("likert")), None)
    assert str(path) in str(err.value) and "no harness item" in str(err.value)
    save_fixture(path, "foreign-project.json")


def test_off_scale_and_twice_rated_are_refused(label_studio, annotators, tmp_path):
    """Label Studio's API accepts a rating of 7 and a second annotation by the same user: the import must not."""
    scale = RatingScale("likert")
    items = rating_samples.items(scale, n=3)
    write_export(tmp_path / "export", items, scale)
    admin = label_studio.client()
    project = admin.projects.create(title="harness likert, bad", label_config=(tmp_path / "export" / "labeling_config.xml").read_text())
    admin.projects.import_tasks(id=project.id, request=json.loads((tmp_path / "export" / "tasks.json").read_text()))
    tasks = {t.data["item_id"]: t.id for t in admin.tasks.list(project=project.id)}
    one, two = (label_studio.client(a.token) for a in annotators)
    one.annotations.create(id=tasks[items[0].item_id], result=result_for("likert", 7))
    one.annotations.create(id=tasks[items[1].item_id], result=result_for("likert", 4))
    one.annotations.create(id=tasks[items[1].item_id], result=result_for("likert", 5))
    two.annotations.create(id=tasks[items[2].item_id], result=result_for("likert", 3))
    path = download_plain(label_studio, project.id, tmp_path / "bad.json")
    exported = json.loads(path.read_text())
    assert sorted(len(t["annotations"]) for t in exported) == [1, 1, 2]
    with pytest.raises(UserError) as err:
        LabelStudioRatingFormat().read(path, rating_samples.by_id(items), None)
    message = str(err.value)
    assert str(path) in message and "2 problems" in message
    assert "rating 7 is off the likert scale" in message
    assert f"item {items[1].item_id!r} is rated more than once by 'label-studio user {annotators[0].user_id}'" in message
    save_fixture(path, "likert-bad.json")

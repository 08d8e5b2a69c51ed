"""The label-studio rating format against a real Label Studio server (issue 11 item 2).

Export items with the harness plugin, create a project from its labeling config with the SDK, import
its tasks, sign up two annotators, post their annotations through the API with their own tokens,
download the JSON exports and read them back with the plugin. With HARNESS_LS_FIXTURES=DIR the
exports are also copied to DIR (how tests/fixtures/label_studio was made).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("label_studio", reason="Label Studio is tested in .venv-labelstudio: make test-labelstudio")

import rating_samples  # noqa: E402
from harness.api import RatingScale
from harness.errors import UserError
from harness_ratings.label_studio import LabelStudioRatingFormat, write_export
from ls_server import CANCEL, download_plain, result_for, round_trip, save_fixture

pytestmark = pytest.mark.slow


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


def test_store_round_trip(label_studio, annotators, cli, fake_registry, tmp_path):
    """harness run -> human export --format label-studio -> Label Studio -> human import -> report (Human column, alpha).

    Uses the CLI and the store as tests/test_human_cli.py does; Label Studio sits where the
    spreadsheet sits there.
    """
    import hashlib
    import sqlite3

    from harness.report import stats
    from harness.report.items import to_unit
    from harness.store import STORE_NAME

    assert cli("run", "--all", "-r", fake_registry).exit_code == 0
    folder = tmp_path / "to-label-studio"
    exported = cli("human", "export", "--format", "label-studio", "-o", folder, "-n", 1, "-r", fake_registry)
    assert exported.exit_code == 0, exported.output
    text = (folder / "tasks.json").read_text(encoding="utf-8")
    assert "fake-base" not in text and "fake-tuned" not in text and "num_beams" not in text  # blinded
    tasks = json.loads(text)
    scale = tasks[0]["data"]["harness_export"].split(" ")[1]

    def decide(index, annotator, data):
        bit = hashlib.sha256(data["item_id"].encode()).digest()[0] % 2
        if annotators.index(annotator) == 1:
            if index == 0:
                return CANCEL
            if index % 5 == 1:
                bit = 1 - bit  # some disagreement
        return float(bit) if scale == "binary" else float(1 + 4 * bit)

    done = round_trip(label_studio, folder, annotators, decide, tmp_path / "from-ls", title="harness store round trip")
    imported = cli("human", "import", "--format", "label-studio", done.exports["with_users"], "-r", fake_registry)
    assert imported.exit_code == 0, imported.output
    given: dict[str, dict[str, float]] = {}
    for item_id, email, value, _ in done.submitted:
        if value != CANCEL:
            given.setdefault(item_id, {})[email] = value
    n_ratings = sum(len(v) for v in given.values())
    assert f"imported {n_ratings} new {scale} rating(s) from 2 annotator(s): ann.one@example.org, ann.two@example.org" in imported.stdout

    # the Human column: per cell, the mean over its items of the mean over annotators (on 0-1)
    con = sqlite3.connect(fake_registry.parent / "out" / STORE_NAME)
    try:
        cells = con.execute("SELECT item_id, model, config FROM human_items").fetchall()
    finally:
        con.close()
    per_cell: dict[tuple[str, str], list[float]] = {}
    for item_id, model, config in cells:
        if item_id in given:
            values = [to_unit(v, scale) for v in given[item_id].values()]
            per_cell.setdefault((model, config), []).append(sum(values) / len(values))
    report = json.loads(cli("report", "--format", "json", "-r", fake_registry).stdout)
    human = {(r["model"], r["config"]): r for r in report if r["metric"] == "human"}
    assert set(human) == set(per_cell) and len(human) == 2 * 12
    for cell, row in human.items():
        assert row["n"] == len(per_cell[cell])
        assert row["value"] == pytest.approx(sum(per_cell[cell]) / len(per_cell[cell]))

    # Krippendorff's alpha over the items both annotators rated
    level = "nominal" if scale == "binary" else "ordinal"
    expected = stats.krippendorff_alpha([v for v in given.values() if len(v) == 2], level=level)
    markdown = cli("report", "--format", "markdown", "-r", fake_registry).stdout
    line = next(x for x in markdown.splitlines() if "Krippendorff's alpha" in x and "all" in x.lower())
    assert f"({level}, {scale} ratings)" in line and f"{expected:.3f}" in line, line

"""``label-studio``: rate the blinded items in Label Studio and read its JSON export back.

Export writes a folder with two files:

* ``tasks.json``: a JSON list of ``{"data": {...}}`` tasks, one per item, to import into a
  Label Studio project. ``data`` holds the opaque ``item_id``, an export marker
  (``harness_export``: this format's version, the scale and a digest of the exported ids) and
  the texts ``instruction``, ``input``, ``reference`` and ``output`` (pairwise: ``output_left``
  and ``output_right``, in the order they are shown). Model and config never appear: the
  store maps each ``item_id`` back.
* ``labeling_config.xml``: the project's labeling interface. The texts, a rating named
  ``rating`` (binary: ``<Choices>`` "Acceptable"/"Unacceptable" with the aliases ``1``/``0``;
  Likert: ``<Rating maxRating="5">``; pairwise: ``<Choices>`` with the aliases ``left``, ``tie``
  and ``right``) and an optional ``<TextArea name="comment">``.

Both files are written to temporary names and moved into place, so a destination either
keeps its old files or gets both new ones.

Reading takes Label Studio's **JSON** export (Export > JSON, or ``GET
/api/projects/ID/export?exportType=JSON``): every task's ``annotations[]``, each with
``completed_by``, ``was_cancelled`` and ``result[]``. One annotator per ``completed_by``: Label
Studio's Export button (``GET /api/projects/ID/export?exportType=JSON``) writes the user's number
(``"completed_by": 2``), which becomes the annotator ``label-studio user 2``; an export snapshot
made with ``serialization_options={"annotations__completed_by": {"only_id": false}}`` (SDK:
``client.projects.exports.create``) writes the user object (``{"id": 2, "email":
"ann@example.org", ...}``), and the annotator is named by the email. Both names are stable for
one Label Studio instance; import every export of one project the same way, or one person
counts as two annotators. Cancelled ("skipped") annotations are left out; drafts and predictions are not
ratings and are ignored.

Bad input raises one :class:`~harness.errors.UserError` naming the file and every bad task
or annotation, and nothing is returned: a file that is not valid JSON (truncated, corrupted),
another export type (JSON-MIN, CSV), tasks without the harness fields (another project's
export), items the store does not know (an export of another store), a scale that differs
from the one asked for, ratings off the scale, one annotator rating one item twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from harness import hookimpl
from harness.api import PAIR_LEFT, PAIR_RIGHT, PAIR_TIE, Rating, RatingFormat, RatingItem, RatingScale, stable_hash, temporary_beside
from harness.errors import UserError

from .messages import MAX_LISTED, listed, problem_message

TASKS_FILE = "tasks.json"
CONFIG_FILE = "labeling_config.xml"
#: the first word of every export marker; the number is this format's task layout version
MARKER_PREFIX = "harness-label-studio/1"
#: ``from_name`` of the rating control and of the comment box in the labeling config
RATING_NAME = "rating"
COMMENT_NAME = "comment"

#: choice aliases (what Label Studio writes into results) and the labels annotators see
BINARY_CHOICES = (("1", "Acceptable", 1.0), ("0", "Unacceptable", 0.0))
PAIR_CHOICES = (("left", "Left is better", PAIR_LEFT), ("tie", "Tie", PAIR_TIE), ("right", "Right is better", PAIR_RIGHT))
_ALLOWED_TEXT = {
    "binary": "the choice 1 (Acceptable) or 0 (Unacceptable)",
    "likert": "a rating of 1-5",
    "pairwise": "the choice left, tie or right",
}


# --------------------------------------------------------------------------- export


def export_marker(items: Sequence[RatingItem], scale: RatingScale) -> str:
    """The marker every task of one export carries: ``harness-label-studio/1 <scale> <digest>``.

    The digest (12 hex digits of sha256 over the scale and the sorted item ids) tells two
    exports apart; the scale lets :func:`read_export` check, or infer, what the ratings mean.
    """
    digest = stable_hash({"scale": scale.name, "items": sorted(item.item_id for item in items)})[:12]
    return f"{MARKER_PREFIX} {scale.name} {digest}"


def task_data(item: RatingItem, marker: str) -> dict[str, str]:
    """The ``data`` of one task: the item id, the marker and the texts."""
    data = {
        "item_id": item.item_id,
        "harness_export": marker,
        "instruction": item.instruction,
        "input": item.input,
        "reference": item.reference,
    }
    if item.pairwise:
        data["output_left"], data["output_right"] = item.outputs
    else:
        data["output"] = item.outputs[0]
    return data


def labeling_config(scale: RatingScale) -> str:
    """The labeling config (Label Studio's XML) for rating on ``scale``."""

    def text(title: str, name: str) -> list[str]:
        return [f'  <Header value="{title}" size="5"/>', f'  <Text name="{name}" value="${name}"/>']

    lines = ["<View>", *text("Instruction", "instruction"), *text("Input", "input"), *text("Reference", "reference")]
    if scale.pairwise:
        target = "output_left"
        lines += [
            '  <View style="display: flex; gap: 1em;">',
            '    <View style="flex: 1;">',
            '      <Header value="Left" size="5"/>',
            '      <Text name="output_left" value="$output_left"/>',
            "    </View>",
            '    <View style="flex: 1;">',
            '      <Header value="Right" size="5"/>',
            '      <Text name="output_right" value="$output_right"/>',
            "    </View>",
            "  </View>",
            '  <Header value="Which output is better?" size="5"/>',
            f'  <Choices name="{RATING_NAME}" toName="{target}" choice="single-radio" showInline="true" required="true">',
            *(f"    <Choice value={quoteattr(label)} alias={quoteattr(alias)}/>" for alias, label, _ in PAIR_CHOICES),
            "  </Choices>",
        ]
    else:
        target = "output"
        lines += text("Output", "output")
        if scale.name == "binary":
            lines += [
                '  <Header value="Is the output acceptable?" size="5"/>',
                f'  <Choices name="{RATING_NAME}" toName="{target}" choice="single-radio" showInline="true" required="true">',
                *(f"    <Choice value={quoteattr(label)} alias={quoteattr(alias)}/>" for alias, label, _ in BINARY_CHOICES),
                "  </Choices>",
            ]
        else:
            lines += [
                '  <Header value="How good is the output? (1 worst, 5 best)" size="5"/>',
                f'  <Rating name="{RATING_NAME}" toName="{target}" maxRating="5" icon="star" required="true"/>',
            ]
    lines += [
        '  <Header value="Comment (optional)" size="6"/>',
        f'  <TextArea name="{COMMENT_NAME}" toName="{target}" rows="2" maxSubmissions="1" editable="true"/>',
        "</View>",
        "",
    ]
    return "\n".join(lines)


def write_export(folder: str | Path, items: Sequence[RatingItem], scale: RatingScale) -> list[Path]:
    """Write ``tasks.json`` and ``labeling_config.xml`` for ``items`` into ``folder`` (created if missing).

    Raises ``ValueError`` for an item id used twice or an item whose number of outputs does
    not fit the scale (one, or two for pairwise), and :class:`UserError` when the folder
    cannot be written. Either both files are replaced or neither.
    """
    folder = Path(folder)
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise ValueError(f"item id {item.item_id!r} is used twice")
        seen.add(item.item_id)
        if len(item.outputs) != (2 if scale.pairwise else 1):
            raise ValueError(f"item {item.item_id!r} has {len(item.outputs)} outputs; the {scale.name} scale needs {2 if scale.pairwise else 1}")
    marker = export_marker(items, scale)
    tasks = [{"data": task_data(item, marker)} for item in items]
    contents = {
        TASKS_FILE: json.dumps(tasks, ensure_ascii=False, indent=1) + "\n",
        CONFIG_FILE: labeling_config(scale),
    }
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # the folders this export makes, deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise UserError(f"cannot create the export folder: {exc.strerror or exc}", file=folder) from exc
    temporary: dict[str, Path] = {}
    try:
        for name, text in contents.items():
            temporary[name] = temporary_beside(folder / name, lambda handle, text=text: handle.write(text), newline="\n")
        for name, tmp in temporary.items():
            os.replace(tmp, folder / name)
    except BaseException as exc:
        for tmp in temporary.values():
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        _remove_empty(created)  # a failed export (a full disk) leaves no empty folder behind
        if isinstance(exc, OSError):
            raise UserError(f"cannot write the Label Studio export: {exc.strerror or exc}", file=folder) from exc
        raise
    return [folder / name for name in contents]


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


# --------------------------------------------------------------------------- import


def annotator_name(completed_by: Any) -> str | None:
    """A stable, readable annotator name for an annotation's ``completed_by``.

    A user object (export snapshots with ``annotations__completed_by`` expanded) gives its
    email, which is unique per Label Studio instance. The user's number (the Export button)
    gives ``label-studio user <id>``. Anything else gives None.
    """
    if isinstance(completed_by, dict):
        email = completed_by.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        completed_by = completed_by.get("id")
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"label-studio user {completed_by}"
    return None


def read_export(path: str | Path, items: Mapping[str, RatingItem], scale: RatingScale | None = None) -> tuple[list[Rating], RatingScale]:
    """Every rating in a Label Studio JSON export of tasks made by :func:`write_export`, and their scale.

    ``items`` are the items the store knows, by id. ``scale`` None takes the scale from the
    tasks' export marker. Ratings come back in file order (task, then annotation), each
    with ``where`` = ``"task <id>, annotation <id>"``. See the module docstring for what is
    refused; every problem is listed in one :class:`UserError`.
    """
    path = Path(path)
    tasks = _load_tasks(path)
    problems = _Problems()
    markers: dict[str, list[str]] = {}  # scale name -> tasks
    parsed: list[tuple[str, str, str, Any, str, str]] = []  # task label, where, item_id, raw value, annotator, comment
    seen: dict[tuple[str, str], list[str]] = {}

    for index, task in enumerate(tasks):
        label = _task_label(task, index)
        if not isinstance(task, dict):
            problems.add(f"{label}: not a JSON object")
            continue
        data = task.get("data")
        if not isinstance(data, dict) or "annotations" not in task:
            if "annotations" not in task and ("item_id" in task or "annotator" in task):
                problems.add(f"{label}: no 'annotations' list; this looks like a JSON-MIN export: export the project as 'JSON'")
            else:
                problems.add(f"{label}: no 'data' object and 'annotations' list; export the project as 'JSON' (not JSON-MIN or CSV)")
            continue
        item_id, marker = data.get("item_id"), data.get("harness_export")
        if not isinstance(marker, str) or not marker.startswith(MARKER_PREFIX + " ") or not isinstance(item_id, str):
            problems.foreign.append(label)
            continue
        marker_scale = marker.split(" ")[1] if len(marker.split(" ")) == 3 else ""
        markers.setdefault(marker_scale, []).append(label)
        if item_id not in items:
            problems.unknown.append(f"{label} ({item_id!r})")
            continue
        annotations = task.get("annotations")
        if not isinstance(annotations, list):
            problems.add(f"{label}: 'annotations' is not a list")
            continue
        for number, annotation in enumerate(annotations):
            where = f"{label}, annotation {annotation.get('id', f'#{number + 1}')}" if isinstance(annotation, dict) else f"{label}, annotation #{number + 1}"
            if not isinstance(annotation, dict):
                problems.add(f"{where}: not a JSON object")
                continue
            if annotation.get("was_cancelled"):
                continue
            annotator = annotator_name(annotation.get("completed_by"))
            if annotator is None:
                problems.add(f"{where}: 'completed_by' names no user ({annotation.get('completed_by')!r})")
                continue
            raw, comment, problem = _rating_of(annotation.get("result"))
            if problem:
                problems.add(f"{where}: {problem}")
                continue
            seen.setdefault((item_id, annotator), []).append(where)
            parsed.append((label, where, item_id, raw, annotator, comment))

    resolved = _resolve_scale(scale, markers, problems)
    ratings: list[Rating] = []
    if resolved is not None:
        for _, where, item_id, raw, annotator, comment in parsed:
            value = _value(raw, resolved)
            if value is None:
                problems.add(f"{where}: rating {raw!r} is off the {resolved.name} scale; allowed: {_ALLOWED_TEXT[resolved.name]}")
                continue
            if items[item_id].pairwise != resolved.pairwise:
                problems.add(f"{where}: item {item_id!r} has {len(items[item_id].outputs)} output(s), which does not fit the {resolved.name} scale")
                continue
            ratings.append(Rating(item_id, annotator, value, comment=comment, where=where))
    for (item_id, annotator), places in seen.items():
        if len(places) > 1:
            problems.add(f"item {item_id!r} is rated more than once by {annotator!r} ({'; '.join(places[:MAX_LISTED])}); keep one annotation per annotator and item")
    if problems.count():
        raise UserError(problems.render(), file=path)
    if not ratings:
        raise UserError("no ratings found: no task has a submitted (not cancelled) annotation", file=path)
    return ratings, resolved


def _load_tasks(path: Path) -> list[Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UserError("file not found", file=path) from exc
    except IsADirectoryError as exc:
        raise UserError("is a folder; name the JSON file Label Studio exported", file=path) from exc
    except OSError as exc:
        raise UserError(f"cannot read the file: {exc.strerror or exc}", file=path) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"the file is not UTF-8 text (byte {exc.start}); is it Label Studio's JSON export?", file=path) from exc
    if not text.strip():
        raise UserError("the file is empty; export the project again as 'JSON'", file=path)
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(text.rstrip()) - 1
        why = "the file ends too early (truncated?)" if truncated else "corrupted"
        raise UserError(f"not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}): {why}; export the project again as 'JSON'", file=path) from exc
    if not isinstance(tasks, list):
        raise UserError(f"expected a JSON list of tasks (Label Studio's 'JSON' export), found a JSON {type(tasks).__name__}", file=path)
    return tasks


def _task_label(task: Any, index: int) -> str:
    task_id = task.get("id") if isinstance(task, dict) else None
    return f"task {task_id}" if isinstance(task_id, (int, str)) and not isinstance(task_id, bool) else f"task #{index + 1}"


def _rating_of(result: Any) -> tuple[Any, str, str]:
    """(raw rating, comment, problem) of one annotation's ``result`` list."""
    if not isinstance(result, list):
        return None, "", "'result' is not a list"
    raw: list[Any] = []
    comment = ""
    for region in result:
        if not isinstance(region, dict):
            return None, "", "a 'result' entry is not a JSON object"
        name, value = region.get("from_name"), region.get("value")
        if not isinstance(value, dict):
            return None, "", f"the result {name!r} has no 'value' object"
        if name == RATING_NAME:
            if "rating" in value:
                raw.append(value["rating"])
            elif isinstance(value.get("choices"), list) and len(value["choices"]) == 1:
                raw.append(value["choices"][0])
            else:
                return None, "", f"the result 'rating' holds neither a rating nor one choice ({json.dumps(value)[:80]})"
        elif name == COMMENT_NAME:
            texts = value.get("text")
            if isinstance(texts, list):
                comment = "\n".join(str(t) for t in texts).strip()
            elif isinstance(texts, str):
                comment = texts.strip()
        else:
            return None, "", f"unknown result {name!r}: the project's labeling config is not the one the harness exported (expected '{RATING_NAME}' and '{COMMENT_NAME}')"
    if not raw:
        return None, "", "no rating in the annotation's result"
    if len(raw) > 1:
        return None, "", f"{len(raw)} ratings in one annotation"
    return raw[0], comment, ""


def _resolve_scale(scale: RatingScale | None, markers: dict[str, list[str]], problems: _Problems) -> RatingScale | None:
    names = sorted(markers)
    for name in names:
        if name not in RatingScale.SCALES:
            problems.add(f"{listed(markers[name])}: the export marker names an unknown scale {name!r}")
    known = [name for name in names if name in RatingScale.SCALES]
    if scale is not None:
        for name in known:
            if name != scale.name:
                problems.add(f"{listed(markers[name])}: exported for the {name} scale, but ratings on the {scale.name} scale were asked for")
        return scale
    if len(known) > 1:
        problems.add("the tasks mix scales: " + "; ".join(f"{name} on {listed(markers[name])}" for name in known) + "; import one scale at a time")
        return None
    return RatingScale(known[0]) if known else None


def _value(raw: Any, scale: RatingScale) -> float | None:
    if scale.name == "likert":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return None
        return float(raw) if float(raw) in scale.values else None
    table = {alias: value for alias, _, value in (PAIR_CHOICES if scale.pairwise else BINARY_CHOICES)}
    table.update({label: value for _, label, value in (PAIR_CHOICES if scale.pairwise else BINARY_CHOICES)})
    return table.get(raw) if isinstance(raw, str) else None


class _Problems:
    """The problems of one export, rendered as one message."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.foreign: list[str] = []  # tasks without the harness fields
        self.unknown: list[str] = []  # tasks of items the store does not know

    def add(self, line: str) -> None:
        self.lines.append(line)

    def count(self) -> int:
        return len(self.lines) + len(self.foreign) + len(self.unknown)

    def render(self) -> str:
        lines = list(self.lines[:MAX_LISTED])
        if len(self.lines) > MAX_LISTED:
            lines.append(f"... and {len(self.lines) - MAX_LISTED} more problems")
        if self.foreign:
            lines.append(
                f"{listed(self.foreign)}: no harness item (the task's data lacks 'item_id' and 'harness_export'); "
                "this is the export of a project whose tasks did not come from 'harness human export --format label-studio'"
            )
        if self.unknown:
            lines.append(f"{listed(self.unknown)}: items not in the store; this export comes from another run or store")
        return problem_message(self.count(), "Label Studio export", lines)


# --------------------------------------------------------------------------- the plugin


class LabelStudioRatingFormat(RatingFormat):
    name = "label-studio"
    version = "1"
    description = "a Label Studio project: tasks.json + labeling_config.xml out, its JSON export back"
    destination = "folder"

    def targets(self, destination: Path) -> list[Path]:
        return [Path(destination) / TASKS_FILE, Path(destination) / CONFIG_FILE]

    def export(self, items: Sequence[RatingItem], scale: RatingScale, destination: Path) -> list[Path]:
        return write_export(destination, items, scale)

    def read(self, path: Path, items: Mapping[str, RatingItem], scale: RatingScale | None) -> tuple[list[Rating], RatingScale]:
        return read_export(path, items, scale)


@hookimpl
def harness_register_rating_formats(register):
    register(LabelStudioRatingFormat)

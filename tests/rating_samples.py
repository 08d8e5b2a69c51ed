"""Blinded rating items shared by the rating tests: the Label Studio round trip (tests/labelstudio, its own
venv), the unit tests of its saved exports (tests/test_rating_label_studio.py) and the rating page tests.

The texts exercise what a tool can get wrong: empty inputs, several lines, non-ASCII, markup that must
stay text, a ``$name`` that looks like a labeling-config variable, and a leading ``=``.
"""

from __future__ import annotations

from harness.api import RatingItem, RatingScale

TEXTS = [
    ("Name a colour.", "", "Blue.", "Red."),
    ("Translate to French.", "naïve café", "café naïf", "un café naïf — très bon"),
    ("Write two lines.", "", "line one\nline two", "first line\nsecond line\n"),
    ("Escape this HTML.", "<b>bold</b>", "&lt;b&gt;bold&lt;/b&gt;", "<script>alert('x')</script>"),
    ("Echo the variable.", "$output", "$output", "$input and ${reference}"),
    ("Start with an equals sign.", "1+1", "=2", "=SUM(A1:A2) 日本語"),
]


def items(scale: RatingScale | str, n: int = 6) -> list[RatingItem]:
    """``n`` items (at most 6) for ``scale``: one output each, or two (left, right) for pairwise.

    Ids depend on the scale, so items of different scales never share one.
    """
    scale = scale if isinstance(scale, RatingScale) else RatingScale(scale)
    out = []
    for i, (instruction, input_, reference, output) in enumerate(TEXTS[:n]):
        outputs = (output, f"{reference} (right)") if scale.pairwise else (output,)
        out.append(RatingItem(f"h{scale.name[0]}{i:09d}", instruction, input_, reference, outputs))
    return out


def by_id(item_list: list[RatingItem]) -> dict[str, RatingItem]:
    return {item.item_id: item for item in item_list}


# --------------------------------------------------------------------------- what two annotators do

#: an annotator's step on a task: a value on the scale, CANCEL (Label Studio's "Skip"), or None (left alone)
CANCEL = "cancel"
L, T, R = 1.0, 0.5, 0.0  # harness.api.PAIR_LEFT / PAIR_TIE / PAIR_RIGHT

#: per scale, per annotator (first, second), per item (in the order of :func:`items`)
PLAN: dict[str, tuple[list, list]] = {
    "binary": ([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 1.0, CANCEL, 1.0, 0.0, None]),
    "likert": ([5.0, 4.0, 3.0, 2.0, 1.0, 5.0], [4.0, 4.0, CANCEL, 2.0, 1.0, None]),
    "pairwise": ([L, R, T, L, R, L], [L, T, CANCEL, R, R, None]),
}
#: (annotator index, item index) -> comment
COMMENTS = {(0, 0): "clear, but terse — ok", (1, 3): "shows <markup> as text, good"}


def planned(scale: str, annotator: int, index: int):
    return PLAN[scale][annotator][index]


def expected_ratings(scale: str, names: tuple[str, str]) -> set[tuple[str, str, float, str]]:
    """(item id, annotator name, value, comment) of every rating the plan gives (cancelled and untouched tasks left out)."""
    out = set()
    for a, name in enumerate(names):
        for i, item in enumerate(items(scale)):
            value = planned(scale, a, i)
            if value is not None and value != CANCEL:
                out.add((item.item_id, name, value, COMMENTS.get((a, i), "")))
    return out

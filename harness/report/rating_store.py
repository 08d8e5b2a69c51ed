"""The rating page over a results store: every rating is committed to the store as it is given.

:class:`StoreBackend` implements :class:`harness.report.rating_page.RatingBackend` for the
items :func:`harness.report.items.prepare_items` recorded. One item is rated at most once per
annotator: the check and the insert happen in one transaction, so two browser tabs (or two
annotators typing the same name) cannot both store a rating for it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..api import Rating, RatingItem, RatingScale
from ..errors import UserError
from .rating_page import AlreadyRated, UnknownItem, annotator_order


class StoreBackend:
    def __init__(self, store, items: Sequence[RatingItem], scale: RatingScale, *, source: str = "rating page"):
        self.store = store  # opened with threads=True: the server's threads take turns through the lock
        self.scale = scale
        self._items = list(items)
        self._by_id = {i.item_id: i for i in self._items}
        self._source = source
        self._lock = threading.Lock()
        #: ratings stored by this server
        self.stored = 0

    def items(self, annotator: str) -> list[RatingItem]:
        return annotator_order(self._items, annotator)

    def given(self, annotator: str) -> dict[str, Rating]:
        with self._lock:
            rows = self.store.ratings_of(annotator)
        return {i: Rating(i, annotator, v, comment=c) for i, v, c in rows if i in self._by_id}

    def submit(self, rating: Rating) -> None:
        if rating.item_id not in self._by_id:
            raise UnknownItem(f"no item {rating.item_id!r}")
        if not self.scale.allows(rating.value):
            allowed = ", ".join(f"{v:g}" for v in self.scale.values)
            raise UserError(f"rating {rating.value:g} is off the {self.scale.name} scale; allowed: {allowed}")
        with self._lock:
            earlier = self.store.add_rating(rating.item_id, rating.annotator, float(rating.value), self.scale.name, self._source, rating.comment)
            if earlier is None:
                self.stored += 1
        if earlier is not None:
            raise AlreadyRated(Rating(rating.item_id, rating.annotator, earlier[0], comment=earlier[1]))

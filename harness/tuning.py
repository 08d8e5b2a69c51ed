"""What a pruned search recorded: the typed record both wings share.

A pruned search is `harness tune` (trials drawn from ``[tune.space]`` by an Optuna sampler) or a
sweep with ``[sweep] prune = true`` (the sweep's own configs, in order). Its driver
(:mod:`harness.pipeline.tune`) writes one :class:`SearchRecord` per model into the metadata of the
run it records (``runs.metadata["tuning"][model]``); the reporting wing (:mod:`harness.report.tuning`)
reads it back from there, so a report needs neither Optuna nor the study's database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: trial states as recorded (Optuna's COMPLETE, PRUNED, FAIL, RUNNING, WAITING in lower case)
STATES = ("complete", "pruned", "fail", "running", "waiting")


@dataclass(frozen=True)
class TrialRecord:
    """One trial: the config it evaluated and how far it got.

    ``value`` is the mean per-example score over the ``n`` search examples it was scored on (what
    the pruner compared); a pruned trial saw fewer than all of them.
    """

    number: int
    state: str
    config: str
    params: dict[str, Any]
    value: float | None
    n: int
    note: str = ""


@dataclass(frozen=True)
class SearchRecord:
    """One model's search: where the study lives, which examples it searched and held out, its trials and finalists."""

    model: str
    #: "tune" (a sampler over [tune.space]) or "sweep" (the sweep's configs, [sweep] prune = true)
    mode: str
    study: str
    #: the Optuna storage URL, the database's path relative to the output folder
    storage: str
    metric: str
    direction: str  # "maximize" | "minimize"
    sampler: str
    pruner: str
    #: example ids the trials are scored on, in the order they are generated (chunk by chunk)
    search: tuple[str, ...]
    #: example ids set aside before the search: the finalists and the baseline are compared on these only
    heldout: tuple[str, ...]
    baseline: str | None
    trials: tuple[TrialRecord, ...] = ()
    #: the best distinct configs of the completed trials, best first (confirmed on the held-out examples)
    finalists: tuple[str, ...] = ()
    #: the space searched (name -> its description), empty for a sweep
    space: dict[str, Any] = field(default_factory=dict)

    @property
    def generations(self) -> int:
        """Generations the trials asked for on the search examples (cached ones included): the search's cost."""
        return sum(t.n for t in self.trials)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["search"], d["heldout"], d["finalists"] = list(self.search), list(self.heldout), list(self.finalists)
        d["trials"] = [asdict(t) for t in self.trials]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> SearchRecord:
        trials = tuple(TrialRecord(**t) for t in d.get("trials") or [])
        return SearchRecord(
            model=d["model"], mode=d["mode"], study=d["study"], storage=d["storage"], metric=d["metric"], direction=d["direction"],
            sampler=d["sampler"], pruner=d["pruner"], search=tuple(d["search"]), heldout=tuple(d["heldout"]), baseline=d.get("baseline"),
            trials=trials, finalists=tuple(d.get("finalists") or ()), space=dict(d.get("space") or {}),
        )


__all__ = ["TrialRecord", "SearchRecord", "STATES"]

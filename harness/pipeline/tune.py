"""A pruned search for the decoding settings worth shipping: `harness tune`, and sweeps with ``[sweep] prune = true``.

Optuna does the search (samplers, ``WilcoxonPruner``, the study's storage); the harness brings the
evaluation. For each model:

1. **Held-out split.** Before anything runs, the test split is divided once, by a seeded hash of each
   example's id (:func:`holdout_split`): ``[tune] holdout`` of it is set aside; the rest, in hash order,
   are the *search* examples every trial is scored on, in that order.
2. **Trials.** A trial is a decoding config: a sampler's draw from ``[tune.space]`` over the sweep's
   defaults (mode ``tune``), or the next config of the sweep (mode ``sweep``). Its config is built by the
   decoder plugin, so its name and cache keys equal those of a sweep config with the same parameters, and
   it is evaluated like a sweep cell — same store, same keys, the same seeded per-example sampling — so two
   trials are compared on the same examples with the same noise, and any generation made before is reused.
   It is generated and scored ``chunk`` examples at a time; after each chunk every new per-example score is
   reported to Optuna (``trial.report(score, step=position)``) and ``trial.should_prune()`` asks the pruner
   (``WilcoxonPruner``: a paired signed-rank test against the best trial so far) whether to stop it.
   A completed trial's value is the mean of its per-example scores (what the pruner compares).
3. **Finalists.** The best ``finalists`` distinct configs of the completed trials and the baseline config
   are then evaluated on the whole test split (search + held-out); the comparison itself — the report's
   paired test and Holm correction on the held-out examples only — is the reporting wing's
   (:mod:`harness.report.tuning`), from what this module recorded (:class:`harness.tuning.SearchRecord`).

The study lives in the output folder (``tune.db``, Optuna's SQLite storage), named after everything that
defines the search (:func:`study_name`): running again continues it; several processes may work on it at
once (each asks for the next trial under a short file lock, so the study never runs more than ``trials``).
A trial whose process was killed is found on the next start (its owner's pid is gone), marked failed and
its parameters queued again, so it is redone from the generations already stored. Ctrl-C or SIGTERM does
the same at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..api import stable_hash
from ..errors import MissingDependency, UserError
from ..locks import file_lock
from ..registry import Experiment, SearchParam, SweepConfig, TuneSpec
from ..tuning import SearchRecord, TrialRecord

#: the study's database, in the output folder
STUDY_DB = "tune.db"
MODES = ("tune", "sweep")


def optuna_module() -> Any:
    """Optuna, imported when a search runs (with the extra to install when it is missing)."""
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependency("optuna", "tune", purpose="harness tune and [sweep] prune") from exc
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # WilcoxonPruner is marked experimental; its other warnings (steps missing in the best trial: a missing score) are expected here
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="WilcoxonPruner finds steps", module="optuna")
    return optuna


def storage_url(output_dir: Path) -> str:
    return f"sqlite:///{Path(output_dir) / STUDY_DB}"


#: the file lock the processes working on an output folder's studies take to create the database, a study, or ask for a trial
LOCK_NAME = ".tune.lock"


def open_storage(output_dir: Path) -> Any:
    """The study storage of an output folder: SQLite, waiting up to a minute for another worker's write. Created under the
    folder's tune lock: two workers starting together would both try to create its tables."""
    optuna = optuna_module()
    with file_lock(Path(output_dir) / LOCK_NAME):
        return optuna.storages.RDBStorage(storage_url(output_dir), engine_kwargs={"connect_args": {"timeout": 60}})


# --------------------------------------------------------------------------- the held-out split


def holdout_split(test_ids: Sequence[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(search ids in the order trials generate them, held-out ids in split order), by a seeded hash of each id.

    An example's side depends only on its id, the seed and the split's size, so it is the same in every
    process and on every resume.
    """
    n = len(test_ids)
    n_held = max(2, round(share * n))
    if n - n_held < 2:
        raise UserError(
            f"a pruned search needs at least 2 search and 2 held-out examples; the test split has {n} "
            f"(holdout {share}): raise dataset.test_size", key="dataset.test_size",
        )
    order = sorted(test_ids, key=lambda e: hashlib.sha256(f"holdout:{seed}:{e}".encode()).hexdigest())
    held = set(order[:n_held])
    return order[n_held:], [e for e in test_ids if e in held]


# --------------------------------------------------------------------------- what a search needs


class Evaluator(Protocol):
    """Scores a config on examples: a real one generates and scores through the store (:class:`StoreEvaluator`),
    a simulated one computes scores (bench/tune_simulated.py)."""

    def evaluate(self, config: SweepConfig, example_ids: Sequence[str]) -> list[float]:
        """The per-example score of ``config`` on each of ``example_ids`` (NaN: could not be scored), generating what is missing."""
        ...


class TrialFailed(Exception):
    """The config could not be evaluated (an engine or metric error stored with its cell): the trial fails, the search goes on."""


@dataclass(frozen=True)
class Plan:
    """One model's search, fixed before it starts."""

    model: str
    mode: str
    spec: TuneSpec
    direction: str  # "maximize" | "minimize"
    search: tuple[str, ...]
    heldout: tuple[str, ...]
    baseline: SweepConfig | None
    #: the configs a sweep searches, in order (mode "sweep"); the space's draws otherwise
    candidates: tuple[SweepConfig, ...] = ()
    #: the trials the study may hold (a grid or a sweep: at most its size)
    budget: int = 0

    @property
    def study(self) -> str:
        return study_name(self)


def study_name(plan: Plan) -> str:
    """The study's name: the model and a hash of everything that defines the search, so a changed space, metric,
    split or sweep starts a study of its own (in the same database) while generations stay shared."""
    ident = {
        "mode": plan.mode, "metric": plan.spec.metric, "direction": plan.direction, "sampler": plan.spec.sampler if plan.mode == "tune" else None,
        "pruner": plan.spec.pruner, "p_threshold": plan.spec.p_threshold, "min_examples": plan.spec.min_examples, "chunk": plan.spec.chunk,
        "seed": plan.spec.seed, "space": [dataclasses.asdict(p) for p in plan.spec.space] if plan.mode == "tune" else None,
        "search": list(plan.search), "heldout": list(plan.heldout), "baseline": plan.baseline.params if plan.baseline else None,
        "candidates": [c.name for c in plan.candidates], "decoding": plan.baseline.decoding.max_new_tokens if plan.baseline else None,
    }
    return f"{plan.model}-{plan.mode}-{stable_hash(ident)[:10]}"


def make_plan(exp: Experiment, model: str, mode: str, test_ids: Sequence[str], higher_is_better: bool, configs: Sequence[SweepConfig] | None = None) -> Plan:
    """The search of ``model``: its held-out split of ``test_ids``, baseline and budget."""
    spec = exp.tune
    assert spec is not None
    if mode == "tune" and not spec.space:
        raise UserError("is empty: name the decoder parameters to search, e.g. temperature = [0.0, 1.5]", file=exp.path, key="tune.space")
    search, heldout = holdout_split(test_ids, spec.holdout, spec.seed)
    base_name = exp.baseline()
    baseline = exp.config(base_name) if base_name else None
    candidates: tuple[SweepConfig, ...] = ()
    budget = spec.trials
    if mode == "sweep":
        chosen = list(configs if configs is not None else exp.configs)
        if baseline is not None and baseline in chosen:  # the baseline first: the pruner's first reference
            chosen.remove(baseline)
            chosen.insert(0, baseline)
        candidates = tuple(chosen)
        budget = len(candidates)
    elif spec.sampler == "grid":
        sizes = [p.grid() for p in spec.space]
        if any(g is None for g in sizes):
            bad = next(p.name for p in spec.space if p.grid() is None)
            raise UserError("the grid sampler needs a finite axis: a log-scale range has none (give a step, or choices)", file=exp.path, key=f"tune.space.{bad}")
        budget = min(budget, math.prod(len(g) for g in sizes if g is not None))
    return Plan(model, mode, spec, "maximize" if higher_is_better else "minimize", tuple(search), tuple(heldout), baseline, candidates, budget)


def trial_config(exp: Experiment, decoder: Any, params: dict[str, Any]) -> SweepConfig:
    """The config a trial evaluates: ``params`` over the sweep's defaults, named and resolved by the decoder plugin
    exactly as a sweep config with the same parameters (so it shares its name and its cache keys)."""
    full = {**exp.sweep_defaults, **params}
    return SweepConfig(decoder.config_name(full), full, decoder.resolve(full, exp.max_new_tokens))


def _suggest(trial: Any, p: SearchParam) -> Any:
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), step=1 if p.log else int(p.step or 1), log=p.log)
    value = trial.suggest_float(p.name, float(p.low), float(p.high), step=None if p.log else p.step, log=p.log)
    # keep the config's name short and its value exact: 0.7300000000000001 -> 0.73 (4 significant digits on a log scale)
    return float(f"{value:.4g}") if p.log else round(value, 10)


def make_sampler(spec: TuneSpec, worker: int = 0) -> Any:
    """Optuna's sampler for ``spec``, seeded with ``[tune] seed`` + ``worker`` (how many processes worked on the study before
    this one: a study made by one process is reproducible; processes side by side do not draw the same parameters)."""
    optuna = optuna_module()
    s = spec.sampler
    seed = spec.seed + worker
    if s == "tpe":
        # constant liar: trials running in other processes count as bad guesses, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if s == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if s == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if s == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s == "grid":
        return optuna.samplers.GridSampler({p.name: p.grid() for p in spec.space}, seed=seed)
    raise ValueError(s)


def make_pruner(spec: TuneSpec) -> Any:
    optuna = optuna_module()
    if spec.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=spec.p_threshold, n_startup_steps=spec.min_examples)
    return optuna.pruners.NopPruner()


# --------------------------------------------------------------------------- the search


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def process_gone(owner: dict[str, Any] | None) -> bool:
    """Whether the process that ran a trial (or a run) is known to be gone: same host, pid no longer alive."""
    if not owner or owner.get("host") != socket.gethostname():
        return False
    pid = int(owner.get("pid") or 0)
    if pid == os.getpid():
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        return state in ("Z", "X")
    except OSError:
        return True


class Search:
    """Runs one model's search on its study: trials until the study holds its budget, then the finalists.

    ``evaluator`` scores configs; ``decoder`` (the decoder plugin) builds them; ``refuses(decoding)`` says why
    the engine cannot decode one (or None); ``say`` prints one line per trial.
    """

    def __init__(
        self,
        exp: Experiment,
        plan: Plan,
        evaluator: Evaluator,
        decoder: Any,
        *,
        storage: Any,
        lock_path: Path,
        refuses: Callable[[Any], str | None] = lambda d: None,
        say: Callable[[str], None] = lambda line: None,
        on_trial: Callable[[], None] = lambda: None,
    ):
        self.exp = exp
        self.plan = plan
        self.evaluator = evaluator
        self.decoder = decoder
        self.storage = storage
        self.lock_path = lock_path
        self.refuses = refuses
        self.say = say
        self.on_trial = on_trial
        optuna = optuna_module()
        self.optuna = optuna
        with self.lock():
            self.study = optuna.create_study(storage=storage, study_name=plan.study, direction=plan.direction, load_if_exists=True, pruner=make_pruner(plan.spec))
            # the how-many-th process to work on the study: it seeds the sampler (alone: [tune] seed; side by side: other draws)
            self.worker = int(self.study.user_attrs.get("processes", 0))
            self.study.set_user_attr("processes", self.worker + 1)
        self.study.sampler = make_sampler(plan.spec, self.worker) if plan.mode == "tune" else optuna.samplers.RandomSampler(seed=plan.spec.seed)

    # -- the study

    def lock(self) -> Any:
        return file_lock(self.lock_path)

    def _states(self) -> Any:
        return self.optuna.trial.TrialState

    def recover(self) -> list[int]:
        """Trials left running by a process that is gone: failed, and (tune) their parameters queued again. Returns their numbers."""
        TS = self._states()
        found = []
        with self.lock():
            for t in self.study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
                # no owner: its process died between asking and naming itself, both done under this lock
                if "owner" not in t.user_attrs or process_gone(t.user_attrs.get("owner")):
                    self.study.tell(t.number, state=TS.FAIL)
                    self._redo(t.params)
                    found.append(t.number)
        return found

    def _redo(self, params: dict[str, Any]) -> None:
        """Queue an interrupted trial's parameters again. A sweep picks its next config itself, and the grid sampler
        hands out a grid point whose trial failed again by itself."""
        if self.plan.mode == "tune" and self.plan.spec.sampler != "grid" and params:
            self.study.enqueue_trial(dict(params))

    def _counted(self, t: Any) -> bool:
        """Trials that use up the budget: finished or running; a failure counts unless it was an interruption."""
        TS = self._states()
        return t.state in (TS.COMPLETE, TS.PRUNED, TS.RUNNING) or (t.state == TS.FAIL and "failed" in t.user_attrs)

    def _next(self) -> tuple[Any, SweepConfig | None, str] | None:
        """Ask the study for the next trial (under the lock): the trial, its config (None: it cannot be built) and why not."""
        trials = self.study.get_trials(deepcopy=False)
        if sum(1 for t in trials if self._counted(t)) >= self.plan.budget:
            return None
        if self.plan.mode == "sweep":
            taken = {t.user_attrs.get("config") for t in trials if self._counted(t)}
            todo = [c for c in self.plan.candidates if c.name not in taken]
            if not todo:
                return None
            trial = self.study.ask()
            config = todo[0]
            trial.set_user_attr("params", config.params)
        else:
            if not trials and self.plan.spec.sampler != "grid" and self.plan.baseline is not None:
                fixed = {p.name: self.plan.baseline.params[p.name] for p in self.plan.spec.space}
                if all(p.contains(fixed[p.name]) for p in self.plan.spec.space):
                    self.study.enqueue_trial(fixed)  # the defaults first: a known reference for the pruner
            trial = self.study.ask()
            params = {p.name: _suggest(trial, p) for p in self.plan.spec.space}
            trial.set_user_attr("params", params)
            try:
                config = trial_config(self.exp, self.decoder, params)
            except UserError as exc:
                trial.set_user_attr("owner", _owner())
                return trial, None, exc.message
        trial.set_user_attr("owner", _owner())
        trial.set_user_attr("config", config.name)
        return trial, config, ""

    def run(self) -> SearchRecord:
        """Trials until the study holds its budget; then, once no trial runs anywhere, the finalists on the whole test split."""
        recovered = self.recover()
        if recovered:
            self.say(f"trial{'s' if len(recovered) > 1 else ''} {', '.join(map(str, recovered))} had stopped with {'their' if len(recovered) > 1 else 'its'} process: redone")
        while True:
            with self.lock():
                nxt = self._next()
            if nxt is None:
                break
            trial, config, why = nxt
            if config is None:
                self._fail(trial, f"cannot build the config: {why}")
                continue
            self.trial(trial, config)
            self.on_trial()
        return self.record()

    def _fail(self, trial: Any, why: str) -> None:
        trial.set_user_attr("failed", why)
        self.study.tell(trial, state=self._states().FAIL)
        self.say(f"trial {trial.number} failed: {why}")

    def trial(self, trial: Any, config: SweepConfig) -> None:
        """Evaluate one trial chunk by chunk, reporting each example's score; prune, complete or fail it."""
        TS = self._states()
        why = self.refuses(config.decoding)
        if why:
            self._fail(trial, f"the engine cannot decode {config.name}: {why}")
            return
        search = self.plan.search
        chunk = self.plan.spec.chunk
        values: list[float] = []
        try:
            end = 0
            while end < len(search):
                end = min(end + chunk, len(search))
                try:
                    scores = self.evaluator.evaluate(config, search[:end])
                except TrialFailed as exc:
                    self._fail(trial, str(exc))
                    return
                for i in range(len(values), end):
                    values.append(float(scores[i]))
                    if math.isfinite(values[i]):
                        trial.report(values[i], step=i)
                trial.set_user_attr("n", end)
                if end < len(search) and trial.should_prune():
                    self.study.tell(trial, state=TS.PRUNED)
                    self.say(f"trial {trial.number} {config.name}: pruned after {end} of {len(search)} examples (mean {_mean(values):.4g})")
                    return
        except BaseException:
            # Ctrl-C, SIGTERM, a bad input: the trial is redone by the next run (its generations are stored)
            with self.lock():
                self.study.tell(trial, state=TS.FAIL)
                self._redo(trial.params)
            raise
        value = _mean(values)
        if math.isnan(value):
            self._fail(trial, "no example could be scored")
            return
        self.study.tell(trial, value)
        best = self.study.best_trial
        self.say(f"trial {trial.number} {config.name}: {value:.4g} on {len(values)} examples (best: trial {best.number}, {best.value:.4g})")

    # -- what it found

    def running_elsewhere(self) -> int:
        """Trials that other live processes are running now."""
        TS = self._states()
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=(TS.RUNNING,)) if not process_gone(t.user_attrs.get("owner")))

    def finalists(self) -> list[str]:
        """The best distinct configs of the completed trials, best first (the baseline left out: it is what they are compared with)."""
        TS = self._states()
        done = [t for t in self.study.get_trials(deepcopy=False, states=(TS.COMPLETE,)) if t.value is not None]
        done.sort(key=lambda t: (-t.value if self.plan.direction == "maximize" else t.value, t.number))
        out: list[str] = []
        base = self.plan.baseline.name if self.plan.baseline else None
        for t in done:
            name = t.user_attrs.get("config")
            if name and name != base and name not in out:
                out.append(name)
            if len(out) >= self.plan.spec.finalists:
                break
        return out

    def configs(self) -> dict[str, SweepConfig]:
        """Every config the study's trials evaluated, by name (rebuilt from their recorded parameters)."""
        out: dict[str, SweepConfig] = {}
        for t in self.study.get_trials(deepcopy=False):
            name, params = t.user_attrs.get("config"), t.user_attrs.get("params")
            if name and params is not None and name not in out:
                if self.plan.mode == "sweep":
                    out[name] = next(c for c in self.plan.candidates if c.name == name)
                else:
                    out[name] = trial_config(self.exp, self.decoder, params)
        return out

    def record(self, finalists: Sequence[str] = ()) -> SearchRecord:
        TS = self._states()
        names = {TS.COMPLETE: "complete", TS.PRUNED: "pruned", TS.FAIL: "fail", TS.RUNNING: "running", TS.WAITING: "waiting"}
        trials = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state == TS.WAITING:
                continue
            inter = [v for v in t.intermediate_values.values() if v is not None and math.isfinite(v)]
            value = t.value if t.state == TS.COMPLETE else (_mean(inter) if inter else None)
            note = t.user_attrs.get("failed") or ("interrupted: redone by a later trial" if t.state == TS.FAIL else "")
            trials.append(TrialRecord(t.number, names.get(t.state, str(t.state)), t.user_attrs.get("config") or "", dict(t.user_attrs.get("params") or {}),
                                      None if value is None or not math.isfinite(value) else float(value), int(t.user_attrs.get("n") or 0), note))
        space = {p.name: {k: v for k, v in dataclasses.asdict(p).items() if k != "name" and v not in (None, (), False)} for p in self.plan.spec.space} if self.plan.mode == "tune" else {}
        return SearchRecord(
            model=self.plan.model, mode=self.plan.mode, study=self.plan.study, storage=STUDY_DB, metric=self.plan.spec.metric,
            direction=self.plan.direction, sampler=self.plan.spec.sampler if self.plan.mode == "tune" else "sweep", pruner=self.plan.spec.pruner,
            search=self.plan.search, heldout=self.plan.heldout, baseline=self.plan.baseline.name if self.plan.baseline else None,
            trials=tuple(trials), finalists=tuple(finalists), space=space,
        )


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


__all__ = [
    "STUDY_DB", "LOCK_NAME", "MODES", "Plan", "Search", "Evaluator", "TrialFailed", "holdout_split", "make_plan", "trial_config", "make_sampler",
    "make_pruner", "open_storage", "storage_url", "optuna_module", "process_gone", "study_name",
]

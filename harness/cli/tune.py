"""`harness tune`: search the decoding space with Optuna, stop clearly worse trials early, confirm the finalists
on held-out examples; also the pruned sweep of `harness run` with ``[sweep] prune = true``.

The search itself is :mod:`harness.pipeline.tune` (the driver) over :mod:`harness.pipeline.evaluate` (a
config evaluated like a sweep cell); the confirmation table is :mod:`harness.report.tuning`, from what
the search recorded.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from ..errors import MissingDependency, UserError
from .common import echo, err, handle_errors, load, registry_option


@click.command("tune")
@click.option("--model", "models", multiple=True, help="only this model (repeatable) [default: every model, a study each]")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="trials in each study [default: [tune] trials]")
@click.option("--dashboard", is_flag=True, help="serve the studies in optuna-dashboard on 127.0.0.1 instead of searching (Ctrl-C stops it)")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="the dashboard's port")
@registry_option
@handle_errors
def tune_cmd(models, trials, dashboard, port, registry: str) -> None:
    """Search [tune.space] for the decoding settings worth shipping (resumes; several processes may share a study)."""
    exp, plugins = load(registry)
    if dashboard:
        serve_dashboard(exp, port)
        return
    if exp.tune is None or not exp.tune.space:
        raise UserError(
            "is empty: name the decoder parameters to search, e.g. [tune.space] temperature = [0.0, 1.5] "
            "(or set [sweep] prune = true to prune the sweep's own configs with `harness run --all`)",
            file=exp.path, key="tune.space",
        )
    if trials is not None:
        exp = dataclasses.replace(exp, tune=dataclasses.replace(exp.tune, trials=trials))
    store, records = search(exp, plugins, list(models) or None, None, "tune", " ".join(["harness", *sys.argv[1:]]))
    echo(confirmations(store, plugins, records, exp.seed))


def serve_dashboard(exp: Any, port: int) -> None:
    """optuna-dashboard on the output folder's study database, on 127.0.0.1 only."""
    from ..pipeline.tune import STUDY_DB, storage_url

    if not (exp.output_dir / STUDY_DB).exists():
        raise UserError(f"no study yet ({exp.output_dir / STUDY_DB}); run `harness tune` first", file=exp.path)
    try:
        from optuna_dashboard import wsgi
    except ImportError as exc:
        raise MissingDependency("optuna-dashboard", "tune", purpose="harness tune --dashboard") from exc
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the dashboard polls; keep the terminal readable
            return None

    app = wsgi(storage_url(exp.output_dir))
    try:
        server = make_server("127.0.0.1", port, app, handler_class=Quiet)
    except OSError as exc:
        raise UserError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port", key="--port") from None
    err.print(f"optuna-dashboard: http://127.0.0.1:{port}/dashboard (the studies in {exp.output_dir / STUDY_DB}; Ctrl-C stops it)", soft_wrap=True)
    with server:
        server.serve_forever()


def check_space(exp: Any, plugins: Any) -> None:
    """Refuse, before anything runs, a space whose values the engine cannot decode: each parameter at its bounds
    (or each of its choices), the others at the sweep's defaults."""
    from ..pipeline.tune import trial_config

    assert exp.tune is not None
    engine = plugins.create("engine", exp.engine, exp.engine_settings)
    decoder = plugins.create("decoder", exp.decoder, {})
    for p in exp.tune.space:
        values = list(p.choices) if p.kind == "categorical" else [p.low, p.high]
        for v in values:
            v = int(v) if p.kind == "int" else v
            try:
                config = trial_config(exp, decoder, {p.name: v})
            except UserError:
                continue  # a combination the decoder refuses is a failed trial, not a bad space
            why = engine.unsupported(config.decoding)
            if why:
                raise UserError(f"the engine '{exp.engine}' cannot decode {p.name} = {v!r}: {why}", file=exp.path, key=f"tune.space.{p.name}")


def search(exp: Any, plugins: Any, models: Sequence[str] | None, configs: Sequence[str] | None, mode: str, command: str):
    """Run a search per model (mode "tune": the space; "sweep": the sweep's configs) and record it; returns the store and the records."""
    from ..locks import run_lock
    from ..pipeline import tune as tp
    from ..pipeline.evaluate import StoreEvaluator
    from ..pipeline.pool import PooledPlugins
    from ..pipeline.procs import stop_descendants
    from ..pipeline.progress import RichProgress
    from ..pipeline.runner import Runner, Selection, compute_split, preflight, run_metadata
    from ..store import Store

    tp.optuna_module()  # missing: the install hint before anything runs
    assert exp.tune is not None
    metric_name = exp.tune.metric
    selection = Selection(list(models) if models else None, list(configs) if configs else None, [metric_name])
    selection.validate(exp)
    preflight(exp, plugins, selection)
    if mode == "tune":
        check_space(exp, plugins)
    if Store.open_existing(exp.output_dir) is None:
        _, test, _ = compute_split(exp, plugins)  # bad data or sizes fail here, before the folder exists
        tp.holdout_split([e.id for e in test], exp.tune.holdout, exp.tune.seed)
    executor = plugins.create("executor", exp.executor, exp.executor_settings)
    pooled = PooledPlugins.wrap(plugins)
    store = Store(exp.output_dir)
    started = time.perf_counter()
    records: dict[str, Any] = {}
    with run_lock(exp.output_dir, command, shared=True):
        stale = [r["run_id"] for r in store.runs() if r["status"] == "running" and tp.process_gone({"pid": r["pid"], "host": r["host"]})]
        if stale:
            store.mark_stopped(stale)
            err.print(f"run{'s' if len(stale) > 1 else ''} {', '.join(map(str, stale))} had stopped without finishing: marked interrupted", soft_wrap=True)
        snapshot = exp.snapshot(plugins)
        meta = run_metadata(exp, command) | {"experiment_snapshot": snapshot, "tuning": {}}
        run_id = store.start_run(command, meta)
        progress = RichProgress(err, log_path=exp.output_dir / "harness.log")
        status = "interrupted"
        searched: dict[str, Any] = {}

        def record(model: str, s: Any, finalists: Sequence[str] = ()) -> None:
            for name, config in s.configs().items():
                searched[name] = config
            names = {c["name"] for c in snapshot["configs"]}
            snapshot["configs"] += [{"name": c.name, "params": c.params, "decoding": c.decoding.to_dict()} for c in searched.values() if c.name not in names]
            records[model] = s.record(finalists)
            meta["tuning"][model] = records[model].to_dict()
            store.update_run(run_id, meta)

        try:
            with progress:
                probe = Runner(exp, pooled, store, progress, selection, executor=executor, run_id=run_id)
                _, test = probe.split()
                higher = probe.metric(metric_name).higher_is_better
                decoder = plugins.create("decoder", exp.decoder, {})
                engine = plugins.create("engine", exp.engine, exp.engine_settings)
                storage = tp.open_storage(exp.output_dir)
                chosen = [c for c in exp.configs if not configs or c.name in configs]
                for spec in probe.models():
                    plan = tp.make_plan(exp, spec.name, mode, [e.id for e in test], higher, chosen if mode == "sweep" else None)
                    progress.line(console=True, text=f"{spec.name}: {'tune' if mode == 'tune' else 'pruned sweep'} study {plan.study} — {plan.budget} trials of "
                                  f"{len(plan.search)} search examples in chunks of {exp.tune.chunk}; {len(plan.heldout)} held out")
                    evaluator = StoreEvaluator(exp, pooled, store, executor, progress, run_id, spec.name, metric_name)
                    s = tp.Search(exp, plan, evaluator, decoder, storage=storage, lock_path=exp.output_dir / tp.LOCK_NAME,
                                  refuses=engine.unsupported, say=lambda line: progress.line(line, console=True))
                    s.on_trial = lambda s=s, m=spec.name: record(m, s)
                    s.run()
                    elsewhere = s.running_elsewhere()
                    if elsewhere:
                        progress.line(console=True, text=f"{spec.name}: {elsewhere} trial{'s' if elsewhere > 1 else ''} still running in other processes; the last to finish confirms the finalists")
                        record(spec.name, s)
                        continue
                    finalists = s.finalists()
                    every = {**{c.name: c for c in exp.configs}, **s.configs()}
                    for name in [plan.baseline.name if plan.baseline else None, *finalists]:
                        if name:
                            progress.line(console=True, text=f"{spec.name}: {name} on the whole test split (held-out confirmation)")
                            try:
                                evaluator.evaluate(every[name], None)
                            except tp.TrialFailed as exc:
                                progress.line(console=True, text=f"{spec.name}: {name} failed on the held-out examples: {exc}")
                    record(spec.name, s, finalists)
                    # the other metrics, for the configs now evaluated on the whole test split
                    others = [m for m in exp.metrics if m != metric_name]
                    confirmed = [n for n in [plan.baseline.name if plan.baseline else None, *finalists] if n]
                    if others and confirmed:
                        full = evaluator.experiment_with([every[n] for n in confirmed])
                        Runner(full, pooled, store, progress, Selection([spec.name], confirmed, others), executor=executor, run_id=run_id).run(("score",))
            status = "ok"
        finally:
            try:
                executor.close()
                pooled.close()
            finally:
                if status == "interrupted":
                    stop_descendants()
                store.finish_run(run_id, status, meta | {"seconds": round(time.perf_counter() - started, 2)})
    return store, records


def pruned_sweep(exp: Any, plugins: Any, selection: Any, command: str) -> None:
    """`harness run` with ``[sweep] prune = true``: the sweep's configs as a pruned search, then the report and the confirmation."""
    from ..report import render
    from ..report.results import Results

    store, records = search(exp, plugins, selection.models, selection.configs, "sweep", command)
    results = Results.load(store, models=selection.models, configs=selection.configs, metrics=selection.metrics)
    echo(render.render_report(results, plugins, plugins.default("reporter"), color=sys.stdout.isatty()))
    echo(confirmations(store, plugins, records, exp.seed))


def confirmations(store: Any, plugins: Any, records: dict[str, Any], seed: int) -> str:
    """The held-out confirmation of every search just recorded (read back from the store, as a report would)."""
    from ..report import tuning as rt
    from ..report.results import Results

    if not records:
        return ""
    results = Results.load(store, models=list(records))
    parts = []
    for model, record in records.items():  # what this process recorded (another may have confirmed the same study)
        if not record.finalists and not any(t.state == "complete" for t in record.trials):
            parts.append(f"{model}: no completed trial yet\n")
            continue
        if not record.finalists:
            parts.append(f"{model}: trials still running in other processes; run `harness tune` again when they are done to confirm\n")
            continue
        parts.append(rt.confirmation_text(rt.confirm(results, plugins, record, seed=seed)))
    return "\n".join(parts)


__all__ = ["tune_cmd", "search", "pruned_sweep", "confirmations", "check_space", "serve_dashboard"]

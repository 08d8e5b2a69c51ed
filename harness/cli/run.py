"""`harness run` and the single stages: split, train, generate, score."""

from __future__ import annotations

import sys
import time

import click
from rich.markup import escape

from ..errors import UserError
from ..store_health import DiskFull, probe_folder
from .common import err, handle_errors, load, registry_option, selection_options


@click.command("run")
@click.option("--all", "run_all", is_flag=True, help="every model × decoding config × metric")
@click.option("--yes", "yes", is_flag=True, help="run even when the experiment is larger than the confirmation limit")
@selection_options
@registry_option
@handle_errors
def run_cmd(run_all: bool, yes: bool, models, configs, metrics, registry: str) -> None:
    """Split, fine-tune, generate, score and report."""
    if not run_all and not (models or configs or metrics):
        raise UserError("say what to run: --all, or select with --model/--config/--metric")
    run_stages(registry, ("split", "train", "generate", "score"), models, configs, metrics, report=True, confirmed=yes)


def stage_command(stage: str, help_text: str) -> click.Command:
    @click.command(stage, help=help_text)
    @selection_options
    @registry_option
    @handle_errors
    def cmd(models, configs, metrics, registry: str) -> None:
        run_stages(registry, (stage,), models, configs, metrics, report=False)

    return cmd


STAGE_COMMANDS = [
    stage_command("split", "Load the dataset and save the deterministic train/test split."),
    stage_command("train", "Fine-tune the models that ask for it (reusing unchanged adapters)."),
    stage_command("generate", "Generate answers for every selected model × decoding config."),
    stage_command("score", "Score stored generations with every selected metric."),
]


def run_stages(registry: str, stages: tuple[str, ...], models, configs, metrics, *, report: bool, confirmed: bool = True) -> None:
    from ..pipeline.runner import CONFIRM_ABOVE, Selection, compute_split, plan_size, preflight, space_needed
    from ..store import Store

    exp, plugins = load(registry)
    selection = Selection(list(models) or None, list(configs) or None, list(metrics) or None)
    selection.validate(exp)
    preflight(exp, plugins, selection)
    if Store.open_existing(exp.output_dir) is None:
        _, test, _ = compute_split(exp, plugins)  # bad data or sizes fail here, before the experiment folder exists
        size = plan_size(exp, len(test), selection)
    else:
        size = plan_size(exp, exp.dataset.test_size, selection)
    if "generate" in stages and not confirmed and size.generations > CONFIRM_ABOVE:
        raise UserError(
            f"this run asks for {size.describe()}, more than {CONFIRM_ABOVE:,} generations; "
            "check the sweep (`harness check`), select less (--model/--config), or pass --yes to run it",
            file=exp.path,
        )
    why = probe_folder(exp.output_dir)  # as `harness check` probes it: the same message from both
    if why:
        raise UserError(f"cannot create the results store in {exp.output_dir}: {why}", file=exp.path, key="experiment.output_dir")
    command = " ".join(["harness", *sys.argv[1:]])
    if exp.prune and report:  # [sweep] prune = true: the sweep as a pruned search
        from .tune import pruned_sweep

        pruned_sweep(exp, plugins, selection, command)
        return
    executor = plugins.create("executor", exp.executor, exp.executor_settings)
    store = Store(exp.output_dir)
    try:
        _run(exp, plugins, store, executor, selection, stages, size, report, command)
    except DiskFull as exc:  # one line: the folder, what is free, about what the rest of the run needs
        raise exc.with_needed(space_needed(store, size)) from None
    finally:
        store.release_reserve()


def _run(exp, plugins, store, executor, selection, stages, size, report: bool, command: str) -> None:
    from ..locks import run_lock
    from ..pipeline.procs import stop_descendants
    from ..pipeline.progress import RichProgress
    from ..pipeline.runner import Runner, run_metadata

    started = time.perf_counter()
    with run_lock(exp.output_dir, command):
        store.keep_reserve()  # given back if the disk fills, so the run can still be marked interrupted
        stale = store.mark_interrupted()
        if stale:
            err.print(f"run{'s' if len(stale) > 1 else ''} {', '.join(map(str, stale))} had stopped without finishing: marked interrupted", soft_wrap=True)
        meta = run_metadata(exp, command) | {"experiment_snapshot": exp.snapshot(plugins)}
        run_id = store.start_run(command, meta)
        err.print(f"[bold]{escape(exp.name)}[/] (run {run_id}): {escape(size.describe())}", markup=True, soft_wrap=True)
        progress = RichProgress(err, log_path=exp.output_dir / "harness.log")
        runner = Runner(exp, plugins, store, progress, selection, executor=executor, run_id=run_id)
        status = "interrupted"
        try:
            with progress:
                progress.line(f"run {run_id}: {command} — {size.describe()}")
                runner.run(stages)
            status = "failed" if runner.stats.failed_cells else "ok"
        finally:
            try:
                executor.close()
            finally:
                if status == "interrupted":
                    stop_descendants()
                meta = meta | {"stats": runner.stats.__dict__, "seconds": round(time.perf_counter() - started, 2)}
                try:
                    store.finish_run(run_id, status, meta)
                except DiskFull:
                    if status != "interrupted":
                        raise
                    # even the reserve did not make room: the next run marks this one interrupted
    s = runner.stats
    err.print(
        f"done in {time.perf_counter() - started:.1f}s: trained {s.trained} (reused {s.reused_adapters}), "
        f"generated {s.generated} (cached {s.cached_generations}), scored {s.scored} (cached {s.cached_scores})",
        soft_wrap=True,
    )
    if report:
        from ..report import render
        from ..report.results import Results

        results = Results.load(store, models=selection.models, configs=selection.configs, metrics=selection.metrics)
        text = render.render_report(results, plugins, plugins.default("reporter"), color=sys.stdout.isatty())
        click.echo(text, nl=False)
    if s.failed_cells:
        err.print(f"[red]{len(s.failed_cells)} cell(s) failed[/]: " + escape(", ".join(s.failed_cells[:8])), markup=True)
        sys.exit(1)

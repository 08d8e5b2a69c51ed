"""What every command shares: error handling and exit codes, options, loading the experiment and the store."""

from __future__ import annotations

import functools
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from ..errors import UserError
from ..files import write_atomically
from ..plugins import Plugins, build_plugins

err = Console(stderr=True, highlight=False)
DEFAULT_REGISTRY = "registry.toml"


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, a batch scheduler or a preempted job sends), handled like Ctrl-C."""


def handle_errors(fn: Callable) -> Callable:
    """Exit 2 with one message for bad input, 130 on Ctrl-C, 143 on SIGTERM (everything finished so far is kept)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except UserError as exc:
            # escape: messages quote keys like [[models]]; soft_wrap: keep paths whole when piped
            err.print(f"[bold red]error:[/] {escape(exc.render())}", markup=True, soft_wrap=True)
            sys.exit(exc.exit_code)
        except sqlite3.DatabaseError as exc:  # met while reading rows: a damaged page or a full disk, said like any other
            from ..store_health import explain

            found = explain(exc)
            if found is None:
                raise
            err.print(f"[bold red]error:[/] {escape(found.render())}", markup=True, soft_wrap=True)
            sys.exit(found.exit_code)
        except KeyboardInterrupt as exc:
            what = "stopped (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            err.print(f"\n[yellow]{what}[/]: everything finished so far is saved; run the same command again to continue.", markup=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)

    return wrapper


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


registry_option = click.option(
    "-r", "--registry", "registry", default=DEFAULT_REGISTRY, show_default=True, type=click.Path(dir_okay=False), help="experiment file"
)
store_option = click.option(
    "--store", "store_dir", default=None, type=click.Path(file_okay=False), help="read this output folder (a copied or merged run) instead of the experiment file's"
)


def selection_options(fn: Callable) -> Callable:
    fn = click.option("--metric", "metrics", multiple=True, help="only this metric (repeatable)")(fn)
    fn = click.option("--config", "configs", multiple=True, help="only this decoding config (repeatable)")(fn)
    fn = click.option("--model", "models", multiple=True, help="only this model (repeatable)")(fn)
    return fn


def plugins() -> Plugins:
    return build_plugins()


def load(path: str):
    """The validated experiment and the plugins."""
    from ..registry import load_experiment

    found = plugins()
    return load_experiment(path, found), found


def open_store(registry: str, store_dir: str | None, *, readonly: bool = False):
    """The store a command works on: ``--store DIR``, or the experiment file's output folder (the file validated).

    ``readonly``: the command only reads (the file is never written, not even to migrate an older store)."""
    from ..store import Store

    if store_dir is not None:
        store = Store.open_existing(Path(store_dir), readonly=readonly)
        if store is None:
            raise UserError("no results store here (harness.sqlite); pass the output folder of a run", file=store_dir, key="--store")
        return store, plugins(), None
    exp, found = load(registry)
    store = Store.open_existing(exp.output_dir, readonly=readonly)
    if store is None:
        raise UserError(f"no results yet in {exp.output_dir}; run `harness run --all` first", file=exp.path)
    return store, found, exp


def selection(models, configs, metrics):
    return (list(models) or None, list(configs) or None, list(metrics) or None)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: the file is either whole or untouched."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: handle.write(text))
    except OSError as exc:
        raise UserError(f"cannot write here: {exc.strerror or exc}", file=path) from None


def echo(text: str) -> None:
    click.echo(text, nl=False)

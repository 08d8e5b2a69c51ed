"""Experiments and stores in tests: the embedded default at a tiny budget, and a query on a run's store."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from harness.store import STORE_NAME

ROOT = Path(__file__).resolve().parent.parent


def tiny_default(folder: Path, *, vary: str = "temperature = [0.0, 1.0]", extra: str = "") -> Path:
    """The shipped registry.toml at a tiny budget in ``folder``: 3 test examples, the configs of ``vary`` (defaults
    not included), 2 training steps, 6 new tokens; ``extra`` (TOML tables) goes before ``[human]``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "registry.toml").read_text()
    text = text.replace('output_dir = "runs/default"', f'output_dir = "{folder / "out"}"')
    text = re.sub(r"test_size = \d+", "test_size = 3", text)
    text = re.sub(r"train_size = \d+", "train_size = 16", text)
    text = re.sub(r"max_steps = \d+", "max_steps = 2", text)
    text = re.sub(r"batch_size = 4\n", "batch_size = 2\n", text)
    text = re.sub(r"max_new_tokens = \d+", "max_new_tokens = 6", text)
    text = text.replace("include_defaults = true", "include_defaults = false")
    text = re.sub(r"\[sweep.vary\].*?\n\n", f"[sweep.vary]\n{vary}\n\n", text, flags=re.S)
    text = text.replace("[human]", extra + "\n[human]")
    path = folder / "registry.toml"
    path.write_text(text)
    return path


def query(registry: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the store of the experiment ``registry`` (its output folder ``out`` beside it)."""
    con = sqlite3.connect(registry.parent / "out" / STORE_NAME)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()

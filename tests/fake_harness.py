"""`harness` with the test fakes registered, for tests that need a real process (kill -9, SIGTERM, two runs at once).

Usage: python tests/fake_harness.py run --all -r registry.toml
Switches (environment): FAKE_TRAIN_SECONDS, FAKE_BATCH_SECONDS (slow down training / each
batch), FAKE_ENGINE_CHILD=path (the engine starts a child process and writes its pid there).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for entry in [HERE, HERE.parent, *sorted(p for p in (HERE.parent / "plugins").iterdir() if p.is_dir())]:
    sys.path.insert(0, str(entry))

import fakes  # noqa: E402
import harness_datasets.alpaca  # noqa: E402
import harness_datasets.synthetic  # noqa: E402
import harness_decoders.standard  # noqa: E402
import harness_executors.local  # noqa: E402
import harness_ratings.csv_format  # noqa: E402
import harness_reporters.builtin  # noqa: E402

import harness.cli  # noqa: E402
import harness.cli.common  # noqa: E402
from harness.plugins import build_plugins  # noqa: E402

EXTRA = [fakes, harness_decoders.standard, harness_reporters.builtin, harness_ratings.csv_format, harness_executors.local,
         harness_datasets.synthetic, harness_datasets.alpaca]
harness.cli.common.build_plugins = lambda **kwargs: build_plugins(entry_points=False, extra=EXTRA)

if __name__ == "__main__":
    harness.cli.main()

"""A real Label Studio server (one per session) and two annotator accounts; runs in .venv-labelstudio."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    from ls_server import LabelStudioServer

    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"))
    with server:
        print(f"\nlabel-studio: up at {server.url} after {server.startup_seconds:.1f} s", file=sys.stderr)
        yield server


@pytest.fixture(scope="session")
def annotators(label_studio):
    started = time.monotonic()
    accounts = [label_studio.sign_up("ann.one@example.org"), label_studio.sign_up("ann.two@example.org")]
    print(f"label-studio: 2 annotators signed up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return accounts

"""Make the harness core and the built-in plugin packages importable without installing the project."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in [ROOT, *sorted(p for p in (ROOT / "plugins").iterdir() if p.is_dir())]:
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

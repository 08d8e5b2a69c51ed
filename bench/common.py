"""What the CPU benchmark scripts share: the machine's description, its load, package versions, and
writing a result table between its markers in BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM (GiB), Python and platform of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem), "python": platform.python_version(), "platform": platform.platform()}


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: every figure states its load)."""
    return [round(x, 2) for x in os.getloadavg()]


def versions(python: Path, packages: list[str]) -> dict[str, str]:
    """Installed versions of ``packages`` in the environment of the interpreter ``python`` (absent ones left out)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    return json.loads(subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True).stdout)


def write_section(marker: str, table: str, new_section: str, path: Path | None = None) -> None:
    """Put ``table`` between ``<!-- bench:{marker}:begin/end -->`` in ``path`` (BENCHMARKS.md by default).

    Without those markers yet, ``new_section`` (a heading and intro, ending in a blank line) and the
    marked table are appended.
    """
    begin, end = f"<!-- bench:{marker}:begin -->", f"<!-- bench:{marker}:end -->"
    path = path or ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += f"\n{new_section}{block}\n"
    path.write_text(text)


def add_output_args(ap: Any) -> None:
    """``--no-write`` and ``--from-json``, which every benchmark that writes a BENCHMARKS.md section takes."""
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--from-json", default=None, help="only render this results file (and write it into BENCHMARKS.md)")


def rerender(args: Any, render: Any, write: Any) -> bool:
    """With ``--from-json``: print the table ``render`` makes of that file, ``write`` it unless ``--no-write``; True if done."""
    if not args.from_json:
        return False
    show(args, render(json.loads(Path(args.from_json).read_text())), write)
    return True


def publish(args: Any, out: Path, report: dict[str, Any], render: Any, write: Any) -> None:
    """Save ``report`` as JSON at ``out``, print the table ``render`` makes of it and ``write`` it unless ``--no-write``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    show(args, render(report), write)


def show(args: Any, table: str, write: Any) -> None:
    """Print ``table`` and ``write`` it into BENCHMARKS.md unless ``--no-write``."""
    print(table)
    if not args.no_write:
        write(table)

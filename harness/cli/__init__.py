"""The ``harness`` command line: one thin module per command group over library functions.

Exit codes: 0 everything succeeded, 1 some cell failed (stored, shown in the report),
2 bad input (one message, nothing written), 130 interrupted (Ctrl-C) and 143 stopped by
SIGTERM (everything finished so far is kept; run again to continue).
"""

from __future__ import annotations

import click

from .. import __version__
from .analyze import analyze_cmd
from .human import human_group
from .merge import merge_cmd
from .plan import plan_cmd
from .plugins_cmd import check_cmd, plugins_cmd
from .recover import recover_cmd
from .report import report_cmd
from .run import STAGE_COMMANDS, run_cmd
from .runs import runs_cmd
from .tune import tune_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def main() -> None:
    """Fine-tune, sweep decoding settings, score and report — through plugins."""


for command in (plugins_cmd, check_cmd, run_cmd, *STAGE_COMMANDS, report_cmd, human_group, analyze_cmd, plan_cmd, merge_cmd, recover_cmd, runs_cmd, tune_cmd):
    main.add_command(command)

__all__ = ["main"]

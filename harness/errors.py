"""Errors the CLI turns into exit codes.

`UserError` is bad input: a wrong registry key, an unknown plugin, a malformed sheet.
The CLI prints its message (no traceback) and exits with code 2. Plugins raise it for
bad settings they detect themselves (a gated model without a token, a 4-bit request
where bitsandbytes cannot run) so the user sees one clear line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """Bad input. `where` names the file (and key or row); `message` says what is allowed."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None, key: str | None = None):
        self.file = str(file) if file is not None else None
        self.key = key
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.key:
            where.append(self.key)
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class DataUnavailable(UserError):
    """The experiment's data cannot be reached (the Hub offline, a data file missing or unreadable): nothing is
    known yet about the records themselves. Dataset plugins raise it so that `harness check` can say the
    experiment file is valid and only the data could not be checked."""


class MissingDependency(UserError):
    """A plugin needs an optional package that is not installed."""

    def __init__(self, package: str, extra: str | None = None, *, purpose: str = ""):
        hint = f"pip install 'llm-decoding-harness[{extra}]'" if extra else f"pip install {package}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"the package '{package}' is not installed{what}; install it with: {hint}")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    allowed = ", ".join(f"'{c}'" for c in choices) or "none are installed"
    return f"unknown {kind} '{name}'{did_you_mean(name, choices)}; allowed: {allowed}"

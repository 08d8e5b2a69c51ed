"""How the rating formats word a bad file: one message listing every problem, nothing imported."""

from __future__ import annotations

from collections.abc import Sequence

#: how many rows, tasks or ids one line lists before "and N more"
MAX_LISTED = 10


def listed(things: Sequence[object]) -> str:
    """``a, b, c`` — at most :data:`MAX_LISTED` of them, then ``and N more``."""
    shown = ", ".join(str(t) for t in things[:MAX_LISTED])
    return shown + (f" and {len(things) - MAX_LISTED} more" if len(things) > MAX_LISTED else "")


def problem_message(count: int, where: str, lines: Sequence[str]) -> str:
    """``N problems in the <where>; nothing was imported:`` and the lines below it, indented."""
    head = f"{count} problem{'s' if count != 1 else ''} in the {where}; nothing was imported:"
    return "\n".join([head, *(f"  {line}" for line in lines)])

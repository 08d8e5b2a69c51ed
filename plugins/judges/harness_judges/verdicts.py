"""Reading a judge's verdict: from its text, and from the log-probabilities of the verdict token.

Text: the *last* ``[[A]]``/``[[B]]``/``[[C]]`` (a pair) or ``[[N]]`` (a grade) in the reply; none, or a grade off
the scale, is *unparseable* (recorded as missing, never scored 0, 0.5 or 5).

Log-probabilities (where the engine returns them): at the position of the verdict token — the first generated
token when the reply was primed up to the verdict, else the token where the last ``[[`` verdict of the reply
begins — the probabilities of the tokens that spell a verdict (``A``, `` A``, ``A]]`` … all count for A):

* a pair: the soft preference for A, ``(p(A) + p(C)/2) / (p(A) + p(B) + p(C))`` — AlpacaEval's weighted
  judge, with its tie option counting half;
* a grade: the expected grade ``sum(g p(g)) / sum(p(g))`` over the grades on the scale (G-Eval). A grade of two
  digits (10 on a 1-10 scale) starts with the token ``1`` in most tokenizers: when the verdict's first token
  *is* ``1``, the next position's probability of ``0`` splits p(1) between 1 and 10; otherwise p(1) counts
  for 1 (``split_one`` in the record says which).

``PARSER_VERSION`` is part of every judge's identity: a change here re-judges.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.api import TokenLogprob

PARSER_VERSION = "1"
PAIR = re.compile(r"\[\[\s*([ABC])\s*\]\]")
GRADE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
LETTERS = ("A", "B", "C")


@dataclass(frozen=True)
class Verdict:
    """One judge call, read.

    ``value``: a pair's share of the win for A (1, 0.5, 0 from text; soft from log-probabilities) or a grade;
    ``text_value``/``lp_value``: the same from each source (None where it could not be read); ``source``:
    which one ``value`` is; ``why``: what made it unparseable (``value`` None)."""

    value: float | None
    source: str | None
    text_value: float | None
    lp_value: float | None
    probs: dict[str, float] = field(default_factory=dict)
    mass: float | None = None
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def winner(self) -> str | None:
        """A pair's hard verdict: "A", "B" or "C" (a tie), from the source of ``value``."""
        if self.value is None:
            return None
        if self.source == "logprobs" and self.probs:
            best = max(LETTERS, key=lambda k: (self.probs.get(k, 0.0), k == "C"))
            return best
        return {1.0: "A", 0.0: "B"}.get(self.value, "C")

    def record(self, kind: str) -> dict[str, Any]:
        """What is stored of this call (``kind`` "pair" or "grade")."""
        out: dict[str, Any] = {"verdict": self.winner} if kind == "pair" else {}
        out.update(value=_r(self.value), source=self.source, text=_r(self.text_value), logprobs=_r(self.lp_value))
        if self.probs:
            out["probs"] = {k: _r(v) for k, v in self.probs.items()}
            out["mass"] = _r(self.mass)
        if self.why:
            out["why"] = self.why
        out.update(self.extra)
        return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


# --------------------------------------------------------------------------- text


def pair_from_text(text: str) -> tuple[float | None, str]:
    """(share of the win for A: 1, 0.5, 0; or None) and why not."""
    found = PAIR.findall(text)
    if not found:
        return None, "no verdict [[A]], [[B]] or [[C]] in the reply"
    return {"A": 1.0, "B": 0.0, "C": 0.5}[found[-1]], ""


def grade_from_text(text: str, lo: int, hi: int) -> tuple[float | None, str]:
    found = GRADE.findall(text)
    if not found:
        return None, f"no rating [[N]] ({lo}-{hi}) in the reply"
    g = float(found[-1])
    if not lo <= g <= hi:
        return None, f"rating {found[-1]} is off the scale {lo}-{hi}"
    return g, ""


# --------------------------------------------------------------------------- log-probabilities


def verdict_position(positions: Sequence[TokenLogprob], primed: bool, pattern: re.Pattern[str]) -> int | None:
    """Index of the token where the verdict starts (0 when the reply was primed up to it)."""
    if not positions:
        return None
    if primed:
        return 0
    text = "".join(p.token for p in positions)
    found = list(pattern.finditer(text))
    if not found:
        return None
    start = found[-1].start(1)
    pos = 0
    for i, p in enumerate(positions):
        if pos + len(p.token) > start:
            return i
        pos += len(p.token)
    return None


def _symbol(token: str) -> str:
    """What a token spells at a verdict's place: its text without spaces, leading brackets and trailing ``]``."""
    return token.strip().lstrip("[").rstrip("]").strip()


def pair_probs(position: TokenLogprob) -> tuple[dict[str, float], float] | None:
    """p(A), p(B), p(C) at the verdict position (tokens that spell the same letter add up) and their total."""
    probs = {k: 0.0 for k in LETTERS}
    for token, lp in position.top:
        s = _symbol(token)
        if s in probs and math.isfinite(lp):
            probs[s] += math.exp(lp)
    mass = sum(probs.values())
    return (probs, mass) if mass > 0 else None


def grade_probs(positions: Sequence[TokenLogprob], i: int, lo: int, hi: int) -> tuple[dict[str, float], float, dict[str, Any]] | None:
    """p(g) for each grade on the scale at position ``i`` (see the module docstring for 10 on a 1-10 scale)."""
    probs: dict[int, float] = {}
    extra: dict[str, Any] = {}
    for token, lp in positions[i].top:
        s = _symbol(token)
        if s.isdigit() and lo <= int(s) <= hi and math.isfinite(lp):
            probs[int(s)] = probs.get(int(s), 0.0) + math.exp(lp)
    two_digit = [g for g in range(max(lo, 10), hi + 1)]
    if 1 in probs and 10 in two_digit and 10 not in probs:
        if _symbol(positions[i].token) == "1" and i + 1 < len(positions):
            nxt = positions[i + 1]
            q = sum(math.exp(lp) for token, lp in nxt.top if token.strip().startswith("0") and math.isfinite(lp))
            q = min(max(q, 0.0), 1.0)
            probs[10] = probs[1] * q
            probs[1] = probs[1] * (1 - q)
            extra["split_one"] = round(q, 4)
        else:
            extra["split_one"] = "unknown: p(1) counted as 1"
    mass = sum(probs.values())
    if mass <= 0:
        return None
    return {str(g): p for g, p in sorted(probs.items())}, mass, extra


# --------------------------------------------------------------------------- one call


def _closed(primed: str, text: str) -> str:
    """The reply with its primed start; a primed verdict cut after its first token(s) ("A", "7]") gets its closing "]]"."""
    if not primed:
        return text
    head = text.split("]]", 1)[0].rstrip("]")
    return primed + head + "]]"


def read_pair(text: str, positions: Sequence[TokenLogprob] | None, primed: str) -> Verdict:
    """A pair verdict from a reply (``primed``: the reply's primed start, "" when the judge generated freely)."""
    text_value, why = pair_from_text(_closed(primed, text))
    lp_value = None
    probs: dict[str, float] = {}
    mass = None
    if positions:
        i = verdict_position(positions, bool(primed), PAIR)
        found = pair_probs(positions[i]) if i is not None else None
        if found is not None:
            probs, mass = found
            lp_value = (probs["A"] + 0.5 * probs["C"]) / mass
    if lp_value is not None:
        return Verdict(lp_value, "logprobs", text_value, lp_value, probs, mass)
    if text_value is not None:
        return Verdict(text_value, "text", text_value, None)
    return Verdict(None, None, None, None, why=why + ("; no verdict token among the top log-probabilities" if positions else ""))


def read_grade(text: str, positions: Sequence[TokenLogprob] | None, primed: str, lo: int, hi: int) -> Verdict:
    """A grade verdict (the grade itself, not yet on 0-1)."""
    text_value, why = grade_from_text(_closed(primed, text), lo, hi)
    lp_value = None
    probs: dict[str, float] = {}
    mass = None
    extra: dict[str, Any] = {}
    if positions:
        i = verdict_position(positions, bool(primed), GRADE)
        found = grade_probs(positions, i, lo, hi) if i is not None else None
        if found is not None:
            probs, mass, extra = found
            lp_value = sum(int(g) * p for g, p in probs.items()) / mass
    if lp_value is not None:
        return Verdict(lp_value, "logprobs", text_value, lp_value, probs, mass, extra=extra)
    if text_value is not None:
        return Verdict(text_value, "text", text_value, None)
    return Verdict(None, None, None, None, why=why + ("; no grade token among the top log-probabilities" if positions else ""))

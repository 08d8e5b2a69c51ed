"""The judges' prompts: the default wording, a user's template or rubric file, and rendering.

A prompt is a system message, a user message and — when the judge is asked for its verdict alone
(``ask = "prefill"``) — the start of the judge's reply, primed up to the verdict (``[[`` or ``Rating: [[``),
so the next token *is* the verdict. Verdict formats are MT-Bench's: ``[[A]]``, ``[[B]]``, ``[[C]]`` (tie)
for a pair, ``[[N]]`` for a grade.

A template file replaces the user message. It names what it shows with placeholders in braces:
``{question}`` (the instruction and its input), ``{instruction}``, ``{input}``, ``{reference}``, ``{output}``
(a grade) or ``{output_a}`` and ``{output_b}`` (a pair), ``{format}`` (how to answer, which depends on
``ask``), ``{min}`` and ``{max}`` (a grade's scale). Only these names are replaced; other braces stay as
written. A rubric file replaces only the criteria sentence of the default system message (``{rubric}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.api import Example, stable_hash
from harness.errors import UserError

PLACEHOLDERS = ("question", "instruction", "input", "reference", "output", "output_a", "output_b", "format", "min", "max", "rubric")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

RUBRIC = "Weigh how well it follows the instruction, and its correctness, helpfulness, relevance and level of detail."

SYSTEM_PAIR = (
    "You are a fair and careful judge. Two AI assistants answered the user request shown below; decide which answer "
    "serves the user better. {rubric} Neither the order in which the answers appear, nor their length, nor the "
    "assistants' names may sway you."
)
SYSTEM_PAIR_REFERENCE = SYSTEM_PAIR + " A reference answer, known to be correct, is shown to help you."
SYSTEM_GRADE = "You are a fair and careful judge. An AI assistant answered the user request shown below; rate its answer. {rubric}"
SYSTEM_GRADE_REFERENCE = SYSTEM_GRADE + " A reference answer, known to be correct, is shown: compare the assistant's answer with it."

FORMAT_PAIR = {
    "generate": 'First compare the two answers in a few sentences. Then give your verdict on a line of its own, exactly '
                '"[[A]]" if assistant A\'s answer is better, "[[B]]" if assistant B\'s answer is better, or "[[C]]" for a tie.',
    "prefill": 'Reply with your verdict alone: exactly "[[A]]" if assistant A\'s answer is better, "[[B]]" if assistant B\'s '
               'answer is better, or "[[C]]" for a tie.',
}
FORMAT_GRADE = {
    "generate": 'First assess the answer in a few sentences. Then rate it from {min} (worst) to {max} (best) on a line of its '
                'own, exactly in this form: "Rating: [[{max}]]".',
    "prefill": 'Reply with your rating alone, from {min} (worst) to {max} (best), exactly in this form: "Rating: [[{max}]]".',
}

_REQUEST = "[User request]\n{question}\n\n"
_REFERENCE = "[Reference answer]\n{reference}\n\n"
_PAIR = (
    "[Start of assistant A's answer]\n{output_a}\n[End of assistant A's answer]\n\n"
    "[Start of assistant B's answer]\n{output_b}\n[End of assistant B's answer]\n\n{format}"
)
_GRADE = "[Start of the assistant's answer]\n{output}\n[End of the assistant's answer]\n\n{format}"

USER_PAIR = _REQUEST + _PAIR
USER_PAIR_REFERENCE = _REQUEST + _REFERENCE + _PAIR
USER_GRADE = _REQUEST + _GRADE
USER_GRADE_REFERENCE = _REQUEST + _REFERENCE + _GRADE

#: the judge's reply, primed up to the verdict, for ``ask = "prefill"``
PREFILL = {"pair": "[[", "grade": "Rating: [["}


@dataclass(frozen=True)
class Prompt:
    """How one judge asks: system and user templates, the answer format, the primed reply ("" when it generates)."""

    kind: str  # "pair" or "grade"
    system: str
    user: str
    format: str
    prefill: str
    lo: int = 1
    hi: int = 10

    def sha256(self) -> str:
        """What the prompt is besides the example's data: part of the judge's identity."""
        return stable_hash([self.kind, self.system, self.user, self.format, self.prefill, self.lo, self.hi])[:16]

    def messages(self, values: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """``(role, content)`` pairs: system, user, and the primed assistant reply when there is one."""
        fields = {"format": fill(self.format, {"min": str(self.lo), "max": str(self.hi)}), "min": str(self.lo), "max": str(self.hi), **values}
        out = [("system", fill(self.system, fields)), ("user", fill(self.user, fields))]
        if self.prefill:
            out.append(("assistant", self.prefill))
        return tuple(out)


def build(kind: str, *, ask: str, reference: bool, base_dir: Path, template: str | None, rubric: str | None,
          system: str | None, scale: tuple[int, int] = (1, 10), key: str = "metrics") -> Prompt:
    """The prompt of a judge from its settings (files resolved against ``base_dir``; UserError naming the key if bad)."""
    pair = kind == "pair"
    user = read(base_dir, template, f"{key}.template") if template else (
        (USER_PAIR_REFERENCE if reference else USER_PAIR) if pair else (USER_GRADE_REFERENCE if reference else USER_GRADE)
    )
    rubric_text = read(base_dir, rubric, f"{key}.rubric").strip() if rubric else RUBRIC
    sys_text = system if system is not None else (
        (SYSTEM_PAIR_REFERENCE if reference else SYSTEM_PAIR) if pair else (SYSTEM_GRADE_REFERENCE if reference else SYSTEM_GRADE)
    )
    sys_text = fill(sys_text, {"rubric": rubric_text})
    required = ("output_a", "output_b") if pair else ("output",)
    where = template or "the default template"
    names = set(_FIELD.findall(user))
    unknown = sorted(n for n in names if n not in PLACEHOLDERS)
    if unknown:
        raise UserError(f"{where} uses unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; allowed: "
                        + ", ".join("{" + n + "}" for n in PLACEHOLDERS), key=f"{key}.template")
    lacking = [n for n in required if n not in names]
    if lacking:
        raise UserError(f"{where} must show {', '.join('{' + n + '}' for n in lacking)} (the output{'s' if pair else ''} to judge)", key=f"{key}.template")
    if reference and "reference" not in names and template:
        raise UserError(f"{where} must show {{reference}}: this judge is set to see the reference answer", key=f"{key}.template")
    fmt = (FORMAT_PAIR if pair else FORMAT_GRADE)[ask]
    prefill = PREFILL[kind] if ask == "prefill" else ""
    return Prompt(kind, sys_text, user, fmt, prefill, int(scale[0]), int(scale[1]))


def read(base_dir: Path, path: str, key: str) -> str:
    p = Path(path).expanduser()
    p = p if p.is_absolute() else Path(base_dir) / p
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {p}: {exc.strerror or exc}", key=key) from None
    except UnicodeDecodeError:
        raise UserError(f"{p} is not UTF-8 text", key=key) from None


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` of ``values`` replaced; every other brace left as written."""
    return _FIELD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


def example_fields(example: Example) -> dict[str, str]:
    question = example.instruction if not example.input else f"{example.instruction}\n\n{example.input}"
    return {"question": question, "instruction": example.instruction, "input": example.input, "reference": example.output}


def render_text(messages: tuple[tuple[str, str], ...], tokenizer) -> str:
    """The prompt as text for an engine that takes text: the tokenizer's chat template (the primed reply appended
    after the generation prompt), or a plain transcript when the model has none."""
    primed = messages[-1][1] if messages and messages[-1][0] == "assistant" else ""
    convo = [{"role": r, "content": c} for r, c in (messages[:-1] if primed else messages)]
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True) + primed
        except Exception:  # a template without a system role: fold the system message into the user's
            merged = [{"role": "user", "content": "\n\n".join(m["content"] for m in convo)}]
            return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True) + primed
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in convo]
    return "\n\n".join(lines) + "\n\nAssistant: " + primed

"""``judge`` and ``judge-pairwise``: an LLM judges each output, held against human ratings like every metric.

* ``judge`` grades each output on a scale (default 1-10, MT-Bench's ``[[N]]``), shown the reference answer by
  default (``reference = false``: not). Value: ``(g - min) / (max - min)``, on 0-1 beside the other metrics;
  the grade and the scale are recorded.
* ``judge-pairwise`` compares each output with another output for the same example: the baseline config's
  (default), another config's (``against = "CONFIG"``) or the reference answer (``against = "reference"``).
  Value: the output's share of the win (1 win, 1/2 tie, 0 loss; soft from log-probabilities), so a cell's
  value is its win rate against what it was compared with. ``order = "both"`` (default) asks in both orders
  and counts a verdict that flips with the order as a tie (MT-Bench); ``order = "random"`` asks once, the
  order drawn per example from its keys and recorded. Identical outputs are a tie, without asking.

The judge is a model run through the public API: a model adapter (``create_plugin("model", …)``; ``served``
for ``engine = "openai"``, else ``peft-lora``, or ``adapter``), a :class:`~harness.api.ModelSpec` of
``model`` (as in ``[[models]]``: a hub name, a local folder, a ``.gguf`` file, ``package:…``; a served name
with ``base_url``), and an engine plugin (``engine``: ``transformers``, ``vllm``, ``openai``, …). Two ways of
asking (recorded in every score and the identity): ``ask = "prefill"`` (default) primes the judge's reply up to
the verdict and reads one token — with log-probabilities, one forward pass over the prompt; ``ask =
"generate"`` lets the judge explain, then reads the verdict from its text. Where the engine returns
log-probabilities (``logprobs`` > 0, the default 20), the verdict's value comes from them (a pair's soft
preference, a grade's expected value) and the text verdict is recorded beside it (see :mod:`verdicts`).

A reply without a readable verdict is a *missing* score (``MISSING_SCORE``, the reason in ``detail["why"]``),
counted and reported, never 0 or 0.5. ``identity`` holds everything that changes a verdict — the judge model's
fingerprint (or endpoint and served name), the engine's identity, the prompt's hash, the decoding, the order
policy, the way of asking and the parser's version — so changing any of them re-judges exactly what it
affects, and adding a judge judges only that. ``api_key_env`` names an environment variable: the key itself
is never in a setting, an identity, a score or a message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import (
    MISSING_SCORE,
    Decoding,
    ExampleScore,
    GenRequest,
    GenResult,
    Metric,
    ModelSpec,
    Option,
    Progress,
    ScoreInput,
    create_plugin,
    non_default,
)
from harness.errors import UserError

from . import prompts, verdicts

ASK = ("prefill", "generate")
ORDERS = ("both", "random")
#: characters of each judge reply kept in the score's detail (shown in the HTML report)
REPLY_CHARS = 800
#: the most top log-probabilities asked for (the OpenAI API's limit)
MAX_LOGPROBS = 20

COMMON = {
    "model": Option(str, help="the judge model, as in [[models]]: hub name, local folder, .gguf, package:<pkg>/<path>; or the served name with engine = 'openai'"),
    "engine": Option(str, default="transformers", help="the engine plugin that runs the judge: transformers, vllm, openai, …"),
    "adapter": Option(str, default=None, nullable=True, help="the model adapter plugin (default: 'served' with engine = 'openai', else 'peft-lora')"),
    "engine_options": Option(dict, default={}, help="settings of the judge's engine (as in [engine]), e.g. {batch_size = 8}"),
    "model_options": Option(dict, default={}, help="settings of the judge's model adapter (as in [[models]]), e.g. {dtype = 'bfloat16'}"),
    "base_url": Option(str, default=None, nullable=True, help="engine = 'openai': the server's API root, e.g. http://127.0.0.1:8000/v1"),
    "api_key_env": Option(str, default=None, nullable=True, help="engine = 'openai': NAME of the environment variable holding the API key (never the key)"),
    "ask": Option(str, default="prefill", choices=ASK, help="prefill: the reply primed up to the verdict, one token read; generate: the judge explains, then gives its verdict"),
    "logprobs": Option(int, default=MAX_LOGPROBS, minimum=0, maximum=MAX_LOGPROBS, help="top log-probabilities read at the verdict (0: the text verdict only)"),
    "temperature": Option(float, default=0.0, minimum=0.0, help="the judge's sampling temperature (0: greedy)"),
    "max_new_tokens": Option(int, default=512, minimum=1, help="ask = 'generate': the longest reply"),
    "seed": Option(int, default=0, minimum=0, help="base of the judge's sampling seeds (temperature > 0)"),
    "template": Option(Path, default=None, nullable=True, help="a file replacing the user prompt (placeholders: see README), relative to the experiment file"),
    "rubric": Option(Path, default=None, nullable=True, help="a file replacing the criteria of the default prompt, relative to the experiment file"),
    "system": Option(str, default=None, nullable=True, help="the system message (default: the judge's own; {rubric} is replaced)"),
}


class _Renamed:
    """The engine's "generating" progress shown as "judging"."""

    def __init__(self, progress: Progress):
        self.inner = progress

    def task(self, description: str, total: int | None):
        return self.inner.task("judging" if description == "generating" else description, total)


class _Judge(Metric):
    """What both judges share: the judge model, its engine session, its prompt, its identity."""

    version = "1"
    kind_: str = ""  # "pair" or "grade"

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__(settings)
        self._session: Any = None
        self._tokenizer: Any = None
        self._prompt: prompts.Prompt | None = None

    # ------------------------------------------------------------------ settings

    @property
    def key(self) -> str:
        return f"metrics.{self.name}"

    def adapter_name(self) -> str:
        return self.settings["adapter"] or ("served" if self.settings["engine"] == "openai" else "peft-lora")

    def spec(self) -> ModelSpec:
        """The judge model as a ModelSpec (options filled with the adapter's defaults)."""
        name = self.adapter_name()
        options = dict(self.settings["model_options"])
        if name == "served" or self.settings["base_url"]:
            if not self.settings["base_url"]:
                raise UserError(f"engine = '{self.settings['engine']}' with a served judge needs base_url (the server's API root, e.g. http://127.0.0.1:8000/v1)", key=f"{self.key}.base_url")
            options.update(base_url=self.settings["base_url"], api_key_env=self.settings["api_key_env"])
        adapter = create_plugin("model", name, options)
        _check_keys(type(adapter).options, options, f"{self.key}.model_options", also=("base_url", "api_key_env"))
        return ModelSpec(self.name, name, self.settings["model"], None, template="chat", options=dict(adapter.settings), base_dir=self.base_dir)

    def engine(self) -> Any:
        engine = create_plugin("engine", self.settings["engine"], dict(self.settings["engine_options"]))
        _check_keys(type(engine).options, self.settings["engine_options"], f"{self.key}.engine_options")
        return engine

    def decoding(self) -> Decoding:
        if self.settings["ask"] == "prefill":
            # a grade of two digits (10) needs its second token to be told from 1
            new = 2 if self.kind_ == "grade" and self.scale()[1] >= 10 else 1
        else:
            new = int(self.settings["max_new_tokens"])
        t = float(self.settings["temperature"])
        if t == 0:
            return Decoding("greedy", new, unused=("temperature", "top_k", "top_p"))
        return Decoding("sample", new, temperature=t)

    def scale(self) -> tuple[int, int]:
        return (1, 10)

    def prompt(self) -> prompts.Prompt:
        if self._prompt is None:
            s = self.settings
            self._prompt = prompts.build(
                self.kind_, ask=s["ask"], reference=self.shows_reference(), base_dir=self.base_dir, template=s["template"],
                rubric=s["rubric"], system=s["system"], scale=self.scale(), key=self.key,
            )
        return self._prompt

    def shows_reference(self) -> bool:
        return False

    def policy(self) -> dict[str, Any]:
        """What else changes a verdict (the order policy, the scale, what is compared)."""
        return {}

    # ------------------------------------------------------------------ contract

    def identity(self) -> dict[str, Any]:
        spec = self.spec()
        adapter = create_plugin("model", spec.adapter, spec.options)
        decoding = self.decoding()
        judge = {
            "kind": "pairwise" if self.kind_ == "pair" else "grade",
            "model": self.settings["model"],
            "adapter": spec.adapter,
            "model_identity": adapter.identity(spec),
            "engine": self.engine().identity(),
            "prompt_sha256": self.prompt().sha256(),
            "ask": self.settings["ask"],
            "logprobs": int(self.settings["logprobs"]),
            "decoding": {k: v for k, v in non_default(decoding).items() if k != "requested"},
            "seed": int(self.settings["seed"]) if decoding.do_sample else None,
            "parser": verdicts.PARSER_VERSION,
            **self.policy(),
        }
        return {"name": self.name, "version": self.version, "llm_judge": judge}

    def check(self) -> None:
        self.prompt()
        spec = self.spec()
        engine = self.engine()
        create_plugin("model", spec.adapter, spec.options).identity(spec)  # a local model that is not there fails here
        engine.check(spec)
        why = engine.unsupported(self.decoding())
        if why:
            raise UserError(f"the judge's engine '{self.settings['engine']}' cannot decode its verdicts: {why}", key=f"{self.key}.engine")

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # ------------------------------------------------------------------ asking

    def _open(self) -> Any:
        if self._session is None:
            spec = self.spec()
            adapter = create_plugin("model", spec.adapter, spec.options)
            self._tokenizer = adapter.tokenizer(spec)
            self._session = self.engine().open(adapter, spec, None)
        return self._session

    def ask(self, calls: Sequence[tuple[str, dict[str, str]]], progress: Progress) -> dict[str, GenResult]:
        """Ask the judge once per ``(request key, prompt fields)``; the replies by key."""
        if not calls:
            return {}
        session = self._open()
        prompt = self.prompt()
        decoding = self.decoding()
        requests = []
        for key, fields in calls:
            messages = prompt.messages(fields)
            seed = int(hashlib.sha256(f"{self.settings['seed']}:{key}".encode()).hexdigest()[:8], 16)
            requests.append(GenRequest(key, prompts.render_text(messages, self._tokenizer), decoding, seed, messages=messages,
                                       logprobs=int(self.settings["logprobs"])))
        out: dict[str, GenResult] = {}
        for batch in session.generate(requests, _Renamed(progress)):
            out.update((r.key, r) for r in batch)
        return out

    def _common(self, reply: GenResult) -> dict[str, Any]:
        return {"reply": reply.text[:REPLY_CHARS], "logprobs_returned": reply.logprobs is not None}


class PointwiseJudge(_Judge):
    name = "judge"
    label = "Judge"
    kind_ = "grade"
    description = "an LLM grades each output on a rubric ([[N]], 1-10 by default), optionally shown the reference; value (g - min) / (max - min)"
    options = {
        **COMMON,
        "reference": Option(bool, default=True, help="show the judge the reference answer"),
        "scale": Option(list, default=[1, 10], items=int, help="the lowest and highest grade, e.g. [1, 5] for a Prometheus-style rubric"),
    }

    def scale(self) -> tuple[int, int]:
        scale = list(self.settings["scale"])
        if len(scale) != 2 or scale[0] >= scale[1] or scale[0] < 0:
            raise UserError(f"must be two grades [lowest, highest], lowest < highest, not negative; got {scale}", key=f"{self.key}.scale")
        return int(scale[0]), int(scale[1])

    def shows_reference(self) -> bool:
        return bool(self.settings["reference"])

    def policy(self) -> dict[str, Any]:
        return {"scale": list(self.scale()), "reference": self.shows_reference()}

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        lo, hi = self.scale()
        calls = [(f"grade/{i.key}", {**prompts.example_fields(i.example), "output": i.prediction}) for i in inputs if i.prediction.strip()]
        replies = self.ask(calls, progress)
        primed = self.prompt().prefill
        out = []
        for i in inputs:
            if not i.prediction.strip():
                out.append(ExampleScore(0.0, detail={"kind": "grade", "empty": True, "scale": [lo, hi], "grade": lo}))
                continue
            reply = replies[f"grade/{i.key}"]
            v = verdicts.read_grade(reply.text, reply.logprobs, primed, lo, hi)
            detail = {"kind": "grade", "scale": [lo, hi], "ask": self.settings["ask"], "grade": v.text_value, "expected_grade": _r(v.lp_value),
                      "source": v.source, **self._common(reply), **({"probs": {k: _r(p) for k, p in v.probs.items()}, "mass": _r(v.mass)} if v.probs else {}),
                      **v.extra}
            if v.value is None:
                out.append(ExampleScore(MISSING_SCORE, detail={**detail, "why": f"unparseable: {v.why}"}))
            else:
                out.append(ExampleScore((v.value - lo) / (hi - lo), detail=detail))
        return out


class PairwiseJudge(_Judge):
    name = "judge-pairwise"
    label = "Judge win rate"
    kind_ = "pair"
    description = "an LLM prefers one of two outputs ([[A]]/[[B]]/[[C]]): each config against the baseline's (or the reference); value: win rate, ties 1/2"
    options = {
        **COMMON,
        "against": Option(str, default="baseline", help="what each output is compared with: 'baseline', a config's name, or 'reference'"),
        "order": Option(str, default="both", choices=ORDERS, help="both: every pair in both orders, a flip is a tie; random: one order drawn per example (recorded)"),
        "reference": Option(bool, default=False, help="also show the judge the reference answer (not with against = 'reference')"),
    }

    def against(self) -> str | None:
        return None if self.settings["against"] == "reference" else self.settings["against"]

    def shows_reference(self) -> bool:
        if self.settings["reference"] and self.settings["against"] == "reference":
            raise UserError("reference = true shows the reference beside both outputs; with against = 'reference' it is one of them: drop one", key=f"{self.key}.reference")
        return bool(self.settings["reference"])

    def policy(self) -> dict[str, Any]:
        return {"order": self.settings["order"], "against": "reference" if self.settings["against"] == "reference" else "output",
                "reference": self.shows_reference()}

    def _other(self, i: ScoreInput) -> str:
        if self.settings["against"] == "reference":
            return i.reference
        if i.other is None:
            raise RuntimeError(f"no compared output for {i.key}: the core fills ScoreInput.other for a metric that compares outputs")
        return i.other

    def first_as_a(self, i: ScoreInput) -> bool:
        """``order = "random"``: whether the output is shown first (A), drawn from the two texts' keys (stable across runs)."""
        digest = hashlib.sha256(f"{self.settings['seed']}:{i.key}:{i.other_key or i.reference}".encode()).digest()
        return digest[0] % 2 == 0

    def score(self, inputs: Sequence[ScoreInput], progress: Progress) -> list[ExampleScore]:
        calls: list[tuple[str, dict[str, str]]] = []
        plan: list[list[tuple[str, bool]]] = []  # per input: (request key, output shown as A)
        for i in inputs:
            other = self._other(i)
            if i.prediction.strip() == other.strip():
                plan.append([])
                continue
            orders = [True, False] if self.settings["order"] == "both" else [self.first_as_a(i)]
            mine = []
            for as_a in orders:
                key = f"pair/{i.key}/{i.other_key or 'reference'}/{'A' if as_a else 'B'}"
                a, b = (i.prediction, other) if as_a else (other, i.prediction)
                calls.append((key, {**prompts.example_fields(i.example), "output_a": a, "output_b": b}))
                mine.append((key, as_a))
            plan.append(mine)
        replies = self.ask(calls, progress)
        primed = self.prompt().prefill
        out = []
        for i, mine in zip(inputs, plan):
            other = self._other(i)
            base = {"kind": "pairwise", "order": self.settings["order"], "ask": self.settings["ask"],
                    "against": "reference" if self.settings["against"] == "reference" else "output",
                    "lengths": [len(i.prediction), len(other)]}
            if not mine:
                out.append(ExampleScore(0.5, detail={**base, "identical": True, "outcome": "tie", "calls": []}))
                continue
            records, shares, hard, sources, failed = [], [], [], [], []
            for key, as_a in mine:
                reply = replies[key]
                v = verdicts.read_pair(reply.text, reply.logprobs, primed)
                records.append({"output_as": "A" if as_a else "B", **v.record("pair"), **self._common(reply)})
                if v.value is None:
                    failed.append(f"{'output first' if as_a else 'output second'}: {v.why}")
                    continue
                flip = (lambda x: x) if as_a else (lambda x: 1.0 - x)
                shares.append((flip(v.value), flip(v.text_value) if v.text_value is not None else None, v.source))
                winner = v.winner
                hard.append(0.5 if winner == "C" else (1.0 if (winner == "A") == as_a else 0.0))
                sources.append(v.source)
            detail = {**base, "calls": records}
            if failed:
                out.append(ExampleScore(MISSING_SCORE, detail={**detail, "why": "unparseable: " + "; ".join(failed)}))
                continue
            consistent = len(set(hard)) == 1
            outcome = {1.0: "win", 0.0: "loss"}.get(hard[0], "tie") if consistent else "tie"
            source = "logprobs" if all(s == "logprobs" for s in sources) else "text"
            if source == "logprobs":
                values = [s for s, _, _ in shares]
            else:
                values = [t if t is not None else h for (_, t, _), h in zip(shares, hard)]
            value = sum(values) / len(values) if consistent else 0.5
            detail.update(consistent=consistent if len(hard) > 1 else None, outcome=outcome, source=source,
                          value_text=_r(_text_value(shares, hard)))
            out.append(ExampleScore(value, detail=detail))
        return out


def _text_value(shares: list[tuple[float, float | None, str]], hard: list[float]) -> float | None:
    """The value the text verdicts alone give (MT-Bench's rule: a flip is a tie), recorded beside a log-probability value."""
    texts = [t for _, t, _ in shares]
    if any(t is None for t in texts):
        return None
    return texts[0] if len(set(texts)) == 1 else 0.5


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def _check_keys(allowed: dict[str, Option], given: dict[str, Any], key: str, also: Sequence[str] = ()) -> None:
    """Settings handed to another plugin: known keys only, values of the declared type."""
    for k, v in given.items():
        if k in also and k not in allowed:
            continue
        if k not in allowed:
            raise UserError(f"unknown key '{k}'; allowed: {', '.join(sorted(allowed)) or 'none'}", key=f"{key}.{k}")
        opt = allowed[k]
        types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
        if v is None and opt.nullable:
            continue
        ok = any((t is float and isinstance(v, (int, float)) and not isinstance(v, bool)) or (t is not float and isinstance(v, t) and not (t is int and isinstance(v, bool)))
                 for t in types if isinstance(t, type))
        if not ok:
            raise UserError(f"must be {' or '.join(getattr(t, '__name__', str(t)) for t in types)}, got {v!r}", key=f"{key}.{k}")
        if opt.choices is not None and v not in opt.choices:
            raise UserError(f"{v!r} is not allowed; allowed: {', '.join(repr(c) for c in opt.choices)}", key=f"{key}.{k}")


@hookimpl
def harness_register_metrics(register):
    register(PointwiseJudge)
    register(PairwiseJudge)

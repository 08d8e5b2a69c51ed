"""The ``standard`` decoder: the reference study's decoding semantics.

* ``num_beams > 1``: deterministic beam search. ``temperature``, ``top_k`` and
  ``top_p`` have no effect and are recorded as unused (the study's vLLM 0.2.7 beam
  search ran with temperature 0). ``beam_sampling = true`` asks for beam *sampling*
  instead, which uses them.
* ``temperature == 0``: greedy decoding; ``top_k`` and ``top_p`` are unused.
* otherwise: multinomial sampling with ``temperature``, ``top_k`` (0 = no top-k),
  ``top_p`` (1.0 = no nucleus filtering) and ``min_p`` (0 = off: keep the tokens whose
  probability is at least ``min_p`` times the most likely one's).
* ``repetition_penalty`` (1.0 = off) applies under every strategy, as transformers'
  ``RepetitionPenaltyLogitsProcessor`` does: the score of every token already in the prompt or
  the output is divided by the penalty when positive, multiplied when negative.

The filters apply in transformers' order: repetition penalty, temperature, top-k, top-p, min-p.

Unused parameters are set to neutral values in the effective decoding, so two configs
that decode identically (e.g. ``top_k_10_num_beams_1_temp_0.0`` and greedy with
``top_k = 50``) share cached generations.
"""

from __future__ import annotations

from typing import Any

from harness import hookimpl
from harness.api import Decoder, Decoding, Option
from harness.errors import UserError

_LABELS = {"top_k": "top_k", "num_beams": "num_beams", "temperature": "temp"}


class StandardDecoder(Decoder):
    name = "standard"
    is_default = True
    version = "1"
    description = "greedy / sampling / beam search with the reference study's semantics"
    params = {
        "top_k": Option(int, default=50, minimum=0, help="sample from the k most likely tokens (0 = all)"),
        "num_beams": Option(int, default=1, minimum=1, help="beam width (1 = no beam search)"),
        "temperature": Option(float, default=0.8, minimum=0.0, help="0 = greedy"),
        "top_p": Option(float, default=1.0, minimum=0.0, maximum=1.0, help="nucleus sampling mass (1.0 = off)"),
        "min_p": Option(float, default=0.0, minimum=0.0, maximum=1.0, help="keep tokens at least min_p times as likely as the most likely one (0 = off)"),
        "repetition_penalty": Option(float, default=1.0, minimum=0.0, help="divide the scores of tokens already seen by this (1.0 = off)"),
        "beam_sampling": Option(bool, default=False, help="sample within beam search instead of deterministic beams"),
    }

    def config_name(self, params: dict[str, Any]) -> str:
        p = {**{k: o.default for k, o in self.params.items()}, **params}
        name = f"top_k_{p['top_k']}_num_beams_{p['num_beams']}_temp_{float(p['temperature'])!r}"
        if p["top_p"] != 1.0:
            name += f"_top_p_{float(p['top_p'])!r}"
        if p["min_p"] != 0.0:
            name += f"_min_p_{float(p['min_p'])!r}"
        if p["repetition_penalty"] != 1.0:
            name += f"_rep_{float(p['repetition_penalty'])!r}"
        if p["beam_sampling"]:
            name += "_beam_sampling"
        return name

    def resolve(self, params: dict[str, Any], max_new_tokens: int) -> Decoding:
        p = {**{k: o.default for k, o in self.params.items()}, **params}
        requested = tuple(sorted(p.items()))
        top_k, beams, temp, top_p = int(p["top_k"]), int(p["num_beams"]), float(p["temperature"]), float(p["top_p"])
        min_p, rep = float(p["min_p"]), float(p["repetition_penalty"])
        if top_p <= 0.0:
            raise UserError("top_p must be > 0 (1.0 turns nucleus sampling off)")
        if rep <= 0.0:
            raise UserError("repetition_penalty must be > 0 (1.0 turns it off)")
        # min_p joins the unused list only when asked for: the list is part of every cache key
        sampling = ("temperature", "top_k", "top_p") + (("min_p",) if min_p != 0.0 else ())
        if beams > 1 and not p["beam_sampling"]:
            return Decoding("beam", max_new_tokens, num_beams=beams, repetition_penalty=rep, unused=sampling, requested=requested)
        if beams > 1:
            if temp == 0.0:
                raise UserError("beam_sampling needs temperature > 0 (temperature 0 with beams is plain beam search)")
            return Decoding(
                "beam_sample", max_new_tokens, temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, num_beams=beams,
                repetition_penalty=rep, requested=requested,
            )
        if p["beam_sampling"]:
            raise UserError("beam_sampling needs num_beams > 1")
        if temp == 0.0:
            return Decoding("greedy", max_new_tokens, repetition_penalty=rep, unused=sampling, requested=requested)
        return Decoding("sample", max_new_tokens, temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=rep, requested=requested)


@hookimpl
def harness_register_decoders(register):
    register(StandardDecoder)

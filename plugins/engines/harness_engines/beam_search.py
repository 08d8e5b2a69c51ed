"""One beam-search step on the device, with fixed shapes: transformers' ``_beam_search`` arithmetic, in place.

transformers 5 (``GenerationMixin._beam_search``, 5.17 read for this) already keeps its beam
bookkeeping in fixed-shape tensors; what stops it from being captured is around it: the cache
reorder (``index_select`` on every layer, which replaces the static cache's tensors), a host
synchronisation per step and Python-number step counters. This module repeats the bookkeeping op
for op — the same tensors, shapes, ``topk`` calls and ``-1e9`` sentinels, so that in float32 the
same candidates win, ties included — with the step held in a device tensor:

1. ``log_softmax`` of each running beam's logits, the repetition penalty on those log-probabilities
   (as ``generate`` applies its logits processors there), plus the beam's running score;
2. the top ``keep = max(2, 1 + #EOS) * beams`` candidates over beams x vocabulary
   (``_get_top_k_continuations``); a candidate hits a stopping criterion if its token is an EOS or
   the step is the last one;
3. the next running beams: the best ``beams`` candidates that did not stop
   (``_get_running_beams_for_next_iteration``);
4. finished hypotheses: among the first ``beams`` candidates, those that stopped, scored
   ``log-prob / (generated length ** length_penalty)``, merged with the kept ones, best ``beams``
   kept — unless the prompt is full under ``early_stopping = True`` or the early-stop heuristic
   says no finished score can improve (``_update_finished_beams``, ``_check_early_stop_heuristic``,
   ``early_stopping`` False / True / "never");
5. whether the whole batch is done (``_beam_search_has_unfinished_sequences``), into a device flag
   the host reads now and then. Steps after that point change nothing a prompt returns (its
   finished set is frozen), so reading the flag late is harmless.

The caller moves the attention's view of the cache, not the cache (``fast_decode``): the new beams'
parents (returned here) select whose ancestry each row of the mask inherits.

Only the generated tokens are kept per hypothesis (transformers keeps prompt + generated); the
prompt is the same for every beam of a prompt and never enters a comparison. A division by the
Python float ``length ** length_penalty`` is repeated as a float32 tensor division on a CPU and as a
multiplication by its float32 reciprocal on CUDA (what PyTorch does for a CPU scalar there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sampling import repetition_penalty

#: transformers' sentinel for "cannot be chosen"
NEG = -1.0e9


@dataclass(frozen=True)
class BeamSelector:
    """One beam config as a captured step needs it (the graph's key)."""

    beams: int
    keep: int  # candidates per prompt: max(2, 1 + number of EOS ids) * beams
    new_tokens: int  # max_new_tokens: the step that reaches it stops every candidate
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    repetition_penalty: float = 1.0

    @classmethod
    def of(cls, decoding: Any, n_eos: int) -> BeamSelector:
        beams = int(decoding.num_beams)
        return cls(beams, max(2, 1 + n_eos) * beams, int(decoding.max_new_tokens), float(decoding.length_penalty),
                   decoding.early_stopping, float(decoding.repetition_penalty))


def _divide(x: Any, denominator: Any) -> Any:
    """``x / float(denominator)`` as PyTorch computes it for a Python-scalar divisor (``denominator``: float32 (1,))."""
    import torch

    if x.device.type == "cuda":
        return x * torch.reciprocal(denominator)
    return x / denominator


def _length(st: Any, sel: BeamSelector, offset: int) -> Any:
    """``(generated length) ** length_penalty`` as transformers computes it (a Python float, here float64 then float32)."""
    return ((st.step + offset).double() ** sel.length_penalty).float()


def reset(st: Any, sel: BeamSelector, pad_id: int) -> None:
    """The state of a fresh search: only the first beam of each prompt is live (the others score -1e9)."""
    st.run_scores.zero_()
    st.run_scores[:, 1:] = NEG
    st.run_seq.fill_(pad_id)
    st.fin_seq.fill_(pad_id)
    st.fin_scores.fill_(NEG)
    st.fin_done.zero_()
    st.heur.fill_(True)
    st.stop.zero_()


def select(st: Any, sel: BeamSelector, logits: Any, eos: Any, history: Any | None) -> tuple[Any, Any]:
    """One step: update ``st``'s beam tensors from ``logits`` (prompts * beams, vocab); the new beams' (tokens, parents).

    ``history`` (prompts * beams, n): the token ids each running beam has seen (prompt and output),
    for the repetition penalty; None without one. ``st`` holds ``step`` (1,) — the index of the
    token chosen now — and the (prompts, beams, ...) tensors ``run_scores``, ``run_seq``,
    ``fin_seq``, ``fin_scores``, ``fin_done``, ``heur`` (prompts, 1) and ``stop`` (1,).
    """
    import torch

    prompts, beams = st.run_scores.shape
    vocab = logits.shape[-1]
    log_probs = torch.nn.functional.log_softmax(logits.float(), dim=-1)
    if history is not None:
        log_probs = repetition_penalty(log_probs, history, sel.repetition_penalty)
    log_probs = log_probs.view(prompts, beams, vocab) + st.run_scores[:, :, None]
    log_probs = log_probs.reshape(prompts, beams * vocab)

    # c. the top `keep` continuations over every beam
    topk_log_probs, topk_indices = torch.topk(log_probs, k=sel.keep)
    parents = topk_indices // vocab
    tokens = topk_indices % vocab
    topk_seq = torch.take_along_dim(st.run_seq, parents[:, :, None], dim=1)
    topk_seq.index_copy_(2, st.step, tokens[:, :, None])

    # d. which of them stop: an EOS, or the last step
    hits = (tokens[:, :, None] == eos).any(-1) | (st.step + 1 >= sel.new_tokens)

    # e. the running beams of the next step
    topk_running_log_probs = topk_log_probs + hits.to(torch.float32) * NEG
    next_idx = torch.topk(topk_running_log_probs, k=beams)[1]
    st.run_seq.copy_(torch.take_along_dim(topk_seq, next_idx[:, :, None], dim=1))
    st.run_scores.copy_(torch.take_along_dim(topk_running_log_probs, next_idx, dim=1))
    new_tokens = torch.take_along_dim(tokens, next_idx, dim=1)
    new_parents = torch.take_along_dim(parents, next_idx, dim=1)

    # f. finished hypotheses
    top_beams = torch.arange(sel.keep, device=logits.device) < beams
    did_finish = hits & top_beams[None, :]
    scored = _divide(topk_log_probs, _length(st, sel, 1))
    full = torch.all(st.fin_done, dim=-1, keepdim=True) & (sel.early_stopping is True)
    scored += full.to(torch.float32) * NEG
    scored += (~st.heur).to(torch.float32) * NEG
    scored += (~did_finish) * NEG
    merged_seq = torch.cat((st.fin_seq, topk_seq), dim=1)
    merged_scores = torch.cat((st.fin_scores, scored), dim=1)
    merged_done = torch.cat((st.fin_done, did_finish), dim=1)
    best = torch.topk(merged_scores, k=beams)[1]
    st.fin_seq.copy_(torch.take_along_dim(merged_seq, best[:, :, None], dim=1))
    st.fin_scores.copy_(torch.take_along_dim(merged_scores, best, dim=1))
    st.fin_done.copy_(torch.take_along_dim(merged_done, best, dim=1))

    # g. can anything still improve?  (transformers' cur_len has advanced by one here)
    if sel.early_stopping == "never" and sel.length_penalty > 0.0:
        hypothetical = torch.full_like(st.step, sel.new_tokens).double().pow(sel.length_penalty).float()
    else:
        hypothetical = _length(st, sel, 1)
    best_running = _divide(st.run_scores[:, :1], hypothetical)
    worst_finished = torch.where(st.fin_done, torch.min(st.fin_scores, dim=1, keepdim=True)[0], NEG)
    st.heur.logical_and_(torch.any(best_running > worst_finished, dim=-1, keepdim=True))
    improvement = torch.any(st.heur)
    open_beam = ~(torch.all(st.fin_done) & (sel.early_stopping is True))
    continues = ~torch.all(hits)
    st.stop.logical_or_((~(improvement & open_beam & continues)).reshape(1))
    return new_tokens, new_parents

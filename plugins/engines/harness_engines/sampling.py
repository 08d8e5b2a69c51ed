"""Seeded, batch-invariant sampling on the device: a counter-based generator and the Gumbel-max trick.

An example's sampled token at step ``t`` depends only on its seed, ``t`` and the filtered logits of
its own row: the noise for token ``v`` is a pure function ``u(seed, t, v)`` computed with integer
hashing (xor, shift, multiply by an odd 31-bit constant, mask to 32 bits — no stateful generator, so
nothing depends on which rows share the batch or in which order they are drawn), and the token is

    argmax_v  logits[v] / temperature + g(seed, t, v),    g = -log(-log(u))  (standard Gumbel)

over the tokens that top-k / top-p keep, which is an exact draw from ``softmax(filtered / T)``.
The whole batch samples in a handful of kernels, on whichever device the logits are on (CPU or
GPU run the same ops; the integers are identical everywhere, the float results equal up to the
last bit of ``log``), and with no host synchronisation, so the step can sit inside a CUDA graph.

Every integer intermediate stays below 2**63 (32-bit lanes times 31-bit constants), so the hash
never relies on signed overflow. With ``top_k`` set, noise is computed for the k candidates only
(gathered by token id, so it is the same noise the full vocabulary would get); a tie in value at
the k-th logit keeps the candidates ``torch.topk`` returns, not every tied token.

Filters, in transformers' order (after the repetition penalty, :func:`repetition_penalty`):
temperature, then top-k, then top-p (the nucleus is taken over the top-k distribution renormalised;
the token that crosses ``top_p`` is kept), then min-p (tokens less likely than ``min_p`` times the
most likely token left are dropped; the most likely token always stays), as transformers'
``RepetitionPenaltyLogitsProcessor``, ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper`` and ``MinPLogitsWarper`` filter (tests/test_engine_filters.py).

Every row may carry its own temperature, top-k, top-p, min-p and penalty (:func:`sample_rows`,
:class:`RowFilters`): the configs of a sweep sample in one batch, and a row draws the token it would
draw alone, because a narrower filter is applied inside a wider candidate set by masking (the kept
values, their noise and hence the argmax are the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MASK32 = 0xFFFFFFFF
#: odd multipliers below 2**31 (the "lowbias32" integer hash family: shifts 16, 15, 15)
_M1 = 0x21F0AAAD
_M2 = 0x735A2D97
#: lane separators so that seed, step and token never hash alike
_SEED_HI = 0x9E3779B9
_STEP = 0x632BE5AB
_TOKEN = 0x85157AF5 & 0x7FFFFFFF


def mix32(x: Any) -> Any:
    """A 32-bit integer hash of int64 tensors (or Python ints) holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _M1) & MASK32
    x = x ^ (x >> 15)
    x = (x * _M2) & MASK32
    return x ^ (x >> 15)


def seed_keys(seeds: Sequence[int], device: Any) -> Any:
    """One 32-bit key per row from its 64-bit seed (int64 tensor of shape (rows,))."""
    import torch

    keys = [mix32((int(s) & MASK32) ^ mix32(((int(s) >> 32) & MASK32) ^ _SEED_HI)) for s in seeds]
    return torch.tensor(keys, dtype=torch.int64, device=device)


def step_keys(keys: Any, step: Any) -> Any:
    """Per-row keys for one decoding step; ``step`` an int or a 0-d/1-d int64 tensor on the keys' device."""
    return mix32(keys ^ mix32((step + _STEP) & MASK32))


def token_hash(token_ids: Any) -> Any:
    return mix32((token_ids ^ _TOKEN) & MASK32)


def uniform(row_keys: Any, token_ids: Any) -> Any:
    """u(row key, token) in (0, 1), float32, exact: odd multiples of 2**-24.

    ``row_keys`` (rows,) and ``token_ids`` (rows, n) or (n,), both int64.
    """
    import torch

    h = mix32(row_keys[:, None] ^ token_hash(token_ids))
    return ((h >> 9) * 2 + 1).to(torch.float32) * (1.0 / (1 << 24))


def gumbel(row_keys: Any, token_ids: Any) -> Any:
    import torch

    return -torch.log(-torch.log(uniform(row_keys, token_ids)))


def repetition_penalty(scores: Any, token_ids: Any, penalty: Any) -> Any:
    """transformers' ``RepetitionPenaltyLogitsProcessor``: the scores of the tokens in ``token_ids`` (rows, n)
    divided by ``penalty`` where positive, multiplied where negative. ``penalty`` a float or a (rows, 1)
    tensor (1.0 leaves a row as it is, bit for bit). Repeated ids in a row are harmless."""
    import torch

    score = scores.gather(1, token_ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return scores.scatter(1, token_ids, score)


def unpadded(input_ids: Any, attention_mask: Any) -> Any:
    """``input_ids`` (rows, n) with each left-padding position replaced by the row's first real token, so a
    repetition penalty over them never reaches the padding token (often the EOS): a row's text then does not
    depend on how much its batch padded it. ``attention_mask`` (rows, m <= n) covers the first m ids."""
    import torch

    m = attention_mask.shape[1]
    pad = ~attention_mask.bool()
    first = input_ids.gather(1, pad.sum(-1, keepdim=True).clamp(max=m - 1))
    prompt = torch.where(pad, first, input_ids[:, :m])
    return prompt if m == input_ids.shape[1] else torch.cat([prompt, input_ids[:, m:]], dim=1)


class RepetitionPenalty:
    """A transformers logits processor: :func:`repetition_penalty` over each row's prompt and generated tokens, not
    its left padding (transformers' ``RepetitionPenaltyLogitsProcessor`` also penalises the padding token, so a
    padded row — and with EOS as the padding token, where it stops — depended on its batch).

    ``attention_mask``: the batch's (prompts, prompt length); ``rows_per_prompt``: beams (``generate``
    repeats each prompt's rows next to each other)."""

    def __init__(self, penalty: float, attention_mask: Any, rows_per_prompt: int = 1):
        self.penalty = float(penalty)
        self.mask = attention_mask.repeat_interleave(rows_per_prompt, dim=0) if rows_per_prompt > 1 else attention_mask

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return repetition_penalty(scores, unpadded(input_ids, self.mask.to(input_ids.device)), self.penalty)


@dataclass(frozen=True)
class RowFilters:
    """The shape of one batch's filtering (what a captured step computes); the values are per row.

    ``width``: candidates kept per row before the draw — the largest top-k of the batch, or 0 for
    the whole vocabulary; ``sort``: rank the whole vocabulary (some row has no top-k but needs
    ranks: top-p, or a top-k neighbour); ``top_p`` / ``min_p``: some row uses it.
    """

    width: int = 0
    sort: bool = False
    top_p: bool = False
    min_p: bool = False

    @classmethod
    def of(cls, rows: Sequence[tuple[int, float, float]], vocab: int) -> RowFilters:
        """From the sampled rows' (top_k, top_p, min_p) (greedy rows left out)."""
        ks = [k if 0 < k < vocab else 0 for k, _, _ in rows]
        use_top_p = any(p < 1.0 for _, p, _ in rows)
        use_min_p = any(m > 0.0 for _, _, m in rows)
        if ks and all(ks):
            return cls(max(ks), False, use_top_p, use_min_p)
        return cls(0, any(ks) or use_top_p, use_top_p, use_min_p)


def sample(logits: Any, row_keys: Any, temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> Any:
    """One token per row (int64, shape (rows,)) from ``logits`` (rows, vocab), float32, every row filtered alike.

    ``row_keys``: :func:`step_keys` of this step. Temperature, top-k, top-p and min-p as in transformers.
    """
    import torch

    rows, vocab = logits.shape
    filters = RowFilters.of([(int(top_k or 0), float(top_p), float(min_p))], vocab)
    full = lambda value, dtype=torch.float32: torch.full((rows, 1), value, dtype=dtype, device=logits.device)  # noqa: E731
    return sample_rows(
        logits, row_keys, full(max(float(temperature), 1e-6)), full(int(top_k or 0), torch.long)[:, 0], full(float(top_p)), full(float(min_p)), filters
    )


def sample_rows(logits: Any, row_keys: Any, temperature: Any, top_k: Any, top_p: Any, min_p: Any, filters: RowFilters) -> Any:
    """One token per row from ``logits`` (rows, vocab), each row with its own filters (:func:`filter_rows`).

    Fixed shapes, no host synchronisation: fit for a captured step.
    """
    import torch

    values, ids = filter_rows(logits, temperature, top_k, top_p, min_p, filters)
    if ids is None:
        return (values + gumbel(row_keys, torch.arange(logits.shape[-1], device=logits.device))).argmax(-1)
    pick = (values + gumbel(row_keys, ids)).argmax(-1, keepdim=True)
    return ids.gather(-1, pick).squeeze(-1)


def filter_rows(logits: Any, temperature: Any, top_k: Any, top_p: Any, min_p: Any, filters: RowFilters) -> tuple[Any, Any]:
    """The candidates each row may draw: (scores, token ids), -inf where filtered out; ids None: the whole vocabulary.

    ``temperature`` (rows, 1) float32 (> 0), ``top_k`` (rows,) int64 (0 = off), ``top_p`` (rows, 1)
    (1.0 = off), ``min_p`` (rows, 1) (0 = off); ``filters`` says which computations the batch needs.
    A row filtered more narrowly than ``filters.width`` has its extra candidates masked, so it keeps
    what it would keep alone.
    """
    import torch

    scores = logits.float() / temperature
    if filters.width:
        values, ids = torch.topk(scores, filters.width, dim=-1)  # sorted, largest first
    elif filters.sort:
        values, ids = torch.sort(scores, dim=-1, descending=True)
    else:
        values, ids = scores, None
    if ids is not None:
        rank = torch.arange(values.shape[-1], device=logits.device)
        keep = torch.where(top_k > 0, top_k, values.shape[-1])
        values = values.masked_fill(rank >= keep[:, None], float("-inf"))
    if filters.top_p:
        probs = values.softmax(-1)
        # keep the token that crosses top_p; a row with top_p = 1 keeps everything (its threshold is never passed)
        threshold = torch.where(top_p < 1.0, top_p, float("inf"))
        values = values.masked_fill(probs.cumsum(-1) - probs > threshold, float("-inf"))
    if filters.min_p:
        probs = values.softmax(-1)
        values = values.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), float("-inf"))
    return values, ids


class CounterSampler:
    """A transformers logits processor: every row draws its token with :func:`sample`, and that token is forced.

    The step is read off ``input_ids``: its length minus the prompt length (the batch's padded
    prompt length, fixed for the call), so a row's draw at step ``t`` is the same as in the
    harness's own decoding loop (``fast_decode``), which calls :func:`sample_rows` directly.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float, seeds: Sequence[int], prompt_len: int, device: Any, min_p: float = 0.0):
        self.temperature, self.top_k, self.top_p, self.min_p = temperature, top_k, top_p, min_p
        self.keys = seed_keys(seeds, device)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.prompt_len
        chosen = sample(scores, step_keys(self.keys.to(scores.device), step), self.temperature, self.top_k, self.top_p, self.min_p)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(-1, chosen[:, None], 0.0)

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

Filters, in transformers' order: temperature, then top-k, then top-p (the nucleus is taken over
the top-k distribution renormalised; the token that crosses ``top_p`` is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def sample(logits: Any, row_keys: Any, temperature: float, top_k: int = 0, top_p: float = 1.0) -> Any:
    """One token per row (int64, shape (rows,)) from ``logits`` (rows, vocab), float32.

    ``row_keys``: :func:`step_keys` of this step. Temperature, top-k and top-p as in transformers.
    """
    import torch

    vocab = logits.shape[-1]
    scores = logits.float() / max(float(temperature), 1e-6)
    if top_k and top_k < vocab:
        values, ids = torch.topk(scores, int(top_k), dim=-1)  # sorted, largest first
    elif top_p < 1.0:
        values, ids = torch.sort(scores, dim=-1, descending=True)
    else:
        values, ids = scores, None
    if top_p < 1.0:
        probs = values.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the token that crosses top_p
        values = values.masked_fill(drop, float("-inf"))
    if ids is None:
        ids_for_noise = torch.arange(vocab, device=logits.device)
        return (values + gumbel(row_keys, ids_for_noise)).argmax(-1)
    pick = (values + gumbel(row_keys, ids)).argmax(-1, keepdim=True)
    return ids.gather(-1, pick).squeeze(-1)


class CounterSampler:
    """A transformers logits processor: every row draws its token with :func:`sample`, and that token is forced.

    The step is read off ``input_ids``: its length minus the prompt length (the batch's padded
    prompt length, fixed for the call), so a row's draw at step ``t`` is the same as in the
    harness's own decoding loop (``fast_decode``), which calls :func:`sample` directly.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float, seeds: Sequence[int], prompt_len: int, device: Any):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.keys = seed_keys(seeds, device)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.prompt_len
        chosen = sample(scores, step_keys(self.keys.to(scores.device), step), self.temperature, self.top_k, self.top_p)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(-1, chosen[:, None], 0.0)

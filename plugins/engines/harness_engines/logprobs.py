"""Log-probabilities from the transformers engine (``GenRequest.logprobs`` > 0): a path of its own.

The transformers engine routes requests that ask for log-probabilities here (greedy and sampled decoding;
beam search has no single distribution per position and returns ``logprobs`` None through the usual path).
Each batch goes through the model's ``generate`` with ``output_logits=True``: the logits before any
processor (temperature 1, no top-k/top-p, no repetition penalty), as OpenAI's API and vLLM report them, so
the numbers mean the same whichever engine made them. Sampling draws with the engine's own seeded sampler
(:class:`~harness_engines.sampling.CounterSampler`), so the text is the one the usual path gives.

``max_new_tokens = 1`` is the prefill-only path a judge uses to read a verdict: one forward pass over the
prompt, the first position's top tokens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from harness.api import GenRequest, GenResult, Progress, TokenLogprob

#: prompts per batch on a CPU when the engine's batch_size is unset
CPU_BATCH = 16
#: the most prompts an automatic batch on a GPU holds
MAX_GPU_BATCH = 256


def takes(request: GenRequest) -> bool:
    """Whether this path serves ``request``: it asks for log-probabilities and decodes greedily or by sampling."""
    return request.logprobs > 0 and request.decoding.strategy in ("greedy", "sample")


def generate(session: Any, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
    """Complete ``requests`` (all with ``logprobs`` > 0) on the engine session's model, yielding batches of results."""
    import torch

    tok = session.tok
    ids = dict(zip((r.key for r in requests), tok([r.prompt for r in requests], add_special_tokens=True)["input_ids"]))
    # one decoding per batch, prompts of similar length together
    ordered = sorted(requests, key=lambda r: (repr(r.decoding), len(ids[r.key]), r.prompt, r.key))
    advance = progress.task("generating", len(ordered))
    start = 0
    while start < len(ordered):
        decoding = ordered[start].decoding
        size = _batch_size(session, decoding, len(ids[ordered[-1].key]))
        batch = [r for r in ordered[start : start + size] if r.decoding == decoding]
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                results = _batch(session, batch, [ids[r.key] for r in batch])
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            session.batch_size = max(1, len(batch) // 2)
            continue
        start += len(batch)
        seconds = round((time.perf_counter() - t0) / len(batch), 4)
        results = [GenResult(r.key, r.text, r.prompt_tokens, r.new_tokens, seconds, r.finish_reason, r.logprobs) for r in results]
        advance(len(batch))
        yield results


def _batch_size(session: Any, decoding: Any, longest: int) -> int:
    if session.batch_size:
        return int(session.batch_size)
    if session.device.type != "cuda":
        return CPU_BATCH
    import torch

    from .transformers_engine import row_bytes

    free, _ = torch.cuda.mem_get_info(session.device)
    free += torch.cuda.memory_reserved(session.device) - torch.cuda.memory_allocated(session.device)
    # every position's full logits are kept (float32) beside the usual row
    per_row = row_bytes(session.model.config, longest, decoding.max_new_tokens, next(session.model.parameters()).element_size())
    per_row += decoding.max_new_tokens * int(getattr(session.model.config, "vocab_size", 0) or 0) * 4
    return max(1, min(MAX_GPU_BATCH, int(max(free, 0) * 0.7) // per_row))


def _batch(session: Any, batch: Sequence[GenRequest], ids: Sequence[list[int]]) -> list[GenResult]:
    import torch

    from .sampling import CounterSampler
    from .transformers_engine import generate_kwargs, penalty_kwargs

    tok = session.tok
    decoding = batch[0].decoding
    enc = tok.pad({"input_ids": list(ids)}, padding=True, return_tensors="pt").to(session.device)
    kwargs = generate_kwargs(decoding, pad_token_id=tok.pad_token_id, eos_token_id=session.eos_ids)
    kwargs.update(output_logits=True, return_dict_in_generate=True)
    kwargs.update(penalty_kwargs(decoding, enc["attention_mask"]))
    prompt_len = enc["input_ids"].shape[1]
    if decoding.strategy == "sample":
        kwargs["logits_processor"] = kwargs.get("logits_processor", []) + [
            CounterSampler(decoding.temperature, decoding.top_k, decoding.top_p, [r.seed for r in batch], prompt_len, session.device, min_p=decoding.min_p)
        ]
    out = session._generate(**enc, **kwargs)
    new = out.sequences[:, prompt_len:].tolist()
    top_n = max(r.logprobs for r in batch)
    # per step: (batch, vocab) raw logits -> log-probabilities -> the top_n and the chosen token's
    steps = []
    for j, logits in enumerate(out.logits):
        logp = torch.log_softmax(logits.float(), dim=-1)
        values, indices = logp.topk(min(top_n, logp.shape[-1]), dim=-1)
        chosen = torch.tensor([row[j] if j < len(row) else tok.pad_token_id for row in new], device=logp.device)
        steps.append((values.tolist(), indices.tolist(), logp.gather(1, chosen[:, None])[:, 0].tolist()))
    prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
    eos = set(session.eos_ids)
    results = []
    for i, (req, row) in enumerate(zip(batch, new)):
        finish = "length"
        for j, t in enumerate(row):
            if t in eos:
                row, finish = row[: j + 1], "eos"
                break
        row = row[: len(steps)]
        positions = []
        for j, t in enumerate(row):
            values, indices, chosen = steps[j]
            top = tuple((tok.decode([k]), float(v)) for k, v in zip(indices[i][: req.logprobs], values[i][: req.logprobs]))
            positions.append(TokenLogprob(tok.decode([t]), float(chosen[i]), top))
        text = tok.decode(row, skip_special_tokens=True).strip()
        results.append(GenResult(req.key, text, int(prompt_tokens[i]), len(row), 0.0, finish, tuple(positions)))
    return results

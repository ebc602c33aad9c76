"""Picking tokens from logits: temperature, top-k / top-p filters, argmax."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """(R, V) logits -> the same with everything outside the top-k / nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth_best = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p  # the most likely token always stays (mass_before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    greedy: bool = False,
    top_k: int = 0,
    top_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, V) logits -> sampled ids (R,) and their probability under the sampling distribution (R,).

    Sampling inverts the cumulative distribution at one uniform number per row drawn from
    ``generator``, so how many random numbers are used does not depend on the logits.
    """
    logits = logits.float()
    if greedy:
        probs = logits.softmax(dim=-1)
        confidence, ids = probs.max(dim=-1)
        return ids, confidence
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1)
    uniform = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device)
    # right=True: the first id whose cumulative mass exceeds u, so zero-probability ids are never picked
    ids = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)[:, 0].clamp(max=probs.shape[1] - 1)
    return ids, probs.gather(-1, ids[:, None])[:, 0]

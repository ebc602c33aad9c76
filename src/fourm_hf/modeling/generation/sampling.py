"""Picking tokens from logits: temperature, top-k / top-p filters, argmax.

Everything here works in float32 whatever the model's dtype (bf16/fp16 logits are cast first), on
the logits' device; random numbers come from the ``generator`` passed in (a CPU or a device one).
"""

from __future__ import annotations

import torch


def top_k_count(top_k: int | float, vocab_size: int) -> int:
    """An int is a count; a float in (0, 1) a fraction of the vocabulary, ``int(top_k * V)`` as the
    reference reads it (at least 1); 0 = off."""
    if isinstance(top_k, float) and 0.0 < top_k < 1.0:
        return max(int(top_k * vocab_size), 1)
    return int(top_k)


def filter_logits(logits: torch.Tensor, top_k: int | float = 0, top_p: float = 0.0) -> torch.Tensor:
    """(R, V) logits -> the same with everything outside the top-k / nucleus set to -inf."""
    count = top_k_count(top_k, logits.shape[-1])
    if count and count < logits.shape[-1]:
        kth_best = logits.topk(count, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p  # the most likely token always stays (mass_before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def uniform_draws(rows: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(rows, 1) uniform numbers from ``generator``, on ``device`` (drawn where the generator lives)."""
    source = generator.device if generator is not None else device
    draws = torch.rand(rows, 1, generator=generator, device=source)
    return draws.to(device)


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    greedy: bool = False,
    top_k: int | float = 0,
    top_p: float = 0.0,
    filter_order: str = "after_temperature",
    greedy_confidence: str = "probability",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, V) logits -> sampled ids (R,) and their probability under the sampling distribution (R,).

    Sampling inverts the cumulative distribution at one uniform number per row drawn from
    ``generator``, so how many random numbers are used does not depend on the logits.
    ``filter_order="before_temperature"`` applies top-k/top-p to the raw logits (the reference).
    Greedy: the argmax, with confidence its softmax probability, or 1 for every row
    (``greedy_confidence="one"``, the reference's "sampled probability" at temperature 0).
    """
    logits = logits.float()
    if greedy:
        if greedy_confidence == "one":
            return logits.argmax(dim=-1), torch.ones(logits.shape[0], dtype=torch.float32, device=logits.device)
        confidence, ids = logits.softmax(dim=-1).max(dim=-1)
        return ids, confidence
    if filter_order == "before_temperature":
        probs = (filter_logits(logits, top_k, top_p) / temperature).softmax(dim=-1)
    else:
        probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1)
    uniform = uniform_draws(probs.shape[0], generator, probs.device)
    # right=True: the first id whose cumulative mass exceeds u, so zero-probability ids are never picked
    ids = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)[:, 0].clamp(max=probs.shape[1] - 1)
    return ids, probs.gather(-1, ids[:, None])[:, 0]


class Randomness:
    """The run's one generator; with ``seed``, re-seeded with ``seed + step`` at the start of every
    decoding step (an image step, or a whole autoregressive target), as the reference's
    ``generate(seed=...)`` re-seeds torch before each step of its schedule."""

    def __init__(self, generator: torch.Generator, seed: int | None = None):
        self.generator, self.seed, self.step = generator, seed, 0

    def begin_step(self) -> torch.Generator:
        if self.seed is not None:
            self.generator.manual_seed(self.seed + self.step)
        self.step += 1
        return self.generator

    def rand(self, *shape: int, device: torch.device) -> torch.Tensor:
        """Uniform numbers drawn where the generator lives, returned on ``device``."""
        return torch.rand(*shape, generator=self.generator, device=self.generator.device).to(device)

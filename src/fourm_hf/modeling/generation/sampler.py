"""The entry point: :func:`generate` decodes a schedule's targets one after the other (chaining)."""

from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm

from .image_decoding import decode_image_target
from .schedules import GenerationSchedule
from .sequence_decoding import decode_sequence_target
from .state import prepare_state


@torch.no_grad()
def generate(
    model,
    tokens: dict[str, torch.Tensor],
    schedule: GenerationSchedule,
    generator: torch.Generator | None = None,
    pixel_values: torch.Tensor | None = None,
    known: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    naive: bool = False,
    batch_guidance: bool = True,
    return_known: bool = False,
):
    """Generate the schedule's targets, in order, for a batch of token dicts.

    Args:
        model: a :class:`FourMModel`.
        tokens: ``{modality: (B, N) LongTensor}`` for the conditioning inputs, and optionally for
            targets to in-/out-paint (their ``known`` positions are kept, the rest generated). Image
            modalities have N = grid**2; sequences are left-aligned, padded with ``[PAD]`` (0).
        schedule: from :func:`build_generation_schedule`.
        generator: the only source of randomness (when None, one seeded from ``os.urandom``).
        pixel_values: (B, 3, H, W) ImageNet-normalised pixels when a pixels modality is conditioning.
        known: ``{modality: (B, N) bool}``; default all positions of image modalities and the
            non-``[PAD]`` prefix of sequences.
        batch_size: needed only when nothing else gives it (unconditional generation).
        progress: show a tqdm bar over decoding steps.
        naive: the slow reference path (no KV cache, one forward per guidance pass).
        batch_guidance: run the guidance passes as one forward of (1 + K) * B rows (fast on a GPU);
            False runs them one after the other, which avoids padding the shorter unconditional
            inputs and is faster on a single CPU thread (see benchmarks/RESULTS.md). Same tokens.
        return_known: also return the known masks (e.g. when ``tokens_per_target`` left positions open).
    Returns:
        ``{modality: (B, N) LongTensor}`` with every input and every target (sequences end with
        ``[EOS]`` unless they hit the length limit; shorter rows are padded with ``[PAD]``), and the
        ``{modality: (B, N) bool}`` known masks when ``return_known``.
    """
    state = prepare_state(model.config, tokens, schedule, known, pixel_values, batch_size)
    if generator is None:  # fresh entropy, never the global RNG
        generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    total_steps = sum(plan.num_steps for plan in schedule.targets)
    with tqdm(total=total_steps, disable=not progress, desc="generating") as progress_bar:
        for plan in schedule.targets:
            progress_bar.set_postfix_str(plan.modality)
            decode = decode_sequence_target if plan.scheme == "autoregressive" else decode_image_target
            decode(model, state, plan, generator, naive, progress_bar, batch_guidance)
    if return_known:
        return dict(state.tokens), dict(state.known)
    return dict(state.tokens)

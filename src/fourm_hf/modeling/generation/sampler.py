"""The entry point: :func:`generate` decodes a schedule's targets one after the other (chaining)."""

from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm

from .image_decoding import decode_image_target
from .options import check_generate_options
from .sampling import Randomness
from .schedules import GenerationSchedule
from .sequence_decoding import decode_sequence_target
from .special_ids import NUM_SENTINELS
from .state import prepare_state


def model_device(model) -> torch.device:
    """Where the model's weights are (the first parameter's device; CPU for a parameterless model)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


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
    batch_guidance: bool | None = None,
    return_known: bool = False,
    seed: int | None = None,
    num_sentinels: int = NUM_SENTINELS,
    variant_tokens: dict[str, torch.Tensor] | None = None,
    return_token_probs: bool = False,
    continuous_inputs: dict[str, torch.Tensor] | None = None,
):
    """Generate the schedule's targets, in order, for a batch of token dicts.

    Args:
        model: a :class:`FourMModel`.
        tokens: ``{modality: (B, N) LongTensor}`` for the conditioning inputs, and optionally for
            targets to in-/out-paint (their ``known`` positions are kept, the rest generated). Image
            modalities have N = grid**2; sequences are left-aligned, padded with ``[PAD]`` (0).
        schedule: from :func:`build_generation_schedule`.
        generator: the only source of randomness (when None, one on the model's device seeded from
            ``os.urandom``); a CPU or a device generator (its numbers are moved to the model's device).
        pixel_values: (B, 3, H, W) ImageNet-normalised pixels when a pixels modality is conditioning.
        known: ``{modality: (B, N) bool}``; default all positions of image modalities and the
            non-``[PAD]`` prefix of sequences.
        batch_size: needed only when nothing else gives it (unconditional generation).
        progress: show a tqdm bar over decoding steps.
        naive: the slow reference path (no KV cache, one forward per guidance pass).
        batch_guidance: True runs the guidance passes' decoder (and a sequence target's encoder) as one
            forward of (1 + K) * B rows, which pays on a GPU; False runs them one after the other, which
            avoids padding the shorter unconditional inputs and is what pays on a CPU, where a forward's cost
            grows with its rows (see benchmarks/RESULTS.md). None (the default): True on an accelerator,
            False on the CPU. Same tokens either way.
        return_known: also return the known masks (e.g. when ``tokens_per_target`` left positions open).
        seed: re-seed ``generator`` with ``seed + step`` before every decoding step (an image step
            or a whole sequence target), as the reference's ``generate(seed=...)`` does.
        num_sentinels: ``[S_i]`` ids of the text vocabulary (from id 4 on; 200 in the 4M tokenizer),
            for the ``ml4m`` sequence stop rule.
        variant_tokens: ``{"<modality>#<label>": (B, N) ids}``, the tokens of the variants the
            schedule's guidance names: a guidance pass shows them instead of the modality's own, so
            ``guidance=[(("caption",), 3.0), (("caption#negative",), -1.0)]`` with
            ``variant_tokens={"caption#negative": negative_caption_ids}`` is a negative prompt.
        return_token_probs: also return ``{sequence target: (B, N) float32}``: the probability the model
            gave each generated token (softmax of the guided logits at temperature 1, before top-k/top-p;
            NaN at given and padding positions). Image targets are not recorded. Costs one softmax per step.
        continuous_inputs: ``{"t5_caption": (B, N, C) float}``: sequence-embedding conditions (4M-21's T5 caption
            embeddings, ``processing/t5_captions.py``); ``known["t5_caption"]`` (B, N) marks each sample's real rows.
    Returns:
        ``{modality: (B, N) LongTensor}`` on the model's device with every input and every target
        (sequences end with ``[EOS]`` unless they hit the length limit or use the ``ml4m`` stop rule;
        shorter rows are padded with ``[PAD]``), and the ``{modality: (B, N) bool}`` known masks when
        ``return_known``, then the token probabilities when ``return_token_probs`` (a tuple when either is asked).
    """
    check_generate_options(generator=generator, seed=seed, naive=naive, batch_guidance=batch_guidance, progress=progress,
                           return_known=return_known, num_sentinels=num_sentinels, batch_size=batch_size)
    device = model_device(model)
    if batch_guidance is None:
        batch_guidance = device.type != "cpu"
    state = prepare_state(model.config, tokens, schedule, known, pixel_values, batch_size, device, variant_tokens,
                          continuous_inputs)
    if generator is None:  # fresh entropy, never the global RNG
        generator = torch.Generator(device=device).manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    randomness = Randomness(generator, None if seed is None else int(seed))
    state.num_sentinels = int(num_sentinels)
    state.token_probs = {} if return_token_probs else None
    total_steps = sum(plan.num_steps for plan in schedule.targets)
    with tqdm(total=total_steps, disable=not progress, desc="generating") as progress_bar:
        for plan in schedule.targets:
            progress_bar.set_postfix_str(plan.modality)
            decode = decode_sequence_target if plan.scheme == "autoregressive" else decode_image_target
            decode(model, state, plan, randomness, naive, progress_bar, batch_guidance)
    results = (dict(state.tokens),) + ((dict(state.known),) if return_known else ()) + (
        (dict(state.token_probs),) if return_token_probs else ())
    return results if len(results) > 1 else results[0]
